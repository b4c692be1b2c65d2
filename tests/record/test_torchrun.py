"""Scale-out: `convergent collect` under torchrun with 2 gloo processes equals a single-process run."""

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
        "--out",
        str(tmp_path / "dist"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    dist = Statistics.load(tmp_path / "dist")
    assert dist.settings["world_size"] == 2 and single.settings["world_size"] == 1
    assert dist.num_inputs == single.num_inputs == 450
    # kernel sums and pooled moments are refused under torchrun: left off with a note, not failed
    assert single.pooled is not None and dist.pooled is None
    assert any("kernel_sums left off" in n for n in dist.settings["notes"])
    assert any("pooled left off" in n for n in dist.settings["notes"])
    for layer in ["conv1", "conv4", "fc7"]:
        a, b = single[layer], dist[layer]
        assert a.samples == b.samples
        np.testing.assert_allclose(b.moments.mean, a.moments.mean, rtol=1e-12, atol=1e-12)
        scale = np.abs(a.moments.comoment).max()
        np.testing.assert_allclose(
            b.moments.comoment, a.moments.comoment, rtol=1e-11, atol=1e-12 * scale
        )
        # the top-k inputs of every unit are the same inputs at the same positions
        np.testing.assert_array_equal(b.topk.index, a.topk.index)
        np.testing.assert_array_equal(b.topk.position, a.topk.position)
