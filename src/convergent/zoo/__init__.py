"""The zoo: trained nets on disk (checkpoints + manifest), their loading, verification and
evaluation, and references to nets as ``ZOO/NET`` or checkpoint files."""

from convergent.zoo._checkpoint import (
    load_weights,
    save_checkpoint,
    verify_checkpoint,
    weights_digest,
)
from convergent.zoo._evaluate import evaluate
from convergent.zoo._refs import (
    Net,
    checkpoint_metadata,
    load_dataset_for,
    load_net,
    load_pair,
    locate_net,
    net_metadata,
    save_model,
)
from convergent.zoo._zoo import MANIFEST, ZOO_FORMAT, NetRecord, Zoo, load_zoo, zoo_summary

__all__ = [
    "MANIFEST",
    "ZOO_FORMAT",
    "Net",
    "NetRecord",
    "Zoo",
    "checkpoint_metadata",
    "evaluate",
    "load_dataset_for",
    "load_net",
    "load_pair",
    "load_weights",
    "load_zoo",
    "locate_net",
    "net_metadata",
    "save_checkpoint",
    "save_model",
    "verify_checkpoint",
    "weights_digest",
    "zoo_summary",
]
