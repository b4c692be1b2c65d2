"""The zoo: trained nets on disk (checkpoints + manifest), their loading, verification and
evaluation, and references to nets as ``ZOO/NET`` or checkpoint files."""

from convergent.zoo._checkpoint import (
    CheckpointCheck,
    checkpoint_bytes,
    describe_check,
    inspect_checkpoint,
    load_weights,
    save_checkpoint,
    tensors_sha256,
    verify_checkpoint,
    weights_digest,
)
from convergent.zoo._evaluate import evaluate
from convergent.zoo._refs import (
    Net,
    checkpoint_metadata,
    dataset_of_zoo,
    load_dataset_for,
    load_net,
    load_pair,
    locate_net,
    net_metadata,
    save_model,
)
from convergent.zoo._zoo import (
    MANIFEST,
    ZOO_FORMAT,
    NetRecord,
    Zoo,
    load_zoo,
    manifest_edited,
    nets_sha256,
    write_zoo_manifest,
    zoo_summary,
)

__all__ = [
    "MANIFEST",
    "CheckpointCheck",
    "ZOO_FORMAT",
    "Net",
    "NetRecord",
    "Zoo",
    "checkpoint_bytes",
    "checkpoint_metadata",
    "dataset_of_zoo",
    "describe_check",
    "evaluate",
    "inspect_checkpoint",
    "load_dataset_for",
    "load_net",
    "load_pair",
    "load_weights",
    "load_zoo",
    "locate_net",
    "manifest_edited",
    "net_metadata",
    "nets_sha256",
    "save_checkpoint",
    "save_model",
    "tensors_sha256",
    "verify_checkpoint",
    "weights_digest",
    "write_zoo_manifest",
    "zoo_summary",
]
