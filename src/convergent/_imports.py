"""Objects the user names as ``package.module:attribute`` (model factories, preprocessing), imported
as ``python -m`` would find them: from ``sys.path`` and, failing that, from the working directory;
errors that say where Python looked and tell a module that is missing from one that fails to
import."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from typing import Any

from convergent._errors import ConvergentError


def _is_missing(exc: ModuleNotFoundError, module_name: str) -> bool:
    """Whether ``exc`` says that ``module_name`` itself (or a package above it) is not found, rather
    than that the module was found and one of its own imports failed."""
    missing = exc.name or ""
    return bool(missing) and (module_name == missing or module_name.startswith(missing + "."))


def _on_path(directory: str) -> bool:
    real = os.path.realpath(directory)
    return any(os.path.realpath(entry or os.curdir) == real for entry in sys.path)


def _import_failed(
    module_name: str, arch: str, exc: BaseException, kind: str = "architecture"
) -> ConvergentError:
    try:
        spec = importlib.util.find_spec(module_name)
    except Exception:  # noqa: BLE001 - a parent package that fails to import
        spec = None
    where = spec.origin if spec is not None and spec.origin else f"module {module_name!r}"
    return ConvergentError(
        f"Module {module_name!r} of {kind} {arch!r} was found but importing it failed "
        f"({type(exc).__name__}: {exc}). Fix the error in {where} (or install what it imports)."
    )


def import_user_module(
    module_name: str, arch: str, *, kind: str = "architecture"
) -> types.ModuleType:
    """Import ``module_name`` as ``python -m`` would find it: from ``sys.path`` and, failing that,
    from the working directory.

    The working directory is appended to ``sys.path`` (after every installed package, so it can
    shadow nothing) only when the module is found nowhere else, and it stays there when that import
    succeeds: the module may import its neighbours lazily, and worker processes started with
    ``spawn`` copy ``sys.path`` to import it again, as they would under ``python -m``. A failed
    attempt leaves ``sys.path`` as it was.
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not _is_missing(exc, module_name):
            raise _import_failed(module_name, arch, exc, kind) from exc
        error: ModuleNotFoundError = exc
    except Exception as exc:  # noqa: BLE001 - a user module may raise anything on import
        raise _import_failed(module_name, arch, exc, kind) from exc
    cwd = os.getcwd()
    if not _on_path(cwd):
        sys.path.append(cwd)
        importlib.invalidate_caches()
        try:
            return importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - a user module may raise anything on import
            if not isinstance(exc, ModuleNotFoundError) or not _is_missing(exc, module_name):
                failure = _import_failed(module_name, arch, exc, kind)
                sys.path.remove(cwd)
                raise failure from exc
            sys.path.remove(cwd)
            error = exc
    relative = module_name.replace(".", os.sep)
    searched = [os.path.abspath(entry or os.curdir) for entry in sys.path]
    others = ", ".join(dict.fromkeys(p for p in searched if p != cwd)) or "none"
    raise ConvergentError(
        f"Could not import module {module_name!r} for {kind} {arch!r} ({error}). Python "
        f"looked for {relative}.py (or a package {relative}{os.sep}) in the working directory "
        f"{cwd} and in the other directories on its path: {others}. Run "
        f"convergent from the directory that holds {relative}.py, add that directory to "
        "PYTHONPATH (PYTHONPATH=/path/to/dir convergent ...), or install your package "
        "(pip install -e /path/to/project)."
    ) from error


def import_object(spec: str, *, kind: str = "object") -> Any:
    """The attribute (dotted allowed) named by ``"package.module:attribute"``.

    Raises
    ------
    ValueError
        ``spec`` is not of that form.
    ConvergentError
        The module cannot be imported (the message says where Python looked) or has no such
        attribute.
    """
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"A {kind} is named as 'package.module:attribute' (e.g. mymodels:make_net). Got "
            f"{spec!r} instead."
        )
    target: Any = import_user_module(module_name, spec, kind=kind)
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConvergentError(
                f"Module {module_name!r} has no attribute {attr!r} ({kind} {spec!r})."
            )
        target = getattr(target, part)
    return target
