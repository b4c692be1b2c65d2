"""Repairing a zoo: a net whose checkpoint is missing, damaged or disputed is retrained, and the
(deterministic) retrained net decides which of the file and the manifest record is right."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convergent._errors import ConvergentError
from convergent._io import atomic_write_bytes
from convergent._version import __version__
from convergent.zoo import MANIFEST, CheckpointCheck, NetRecord, checkpoint_bytes


def problem(check: CheckpointCheck) -> str:
    """What is wrong with a zoo checkpoint, in a few words."""
    name = check.path.name
    return {
        "missing": f"its checkpoint {name} is missing",
        "unreadable": f"its checkpoint {name} is not a readable safetensors file (truncated?)",
        "altered": (
            f"its checkpoint {name} changed after training (its tensors no longer match the "
            "checksum written into it)"
        ),
        "intact": (
            f"its checkpoint {name} is intact (it matches the checksum written into it) but its "
            f"SHA-256 {check.actual_sha256} is not the recorded {check.expected_sha256}"
        ),
        "unverifiable": (
            f"its checkpoint {name} has SHA-256 {check.actual_sha256}, the manifest records "
            f"{check.expected_sha256}"
        ),
    }[check.state]


def settle(
    out: Path,
    manifest: dict[str, Any],
    check: CheckpointCheck,
    new_record: NetRecord,
    model: nn.Module,
    meta: Mapping[str, Any],
    say: Callable[[str], None],
) -> None:
    """Put a retrained net in place of a missing, damaged or disputed one, and record what was done.

    The retrained weights are serialised in the current checkpoint format and in the one used
    before checkpoints embedded their checksum; since training is deterministic, a
    retrained net whose bytes have the recorded SHA-256 is the recorded net. A damaged or missing
    file is replaced; a whole file (one that matches its embedded checksum, or predates it) is
    never deleted: if the retrained net is the file, the manifest record is corrected; if it is the
    recorded net, the file is renamed aside; if it is neither, nothing changes and an error says so.
    """
    index = next(i for i, r in enumerate(manifest["nets"]) if r["name"] == new_record.name)
    old = dict(manifest["nets"][index])
    name, recorded, path = old["name"], old["sha256"], check.path
    formats = [checkpoint_bytes(model, meta), checkpoint_bytes(model, meta, embed_checksum=False)]
    candidates = {hashlib.sha256(data).hexdigest(): data for data in formats}
    retrained = next(iter(candidates))
    event: dict[str, Any] = {
        "net": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "convergent_version": __version__,
        "torch_version": torch.__version__,
        "found": check.state,
        "recorded_sha256": recorded,
        "file_sha256": check.actual_sha256,
        "retrained_sha256": retrained,
    }

    if check.damaged:
        if recorded in candidates:
            atomic_write_bytes(path, candidates[recorded])
            event["outcome"] = "restored"
            say(
                f"net {name!r}: restored. The retrained checkpoint has the recorded SHA-256 "
                f"{recorded}, so it is the net that was trained before; the manifest is unchanged."
            )
        else:
            atomic_write_bytes(path, formats[0])
            manifest["nets"][index] = {**asdict(new_record), "sha256": retrained}
            event.update(outcome="replaced with a different net", previous=old)
            say(
                f"net {name!r}: retrained, but the new weights differ from the recorded ones "
                f"(SHA-256 {retrained} instead of {recorded}): training did not reproduce here "
                "(another PyTorch version or device?). The manifest now records the new net and "
                "keeps the old record under 'repairs'."
            )
    elif check.actual_sha256 in candidates:
        manifest["nets"][index]["sha256"] = check.actual_sha256
        event.update(outcome="record corrected", previous=old)
        say(
            f"net {name!r}: the checkpoint is right and the manifest was wrong: retraining gives "
            f"the file's SHA-256 {check.actual_sha256}, the manifest recorded {recorded}. The "
            "record is corrected; the file is untouched."
        )
    elif recorded in candidates:
        aside = path.with_name(f"{path.stem}.displaced-{check.actual_sha256[:12]}{path.suffix}")
        os.replace(path, aside)
        atomic_write_bytes(path, candidates[recorded])
        event.update(outcome="file set aside and restored", displaced=aside.name)
        say(
            f"net {name!r}: the manifest is right and the file was another checkpoint: retraining "
            f"gives the recorded SHA-256 {recorded}. The retrained net is written to {path.name}; "
            f"the file that was there is kept as {aside.name}."
        )
    else:
        raise ConvergentError(
            f"Net {name!r} of the zoo at {out}: {problem(check)}, and retraining it here gives a "
            f"third SHA-256, {retrained}: training does not reproduce on this machine (another "
            "PyTorch version or device?), so convergent cannot tell which is right and changed "
            f"nothing. Restore {MANIFEST} or {path.name} from a backup, or train into a new "
            "directory (--out)."
        )
    manifest.setdefault("repairs", []).append(event)
