"""User ``module:factory`` models: found from the working directory as ``python -m`` finds them,
clear errors when not, and architecture arguments checked against the factory's signature."""

from __future__ import annotations

import math
import os
import sys
import textwrap

import pytest
import torch

from convergent import ConvergentError
from convergent.models import (
    MLP,
    ConvNet,
    ResNet,
    build_for,
    build_model,
    parse_model_kwargs,
    resolve_factory,
    validate_model_kwargs,
)

FACTORY = textwrap.dedent(
    """
    from torch import nn

    def make(in_channels=1, input_size=8, num_classes=10, hidden: int = 4):
        from {sibling} import width  # a lazy import of a neighbouring module
        h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
        return nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * h * w, hidden * width), nn.ReLU(),
            nn.Linear(hidden * width, num_classes),
        )
    """
)


@pytest.fixture
def bare_path(tmp_path, monkeypatch):
    """Work in ``tmp_path`` with neither it nor '' (the starting directory) on ``sys.path``, as the
    installed ``convergent`` script runs; sys.path and sys.modules are restored afterwards."""
    real = os.path.realpath(tmp_path)
    path = [p for p in sys.path if p not in ("", ".") and os.path.realpath(p) != real]
    monkeypatch.setattr(sys, "path", path)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name, module in list(sys.modules.items()):
        if os.path.realpath(getattr(module, "__file__", None) or "/").startswith(real):
            del sys.modules[name]


def test_module_in_the_working_directory_is_imported_as_python_m_does(bare_path):
    (bare_path / "mymodels_cwd.py").write_text(FACTORY.format(sibling="mylayers_cwd"))
    (bare_path / "mylayers_cwd.py").write_text("width = 2\n")
    model = build_model("mymodels_cwd:make", in_channels=1, input_size=8, num_classes=3)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    # the directory stays on the path (last, so it shadows nothing) for later lazy imports
    assert sys.path[-1] == os.getcwd()
    assert model[1].out_features == 8


def test_module_found_nowhere_names_the_directories_searched(bare_path):
    path_before = list(sys.path)
    with pytest.raises(ConvergentError) as info:
        resolve_factory("nomodule_xyz:make")
    message = str(info.value)
    assert "Could not import module 'nomodule_xyz'" in message
    assert f"in the working directory {os.getcwd()}" in message
    assert f"nomodule_xyz.py (or a package nomodule_xyz{os.sep})" in message
    assert path_before[0] in message and "PYTHONPATH=" in message and "pip install -e" in message
    assert sys.path == path_before  # a failed attempt leaves the path as it was
    with pytest.raises(ConvergentError, match=r"looked for pkg_xyz/sub\.py .*working directory"):
        resolve_factory("pkg_xyz.sub:make")


def test_module_that_fails_to_import_is_not_reported_as_missing(bare_path):
    (bare_path / "broken_dep.py").write_text("import not_installed_package_xyz\n")
    (bare_path / "broken_code.py").write_text("raise RuntimeError('boom')\n")
    path_before = list(sys.path)
    with pytest.raises(
        ConvergentError,
        match=r"'broken_dep' of architecture 'broken_dep:make' was found but importing it failed "
        r"\(ModuleNotFoundError: No module named 'not_installed_package_xyz'\)",
    ):
        resolve_factory("broken_dep:make")
    with pytest.raises(
        ConvergentError, match=r"found but importing it failed \(RuntimeError: boom"
    ):
        resolve_factory("broken_code:make")
    assert sys.path == path_before


def test_module_on_the_path_that_fails_to_import(bare_path, monkeypatch):
    monkeypatch.syspath_prepend(str(bare_path))  # found at once, without the retry
    (bare_path / "broken_on_path.py").write_text("import not_installed_package_xyz\n")
    (bare_path / "bad_syntax.py").write_text("def (:\n")
    with pytest.raises(ConvergentError, match=r"found but importing it failed.*broken_on_path\.py"):
        resolve_factory("broken_on_path:make")
    with pytest.raises(ConvergentError, match=r"found but importing it failed \(SyntaxError"):
        resolve_factory("bad_syntax:make")


ANNOTATED = "tests.models.factories:annotated"


@pytest.mark.parametrize(
    ("arch", "kwargs", "error", "match"),
    [
        (
            "convnet",
            {"width": "abc"},
            TypeError,
            r"^The 'width' parameter of ConvNet \(architecture 'convnet'\) must be a number \(its "
            r"default is 1\.0\)\. Got 'abc' instead\.$",
        ),
        ("convnet", {"width": True}, TypeError, "must be a number .*Got True instead"),
        ("convnet", {"dropout": None}, TypeError, "'dropout' parameter of ConvNet .* a number"),
        ("convnet", {"width": math.nan}, ValueError, "must be a finite number .*Got nan"),
        ("resnet", {"blocks": "two"}, TypeError, "'blocks' parameter of ResNet .* an integer"),
        ("mlp", {"depth": 2.5}, ValueError, r"'depth' parameter of MLP .* an integer .*2\.5"),
        ("mlp", {"width": 16.0}, ValueError, r"Got 16\.0 instead \(write 16\)"),
        (ANNOTATED, {"act": "tanh"}, ValueError, "one of 'relu', 'gelu' .*Got 'tanh'"),
        (ANNOTATED, {"bias": "yes"}, TypeError, r"true or false \(its default is True\)"),
        (ANNOTATED, {"name": 3}, TypeError, "'name' parameter of annotated .* a string"),
        (ANNOTATED, {"sizes": 3}, TypeError, "must be a list or null"),
        (ANNOTATED, {"extra": "x"}, TypeError, r"must be an integer or null \(None\)"),
        ("tests.models.factories:unannotated", {"tag": 1}, TypeError, "a string .*'x'"),
        ("tests.models.factories:unannotated", {"dims": 2}, TypeError, "a list"),
        ("tests.models.factories:unannotated", {"rate": "0.5"}, TypeError, "a number"),
        ("tests.models.factories:unresolvable", {"hidden": "x"}, TypeError, "a number"),
        ("mlp", {"widht": 3}, ValueError, "does not take 'widht'. It takes: width, depth"),
    ],
)
def test_architecture_arguments_are_checked_before_building(arch, kwargs, error, match):
    with pytest.raises(error, match=match):
        validate_model_kwargs(arch, kwargs)
    with pytest.raises(error, match=match):
        build_model(arch, in_channels=1, input_size=8, num_classes=10, **kwargs)


def test_good_arguments_pass_unchanged():
    assert validate_model_kwargs("convnet", {"width": 1, "dropout": 0.5}) == {
        "width": 1,
        "dropout": 0.5,
    }
    good = {"hidden": 3, "scale": 2, "act": "gelu", "bias": False, "sizes": [1], "extra": None}
    assert validate_model_kwargs(ANNOTATED, good) == good
    loose = {"rate": 0.5, "anything": "x", "free": 3}
    assert validate_model_kwargs("tests.models.factories:unannotated", loose) == loose
    assert validate_model_kwargs("tests.models.factories:open_ended", {"x": object}) == {
        "x": object
    }
    assert validate_model_kwargs("tests.models.factories:unresolvable", {"hidden": 5}) == {
        "hidden": 5
    }
    model = build_model(ANNOTATED, in_channels=1, input_size=8, num_classes=3, **good)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


def test_builtins_refuse_bad_values_when_called_directly():
    with pytest.raises(TypeError, match="'width' parameter of ConvNet must be a number. Got 'abc'"):
        ConvNet(width="abc")
    with pytest.raises(
        ValueError, match="'in_channels' parameter of ConvNet must be an integer >= 1"
    ):
        ConvNet(in_channels=0)
    with pytest.raises(
        ValueError, match="'input_size' parameter of ConvNet must be an integer >= 1"
    ):
        ConvNet(input_size=(8,))
    with pytest.raises(ValueError, match="'input_size' parameter of MLP .* Got 0 instead"):
        MLP(input_size=0)
    with pytest.raises(TypeError, match="'width' parameter of MLP must be an integer. Got '8'"):
        MLP(width="8")
    with pytest.raises(
        ValueError, match=r"'num_classes' parameter of ResNet must be an integer\. "
    ):
        ResNet(num_classes=2.5)
    with pytest.raises(TypeError, match="'width' parameter of ResNet must be a number"):
        ResNet(width=[1])
    with pytest.raises(ValueError, match="'width' parameter of ConvNet must be a finite number"):
        ConvNet(width=math.inf)
    assert MLP(width=8.0, depth=2.0, input_size=(4, 4)).fc1.linear.out_features == 8


def test_parse_model_kwargs_reads_set_options():
    assert parse_model_kwargs(["width=0.5", " depth = 4 "]) == {"width": 0.5, "depth": 4}
    assert parse_model_kwargs(["act=gelu", "sizes=[1, 2]", "x=null"]) == {
        "act": "gelu",
        "sizes": [1, 2],
        "x": None,
    }
    # a parameter that takes only strings keeps the text as written
    assert parse_model_kwargs(["name=1e-3"], ANNOTATED) == {"name": "1e-3"}
    assert parse_model_kwargs(["name=1e-3"]) == {"name": 0.001}
    assert parse_model_kwargs(None) == {}
    with pytest.raises(ValueError, match=r"--set expects KEY=VALUE \(e.g. --set width=0.5\)"):
        parse_model_kwargs(["width"])
    with pytest.raises(ValueError, match="--set width is given twice"):
        parse_model_kwargs(["width=1", "width=2"])
    with pytest.raises(TypeError, match="'width' parameter of ConvNet .*Got 'abc' instead"):
        parse_model_kwargs(["width=abc"], "convnet")


def test_a_factory_gets_an_int_input_size_for_square_images_and_h_w_otherwise(bare_path):
    # written as a user would, for square images only: input_size // 4 fails on a tuple
    (bare_path / "square_models.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def make(in_channels=1, input_size=28, num_classes=10):
                return nn.Sequential(
                    nn.AvgPool2d(4), nn.Flatten(),
                    nn.Linear(in_channels * (input_size // 4) ** 2, num_classes),
                )

            def seen(in_channels=1, input_size=28, num_classes=10):
                return nn.Sequential(nn.Flatten(), nn.Linear(1, 1), nn.Identity())
            """
        )
    )
    square = {"input_shape": (1, 28, 28), "num_classes": 10}
    model = build_for("square_models:make", None, square)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    calls = []
    real = resolve_factory("square_models:seen")

    def spy(**kwargs):
        calls.append(kwargs["input_size"])
        return real(**kwargs)

    import square_models

    square_models.seen = spy
    build_for("square_models:seen", None, square)
    build_for("square_models:seen", None, {"input_shape": (3, 24, 32), "num_classes": 2})
    assert calls == [28, (24, 32)] and isinstance(calls[0], int)
