"""The command line a new user meets: one clear line for ordinary mistakes, every option documented
with its default, and the same flag names for the same things in every command."""

from __future__ import annotations

import argparse

import pytest

from convergent.cli import build_parser, main


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--set", "width=abc", "--out", "{tmp}/z"], "'width' parameter of ConvNet"),
        (["train", "--device", "gpu", "--out", "{tmp}/z"], "Unknown device 'gpu'"),
        (["collect", "{tmp}/none", "--device", "gpu"], "Unknown device 'gpu'"),
        (["demo", "--device", "gpu", "--out", "{tmp}/d"], "Unknown device 'gpu'"),
        (["align", "{tmp}/a", "{tmp}/b", "--device", "gpu"], "Unknown device 'gpu'"),
        (["interpolate", "{tmp}/a", "{tmp}/b", "--device", "gpu"], "Unknown device 'gpu'"),
        (["train", "--set", "width", "--out", "{tmp}/z"], r"--set expects KEY=VALUE"),
        (["layers", "--input-shape", "1,8"], "--input-shape expects C,H,W"),
        (["collect", "{tmp}/none"], "is not a zoo"),
        (["analyze", "{tmp}/none"], "is not a statistics directory"),
        (["report", "{tmp}/none"], "holds no results.json"),
    ],
)
def test_ordinary_mistakes_end_in_one_line(argv, message, tmp_path, capsys):
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"convergent {argv[0]}: error: " in err
    assert message.split(".*")[0].replace("\\", "") in err or message in err
    assert not (tmp_path / "z").exists() and not (tmp_path / "d").exists()  # nothing was started


def test_cuda_on_a_build_without_it_is_one_line(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    assert main(["train", "--device", "cuda", "--out", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "built without CUDA" in err


def test_every_option_says_what_it_does_and_its_default():
    parser = build_parser()
    missing = []
    for name, sub in _subparsers(parser).items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            text = action.help or ""
            if not text:
                missing.append(f"{name} {action.option_strings[0]}: no help")
                continue
            is_flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
            if not is_flag and "default" not in text:
                missing.append(f"{name} {action.option_strings[0]}: no default in {text!r}")
    assert missing == []


def test_flags_are_named_the_same_way_everywhere():
    subs = _subparsers(build_parser())
    for name in ("train", "layers", "collect", "demo", "align", "interpolate"):
        flags = {s for a in subs[name]._actions for s in a.option_strings}
        assert "--arch" in flags, name  # the architecture is --arch everywhere (--model: alias)
    for name in ("train", "collect", "demo", "align", "interpolate"):
        device = next(a for a in subs[name]._actions if "--device" in a.option_strings)
        assert "cuda" in device.help and "default: cpu" in device.help
    demo_nets = next(a for a in subs["demo"]._actions if "--nets" in a.option_strings)
    assert demo_nets.type is int  # --nets is a count where it exists
    assert not any("--nets" in a.option_strings for a in subs["align"]._actions)
