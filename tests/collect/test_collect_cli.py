"""`convergent collect` from a zoo or from user checkpoints; resume and refusal to overwrite."""

from __future__ import annotations

import pytest

from convergent import ConvergentError
from convergent.cli import main
from convergent.record import Statistics, collect_run
from tests.helpers.tiny import tiny_zoo


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    tiny_zoo(out)
    return out


def test_cli_collect_from_zoo_writes_a_statistics_directory(zoo, tmp_path, capsys):
    out = tmp_path / "stats"
    assert (
        main(
            ["collect", str(zoo), "--layers", "conv2,fc6", "--max-inputs", "40", "--out", str(out)]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "conv2" in text and "fc6" in text and "samples" in text
    stats = Statistics.load(out)
    assert list(stats.layers) == ["conv2", "fc6"]
    assert stats.info["split"] == "test" and stats.info["dataset"]["name"] == "digits"
    assert stats.info["num_inputs"] == 40
    assert stats["conv2"].samples == 40 * 16  # 4x4 map after pool1
    assert set(stats.info["source"]["checkpoints"]) == {"seed0", "seed1"}
    # resume: the same command reuses the directory
    before = (out / "conv2.moments.safetensors").stat().st_mtime_ns
    assert (
        main(
            ["collect", str(zoo), "--layers", "conv2,fc6", "--max-inputs", "40", "--out", str(out)]
        )
        == 0
    )
    assert (out / "conv2.moments.safetensors").stat().st_mtime_ns == before
    # other settings into the same directory are refused, nothing overwritten
    assert (
        main(
            [
                "collect",
                str(zoo),
                "--layers",
                "conv2",
                "--spatial",
                "mean",
                "--max-inputs",
                "40",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "already holds statistics" in capsys.readouterr().err
    assert (out / "conv2.moments.safetensors").stat().st_mtime_ns == before


def test_collect_from_user_checkpoints(zoo, tmp_path):
    stats = collect_run(
        tmp_path / "s",
        arch="convnet",
        model_kwargs={"width": 0.25},
        checkpoints=[zoo / "seed0.safetensors", zoo / "seed1.safetensors"],
        dataset="digits",
        layers=["conv5"],
        spatial="mean",
        max_inputs=30,
        progress=False,
    )
    assert stats.nets == ["seed0", "seed1"] and stats["conv5"].samples == 30
    same = collect_run(
        tmp_path / "z", zoo=zoo, layers=["conv5"], spatial="mean", max_inputs=30, progress=False
    )
    assert (same["conv5"].moments.mean == stats["conv5"].moments.mean).all()


def test_collect_run_argument_errors(zoo, tmp_path):
    with pytest.raises(ValueError, match="'split' parameter must be one of"):
        collect_run(tmp_path / "s", zoo=zoo, split="val")
    with pytest.raises(ValueError, match="either a zoo directory or an architecture"):
        collect_run(tmp_path / "s")
    with pytest.raises(ValueError, match="needs at least one --checkpoint"):
        collect_run(tmp_path / "s", arch="convnet")
    with pytest.raises(ValueError, match="file names must differ"):
        collect_run(
            tmp_path / "s",
            arch="convnet",
            checkpoints=[zoo / "seed0.safetensors", zoo / "seed0.safetensors"],
        )
    with pytest.raises(ConvergentError, match="is not a zoo"):
        collect_run(tmp_path / "s", zoo=tmp_path)
