"""Training: several nets of one architecture that differ only in what the seed varies, written as a
zoo directory (owned by :mod:`convergent.zoo`; its names are re-exported here for convenience)."""

from convergent.train._train import (
    DEFAULT_CONFIGS,
    VARIABLE_FACTORS,
    TrainConfig,
    default_config,
    train_net,
    train_zoo,
)
from convergent.zoo import (
    MANIFEST,
    ZOO_FORMAT,
    NetRecord,
    Zoo,
    evaluate,
    load_weights,
    load_zoo,
    verify_checkpoint,
    weights_digest,
    zoo_summary,
)

__all__ = [
    "DEFAULT_CONFIGS",
    "MANIFEST",
    "VARIABLE_FACTORS",
    "ZOO_FORMAT",
    "NetRecord",
    "TrainConfig",
    "Zoo",
    "default_config",
    "evaluate",
    "load_weights",
    "load_zoo",
    "train_net",
    "train_zoo",
    "verify_checkpoint",
    "weights_digest",
    "zoo_summary",
]
