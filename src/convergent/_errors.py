"""The one exception type of convergent, and a helper that adds context to errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class ConvergentError(Exception):
    """Base class for convergent's own errors (bad files, missing data, failed checks).

    Bad argument values raise ``ValueError`` and bad types ``TypeError``, as usual in Python;
    everything else convergent raises derives from this class.
    """


class DataNotFoundError(ConvergentError, FileNotFoundError):
    """A dataset's files are not where convergent looked; the message says where and how to get them."""


class CorruptFileError(ConvergentError, ValueError):
    """A file handed to convergent is truncated, tampered with or not in the expected format."""


@contextlib.contextmanager
def error_context(what: str) -> Iterator[None]:
    """Prefix errors raised inside the block with ``while <what>: ``, keeping their type.

    Example: ``with error_context("processing layer 'conv3' of model 'net2'"): ...``
    """
    try:
        yield
    except (ConvergentError, ValueError, TypeError) as exc:
        msg = str(exc.args[0]) if exc.args else ""
        if msg.startswith("while "):
            msg = f"while {what}, {msg}"
        else:
            msg = f"while {what}: {msg}"
        try:
            new = type(exc)(msg, *exc.args[1:])
        except Exception:  # noqa: BLE001 - exotic constructor: keep the original
            raise
        raise new from exc
