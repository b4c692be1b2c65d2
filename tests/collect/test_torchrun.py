"""Scale-out: `convergent collect` under torchrun with 2 gloo processes equals a single-process run,
for every statistic collect keeps."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from convergent.record import Statistics, collect_run
from tests.helpers.tiny import tiny_zoo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_collect_equals_single_process(tmp_path):
    zoo = tmp_path / "zoo"
    tiny_zoo(zoo)
    single = collect_run(
        tmp_path / "single",
        zoo=zoo,
        layers=["conv1", "conv4", "fc7"],
        batch_size=50,
        exact=True,
        mi="all",
        mi_inputs=300,
        fit_split="train",
        fit_inputs=60,
        progress=False,
    )
    env = {
        **os.environ,
        "CONVERGENT_NO_PROGRESS": "1",
        "OMP_NUM_THREADS": "1",
        "MASTER_ADDR": "127.0.0.1",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "--master_addr=127.0.0.1",
        "-m",
        "convergent",
        "collect",
        str(zoo),
        "--layers",
        "conv1,conv4,fc7",
        "--batch-size",
        "50",
        "--threads",
        "1",
        "--exact",
        "--mi",
        "all",
        "--mi-inputs",
        "300",
        "--fit-inputs",
        "60",
        "--out",
        str(tmp_path / "dist"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    dist = Statistics.load(tmp_path / "dist")
    assert dist.settings["world_size"] == 2 and single.settings["world_size"] == 1
    assert dist.num_inputs == single.num_inputs == 450

    def close(b, a, what):
        scale = max(float(np.abs(a).max()), 1e-300)
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12 * scale, err_msg=what)

    # every statistic a single process keeps is kept, and equal: per layer the joint moments with
    # their kernel sums, the top-k and the patches behind it, the MI histograms of every pair;
    # the pooled all-layer moments; each net's score; the fit split's moments
    for layer in ["conv1", "conv4", "fc7"]:
        a, b = single[layer], dist[layer]
        assert a.samples == b.samples
        assert type(a.moments) is type(b.moments) and type(a.moments).__name__ == "KernelMoments"
        for name, value in a.moments.state().items():
            close(b.moments.state()[name], value, f"{layer} {name}")
        # the top-k inputs of every unit are the same inputs at the same positions
        np.testing.assert_array_equal(b.topk.index, a.topk.index)
        np.testing.assert_array_equal(b.topk.position, a.topk.position)
        np.testing.assert_array_equal(b.patches["box"], a.patches["box"])
        np.testing.assert_array_equal(b.patches["image"], a.patches["image"])
        assert set(a.mi) == set(b.mi) == {"seed0~seed1"}
        for key, hist in a.mi.items():
            np.testing.assert_array_equal(b.mi[key].counts, hist.counts)
            assert b.mi[key].count == hist.count == 300 * a.samples // 450
    for name, value in single.pooled.state().items():
        close(dist.pooled.state()[name], value, f"pooled {name}")
    assert set(single.scores) == set(dist.scores) == {"seed0", "seed1"}
    for net, score in single.scores.items():
        assert dist.scores[net].count == score.count == 450
        assert dist.scores[net].accuracy == score.accuracy
        assert dist.scores[net].loss == pytest.approx(score.loss, rel=1e-12)
    fit_a, fit_b = (
        Statistics.load(tmp_path / "single" / "fit"),
        Statistics.load(tmp_path / "dist" / "fit"),
    )
    assert fit_a.info["split"] == fit_b.info["split"] == "train" and fit_b.num_inputs == 60
    for layer in ["conv1", "conv4", "fc7"]:
        close(fit_b[layer].moments.comoment, fit_a[layer].moments.comoment, f"fit {layer}")
