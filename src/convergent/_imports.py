"""Objects named by the user as ``package.module:attribute`` (model factories, preprocessing).

The module is imported as ``python -m`` would find it: with the current working directory on the
import path, so ``--model mymodels:make`` works from the folder holding ``mymodels.py``.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from convergent._errors import ConvergentError


def import_object(spec: str, *, what: str = "object") -> Any:
    """The attribute ``attr`` (dotted allowed) of module ``module`` named by ``"module:attr"``.

    Raises
    ------
    ValueError
        ``spec`` is not of the form ``module:attr``.
    ConvergentError
        The module cannot be imported (the message lists where Python looked, the working directory
        included) or has no such attribute.
    """
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"A {what} is named as 'package.module:attribute' (e.g. mymodels:make_net). Got "
            f"{spec!r} instead."
        )
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        searched = ", ".join(p or "." for p in sys.path[:6]) + (
            ", ..." if len(sys.path) > 6 else ""
        )
        raise ConvergentError(
            f"Could not import module {module_name!r} for {what} {spec!r} ({exc}). Python looked "
            f"in the working directory {cwd} and on its path ({searched}). Run from the folder "
            "that holds the module, add its folder to PYTHONPATH, or install its package "
            "(pip install -e .)."
        ) from exc
    finally:
        if added and sys.path and sys.path[0] == cwd:
            sys.path.pop(0)
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConvergentError(
                f"Module {module_name!r} has no attribute {attr!r} ({what} {spec!r})."
            )
        target = getattr(target, part)
    return target
