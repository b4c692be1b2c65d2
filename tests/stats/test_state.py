"""Every statistic declares its state once; save, load, copy, equality and the one rank merge come
from that declaration. Each kind is checked the same way: two shards merged equal one pass over
both (against a reference where the statistic has one), a file round trip is exact, a copy is
independent, and the generic rank merge over 2 real gloo processes equals the in-process merge."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from convergent import CorruptFileError
from convergent._io import load_arrays, save_arrays
from convergent.stats import (
    ClassifierScores,
    JointHistogram,
    KernelMoments,
    MinibatchCKA,
    Moments,
    SampleBuffer,
    ShuffledPairs,
    StateField,
    Statistic,
    TopK,
    all_merge,
    load_statistic,
    merge_all,
    quantile_edges,
)

RANGES = {"a": (0, 3), "b": (3, 5)}


def _data(seed: int, n: int = 40, d: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + seed


def _shards() -> dict[str, tuple[Statistic, Statistic, Statistic]]:
    """(shard A, shard B, one pass over A then B) of every statistic kind."""
    x, y = _data(0), _data(1, n=37)
    both = np.concatenate([x, y])
    idx_x, idx_y = np.arange(len(x)), np.arange(len(x), len(both))
    edges = quantile_edges(both[:, :2], 4), quantile_edges(both[:, 2:], 4)
    logits = torch.from_numpy(both).float()
    labels = torch.from_numpy(np.arange(len(both)) % 5)

    def scores(rows: slice) -> ClassifierScores:
        return ClassifierScores().update(logits[rows], labels[rows])

    return {
        "Moments": (
            Moments(5, exact=True).update(x),
            Moments(5, exact=True).update(y),
            Moments(5, exact=True).update(both),
        ),
        "KernelMoments": (
            KernelMoments(5, RANGES, exact=True).update(x),
            KernelMoments(5, RANGES, exact=True).update(y),
            KernelMoments(5, RANGES, exact=True).update(both),
        ),
        "TopK": (
            TopK(5, 3).update(x, idx_x, np.zeros(len(x), np.int64)),
            TopK(5, 3).update(y, idx_y, np.zeros(len(y), np.int64)),
            TopK(5, 3).update(both, np.arange(len(both)), np.zeros(len(both), np.int64)),
        ),
        "JointHistogram": (
            JointHistogram(*edges).update(x[:, :2], x[:, 2:]),
            JointHistogram(*edges).update(y[:, :2], y[:, 2:]),
            JointHistogram(*edges).update(both[:, :2], both[:, 2:]),
        ),
        "SampleBuffer": (
            SampleBuffer(10, 5, unit_ranges=RANGES).update(x, idx_x),
            SampleBuffer(10, 5, unit_ranges=RANGES).update(y, idx_y),
            SampleBuffer(10, 5, unit_ranges=RANGES).update(both, np.arange(len(both))),
        ),
        "MinibatchCKA": (
            MinibatchCKA().update({"a": x[:, :3], "b": x[:, 3:]}),
            MinibatchCKA().update({"a": y[:, :3], "b": y[:, 3:]}),
            MinibatchCKA()
            .update({"a": x[:, :3], "b": x[:, 3:]})
            .update({"a": y[:, :3], "b": y[:, 3:]}),
        ),
        "ShuffledPairs": (
            ShuffledPairs(RANGES, exact=True).update(x),
            ShuffledPairs(RANGES, exact=True).update(y),
            ShuffledPairs(RANGES, exact=True).update(x).update(y),
        ),
        "ClassifierScores": (
            scores(slice(0, len(x))),
            scores(slice(len(x), None)),
            scores(slice(None)),
        ),
    }


def _assert_state_close(got: Statistic, want: Statistic) -> None:
    assert type(got) is type(want) and got.config() == want.config()
    g, w = got.state(), want.state()
    assert list(g) == [f.name for f in type(want).state_fields] == list(w)
    for name in w:
        finite = np.isfinite(w[name])
        np.testing.assert_array_equal(np.isfinite(g[name]), finite, err_msg=name)
        np.testing.assert_allclose(
            g[name][finite], w[name][finite], rtol=1e-10, atol=1e-9, err_msg=name
        )


@pytest.mark.parametrize("kind", list(_shards()))
def test_merge_of_shards_equals_one_pass(kind):
    a, b, whole = _shards()[kind]
    merged = a.copy().merge(b)
    _assert_state_close(merged, whole)
    _assert_state_close(merge_all([a, b]), whole)
    assert a == _shards()[kind][0]  # merge_all leaves its shards alone


@pytest.mark.parametrize("kind", list(_shards()))
def test_save_load_copy_and_equality_come_from_the_declaration(kind, tmp_path):
    a, b, _ = _shards()[kind]
    a.metadata = {"layer": "fc6", "note": kind}
    path = tmp_path / f"{kind}.safetensors"
    a.save(path)
    back = type(a).load(path)
    assert back == a and back.metadata == a.metadata
    assert type(load_statistic(path)) is type(a) and load_statistic(path) == a
    twin = a.copy()
    assert twin == a and twin is not a
    twin.merge(b)
    assert twin != a  # the copy is independent
    arrays, meta = load_arrays(path)
    assert meta["kind"] == type(a).kind and meta["config"] == a.config()
    assert set(arrays) == {f.name for f in type(a).state_fields}


@pytest.mark.parametrize("kind", list(_shards()))
def test_damaged_files_are_refused_naming_the_array(kind, tmp_path):
    a, _, _ = _shards()[kind]
    path = tmp_path / "s.safetensors"
    a.save(path)
    arrays, meta = load_arrays(path)
    first = next(iter(arrays))
    arrays[first] = np.zeros((7, 7, 7))
    save_arrays(tmp_path / "shape.safetensors", arrays, meta)
    with pytest.raises(CorruptFileError, match=rf"inconsistent .*'{first}'"):
        type(a).load(tmp_path / "shape.safetensors")
    arrays.pop(first)
    save_arrays(tmp_path / "lack.safetensors", arrays, meta)
    with pytest.raises(CorruptFileError, match=f"lacks '{first}'"):
        type(a).load(tmp_path / "lack.safetensors")
    save_arrays(tmp_path / "kind.safetensors", {"x": np.zeros(1)}, {"kind": "nope"})
    with pytest.raises(CorruptFileError, match=f"not a convergent {type(a).__name__} file"):
        type(a).load(tmp_path / "kind.safetensors")
    with pytest.raises(CorruptFileError, match="not a convergent Statistic file"):
        load_statistic(tmp_path / "kind.safetensors")


def test_declaration_errors_and_merge_rules():
    with pytest.raises(ValueError, match="merge must be one of"):
        StateField("x", "float64", "mean")
    with pytest.raises(ValueError, match="dtype must be float64 or int64"):
        StateField("x", "float32", "sum")
    with pytest.raises(TypeError, match="ClassifierScores.merge expects a ClassifierScores"):
        ClassifierScores().merge(Moments(2))
    edges = quantile_edges(_data(0)[:, :2], 4)
    other = quantile_edges(_data(1)[:, :2], 4)
    with pytest.raises(ValueError, match="different bin edges"):
        JointHistogram(edges, edges).merge(JointHistogram(other, other))
    with pytest.raises(ValueError, match=r"logits \(B, classes\) and labels \(B,\)"):
        ClassifierScores().update(torch.zeros(3, 2), torch.zeros(2))
    s = ClassifierScores()
    assert s.accuracy is None and s.loss is None
    s.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    assert s.accuracy == 0.5 and s.count == 2
    want = torch.nn.functional.cross_entropy(
        torch.tensor([[2.0, 0.0], [0.0, 1.0]]).double(), torch.tensor([0, 0])
    )
    assert s.loss == pytest.approx(float(want))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_merge(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        for kind, (a, b, _) in _shards().items():
            merged = all_merge(a if rank == 0 else b)
            if rank == 0:
                merged.save(os.path.join(out, f"{kind}.safetensors"))
        with_other_config = TopK(5, 3) if rank == 0 else TopK(5, 4)
        try:
            all_merge(with_other_config)
        except Exception as exc:  # noqa: BLE001 - the message is what is checked
            if rank == 0:
                with open(os.path.join(out, "error.txt"), "w") as fh:
                    fh.write(str(exc))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_the_one_rank_merge_serves_every_statistic(tmp_path):
    mp.spawn(_rank_merge, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    for kind, (a, b, _) in _shards().items():
        got = load_statistic(tmp_path / f"{kind}.safetensors")
        _assert_state_close(got, a.copy().merge(b))
    assert "Ranks hold different TopK setups" in (tmp_path / "error.txt").read_text()


def test_all_merge_needs_a_process_group():
    from convergent import ConvergentError

    with pytest.raises(ConvergentError, match="initialised torch.distributed process group"):
        all_merge(Moments(2).update(np.ones((3, 2))))
