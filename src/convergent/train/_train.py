"""Multi-seed training: K nets of one architecture that differ only in what the user varies.

A *zoo* directory holds one safetensors checkpoint per net and a ``manifest.json`` describing how each
was made (architecture, seeds, data, optimiser, accuracy, checksum). Training is deterministic on the
CPU: the same settings give bit-identical weights. It is also resumable: after every epoch the
unfinished net's state (weights, optimiser buffers, RNG state) is written to ``<net>.partial.safetensors``
and a re-run of the same command skips finished nets and continues from there, reaching the same final
weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convergent._device import resolve_device
from convergent._errors import ConvergentError, CorruptFileError
from convergent._io import atomic_write_bytes, read_json
from convergent._progress import bar
from convergent._version import __version__
from convergent.models import build_for, check_kwargs, validate_model_kwargs
from convergent.train._repair import problem, settle
from convergent.zoo import (
    MANIFEST,
    ZOO_FORMAT,
    NetRecord,
    Zoo,
    evaluate,
    inspect_checkpoint,
    load_zoo,
    save_checkpoint,
    write_zoo_manifest,
)

VARIABLE_FACTORS = ("init", "order")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (the same for every net of a zoo).

    SGD with momentum and weight decay, learning rate on a cosine schedule from ``lr`` to 0 over
    ``epochs`` (a function of the epoch alone, so resuming needs no scheduler state).
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"The '{name}' parameter of TrainConfig must be an integer >= 1. "
                    f"Got {value!r} instead."
                )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(
                f"The 'lr' parameter of TrainConfig must be > 0. Got {self.lr!r} instead."
            )
        if not 0 <= self.momentum < 1:
            raise ValueError(
                f"The 'momentum' parameter of TrainConfig must be in [0, 1). Got {self.momentum!r} instead."
            )
        if self.weight_decay < 0:
            raise ValueError(
                "The 'weight_decay' parameter of TrainConfig must be >= 0. "
                f"Got {self.weight_decay!r} instead."
            )

    def lr_at(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """Cosine-annealed learning rate at a step of an epoch (both counted from 0)."""
        progress = (epoch + step / steps_per_epoch) / self.epochs
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * progress))


#: Default hyper-parameters per dataset, chosen so that the default ``convnet`` trains well.
DEFAULT_CONFIGS: dict[str, TrainConfig] = {
    "digits": TrainConfig(epochs=20, batch_size=64, lr=0.01),
    "mnist": TrainConfig(epochs=8, batch_size=128, lr=0.02),
    "fashion-mnist": TrainConfig(epochs=12, batch_size=128, lr=0.02),
    "cifar10": TrainConfig(epochs=30, batch_size=128, lr=0.02),
    "npy": TrainConfig(epochs=20, batch_size=64, lr=0.02),
}


def default_config(dataset: str, **overrides: Any) -> TrainConfig:
    """The default :class:`TrainConfig` of a dataset, with ``overrides`` (``None`` values ignored)."""
    base = DEFAULT_CONFIGS.get(dataset, TrainConfig())
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - set(asdict(base))
    if unknown:
        raise ValueError(
            f"Unknown training settings: {sorted(unknown)}. Known: {sorted(asdict(base))}."
        )
    return TrainConfig(**{**asdict(base), **changes})


# ----------------------------------------------------------------------------------------------
# training one net


def _seeds_for(seed: int, vary: Sequence[str], base_seed: int) -> dict[str, int]:
    return {
        "init": seed if "init" in vary else base_seed,
        "order": seed if "order" in vary else base_seed,
    }


def _epoch_order(n: int, order_seed: int, epoch: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1_000_003 * order_seed + epoch)
    return torch.randperm(n, generator=gen)


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    decay, no_decay = [], []
    for p in model.parameters():
        # no weight decay on biases and normalisation parameters (standard practice)
        (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.SGD(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov and config.momentum > 0,
    )


def _save_partial(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    epoch: int,
    history: list[dict[str, float]],
    seconds: float,
) -> None:
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    names = [n for n, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    for name in names:
        state = opt.state.get(params[name], {})
        if "momentum_buffer" in state and state["momentum_buffer"] is not None:
            tensors[f"optim.{name}.momentum_buffer"] = (
                state["momentum_buffer"].detach().cpu().contiguous()
            )
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"convergent": json.dumps({"epoch": epoch, "history": history, "seconds": seconds})}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def _load_partial(
    path: Path, model: nn.Module, opt: torch.optim.Optimizer, device: str | torch.device
) -> tuple[int, list[dict[str, float]], float]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})["convergent"])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:
        raise CorruptFileError(
            f"The partial checkpoint {path} of an interrupted run is unreadable ({exc}). Delete it "
            "to restart that net from scratch."
        ) from exc
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(state)
    params = dict(model.named_parameters())
    for key, value in tensors.items():
        if key.startswith("optim.") and key.endswith(".momentum_buffer"):
            name = key[len("optim.") : -len(".momentum_buffer")]
            opt.state[params[name]]["momentum_buffer"] = value.to(device)
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["epoch"]), list(meta["history"]), float(meta["seconds"])


def train_net(
    name: str,
    arch: str,
    dataset: Any,
    *,
    seeds: Mapping[str, int],
    config: TrainConfig,
    model_kwargs: Mapping[str, Any] | None = None,
    partial_path: Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
    callback: Callable[[str, int, dict[str, float]], None] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one net; returns the trained model (eval mode) and its metrics.

    ``seeds["init"]`` seeds the weights, ``seeds["order"]`` the order of the training batches. When
    ``partial_path`` is given, state is saved there after every epoch and, if it exists, training
    resumes from it. ``callback(name, epoch, metrics)`` is called after every epoch (an exception
    it raises interrupts training, leaving the partial checkpoint).
    """
    kwargs = dict(model_kwargs or {})
    x_train, y_train = dataset.train_images, dataset.train_labels
    x_test, y_test = dataset.test_images, dataset.test_labels
    n = len(y_train)
    steps = math.ceil(n / config.batch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seeds["init"]))
        model = build_for(arch, kwargs, dataset)
        model.to(device)
        opt = _optimizer(model, config)
        # everything random during training (dropout) draws from the global RNG, seeded here and
        # saved with every partial checkpoint
        torch.manual_seed(int(seeds["init"]) * 7919 + 17)
        start_epoch, history, seconds = 0, [], 0.0
        if partial_path is not None and partial_path.is_file():
            start_epoch, history, seconds = _load_partial(partial_path, model, opt, device)
        deterministic = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            epochs = bar(
                range(start_epoch, config.epochs),
                progress=progress,
                desc=f"train {name}",
                unit="epoch",
                initial=start_epoch,
                total=config.epochs,
            )
            for epoch in epochs:
                t0 = time.perf_counter()
                model.train()
                order = _epoch_order(n, int(seeds["order"]), epoch)
                loss_sum, correct = 0.0, 0
                for step in range(steps):
                    idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                    x, y = x_train[idx].to(device), y_train[idx].to(device)
                    lr = config.lr_at(epoch, step, steps)
                    for group in opt.param_groups:
                        group["lr"] = lr
                    out = model(x)
                    loss = nn.functional.cross_entropy(
                        out, y, label_smoothing=config.label_smoothing
                    )
                    if not torch.isfinite(loss):
                        raise ConvergentError(
                            f"Training of net {name!r} diverged (loss {float(loss.detach())} at epoch "
                            f"{epoch + 1}, step {step + 1}). Lower the learning rate (--lr)."
                        )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_sum += float(loss.detach()) * len(idx)
                    correct += int((out.argmax(1) == y).sum())
                test_loss, test_acc = evaluate(model, x_test, y_test, device=device)
                metrics = {
                    "epoch": epoch + 1,
                    "train_loss": loss_sum / n,
                    "train_accuracy": correct / n,
                    "test_loss": test_loss,
                    "test_accuracy": test_acc,
                }
                history.append(metrics)
                seconds += time.perf_counter() - t0
                epochs.set_postfix(
                    loss=f"{metrics['train_loss']:.3f}",
                    acc=f"{correct / n:.3f}",
                    test=f"{test_acc:.3f}",
                )
                if partial_path is not None:
                    _save_partial(partial_path, model, opt, epoch + 1, history, seconds)
                if callback is not None:
                    callback(name, epoch + 1, metrics)
            epochs.close()
        finally:
            torch.use_deterministic_algorithms(deterministic)
    train_loss, train_acc = evaluate(model, x_train, y_train, device=device)
    test_loss, test_acc = evaluate(model, x_test, y_test, device=device)
    model.eval()
    return model, {
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "history": history,
        "seconds": seconds,
    }


# ----------------------------------------------------------------------------------------------
# a zoo of nets


def _settings(
    arch: str,
    model_kwargs: Mapping[str, Any],
    dataset: Any,
    config: TrainConfig,
    vary: Sequence[str],
    base_seed: int,
) -> dict[str, Any]:
    return {
        "arch": arch,
        "model_kwargs": dict(model_kwargs),
        "dataset": dataset.name,
        "dataset_size": {
            "train": int(len(dataset.train_labels)),
            "test": int(len(dataset.test_labels)),
        },
        "optimizer": {"name": "sgd", "schedule": "cosine", **asdict(config)},
        "vary": list(vary),
        "base_seed": base_seed,
    }


def train_zoo(
    out: str | os.PathLike,
    *,
    arch: str = "convnet",
    dataset: Any,
    seeds: Sequence[int] = (0, 1, 2, 3),
    config: TrainConfig | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    vary: Sequence[str] = ("init",),
    base_seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
    callback: Callable[[str, int, dict[str, float]], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> Zoo:
    """Train one net per seed and write the zoo directory ``out``; returns the loaded :class:`Zoo`.

    Re-running the same call completes a zoo: finished nets whose checkpoints match the manifest
    are left untouched (same bytes, same modification time), an unfinished net resumes, new seeds
    are added, and a net whose checkpoint is missing, damaged or disagrees with its manifest
    record is retrained. Training is deterministic, so the retrained net shows which side was
    right: a damaged or missing file is restored (the retrained file has the recorded SHA-256); a
    whole file that the retrained net reproduces means the manifest record was wrong, and the
    record is corrected; a whole file is never deleted (if the retrained net is the recorded one,
    the file is renamed aside). Each repair is reported through ``log`` and appended to the
    manifest's ``repairs`` list, old record included.

    Parameters
    ----------
    out : path
        Zoo directory.
    arch : str
        Built-in architecture name or ``package.module:factory``.
    dataset : convergent.data.Dataset
        The data (from :func:`convergent.data.load_dataset`).
    seeds : sequence of int
        One net per seed; net names are ``seed<k>``.
    config : TrainConfig
        Hyper-parameters; default :func:`default_config` of the dataset.
    vary : sequence of {'init', 'order'}
        What the seed changes: the initial weights (default), the data order, or both. What is not
        varied uses ``base_seed``.
    device : str or torch.device
        Checked with :func:`convergent._device.resolve_device` before anything is trained.
    log : callable, optional
        Called with one line per repaired net (default: :func:`warnings.warn`).
    """
    out = Path(out)
    device = resolve_device(device)
    say = log or (lambda message: warnings.warn(message, UserWarning, stacklevel=3))
    vary = tuple(dict.fromkeys(vary))
    bad = [v for v in vary if v not in VARIABLE_FACTORS]
    if bad or not vary:
        raise ValueError(
            f"The 'vary' parameter must name one or more of {VARIABLE_FACTORS}. Got {list(vary)!r} instead."
        )
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("The 'seeds' parameter must name at least one seed.")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"The 'seeds' parameter has duplicates: {seeds}.")
    config = config or default_config(dataset.name)
    kwargs = check_kwargs(validate_model_kwargs(arch, model_kwargs or {}))
    settings = _settings(arch, kwargs, dataset, config, vary, base_seed)
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        manifest = read_json(manifest_path)
        if manifest.get("format") != ZOO_FORMAT:
            raise ConvergentError(f"{manifest_path} is not a convergent zoo manifest.")
        old = manifest["settings"]
        if old != json.loads(json.dumps(settings)):
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ConvergentError(
                f"The zoo at {out} was trained with different settings ({', '.join(diff)} differ). "
                "Choose another output directory (--out), or use the same settings to resume or "
                "add nets; nothing was changed."
            )
    else:
        manifest = {
            "format": ZOO_FORMAT,
            "format_version": 1,
            "convergent_version": __version__,
            "torch_version": torch.__version__,
            "settings": settings,
            "dataset": dataset.describe(),
            "nets": [],
        }
    out.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        name = f"seed{seed}"
        recorded = next((r for r in manifest["nets"] if r["name"] == name), None)
        check = None
        if recorded is not None:
            check = inspect_checkpoint(out / recorded["checkpoint"], recorded["sha256"])
            if check.ok:
                continue
            how = "retraining it" if check.damaged else "retraining it to see which is right"
            say(f"net {name!r} of the zoo at {out}: {problem(check)}; {how}.")
        net_seeds = _seeds_for(seed, vary, base_seed)
        partial = out / f"{name}.partial.safetensors"
        model, metrics = train_net(
            name,
            arch,
            dataset,
            seeds=net_seeds,
            config=config,
            model_kwargs=kwargs,
            partial_path=partial,
            device=device,
            progress=progress,
            callback=callback,
        )
        ckpt = out / (recorded["checkpoint"] if recorded else f"{name}.safetensors")
        meta = {
            "name": name,
            "arch": arch,
            "kwargs": kwargs,
            "seeds": net_seeds,
            "dataset": dataset.name,
            "subset": dataset.subset,
        }
        record = NetRecord(
            name=name,
            arch=arch,
            kwargs=kwargs,
            seeds=net_seeds,
            dataset=dataset.name,
            epochs=config.epochs,
            optimizer=settings["optimizer"],
            checkpoint=ckpt.name,
            sha256="",
            **metrics,
        )
        if check is None:
            record.sha256 = save_checkpoint(ckpt, model, meta)
            manifest["nets"].append(asdict(record))
        else:
            try:
                settle(out, manifest, check, record, model, meta, say)
            finally:
                partial.unlink(missing_ok=True)
        write_zoo_manifest(manifest_path, manifest)
        partial.unlink(missing_ok=True)
    return load_zoo(out, verify=False)
