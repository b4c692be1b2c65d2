"""What float64 batch products cost in a real collection, measured side by side in one run.

Statistics accumulate and merge in float64 either way; the question is only the per-batch
product. Rows, each the best of ``--repeats`` runs on the same nets and inputs (one process, torch
threads 2):

- ``forward only``: the nets run over the inputs with the layers hooked and nothing accumulated
  (the floor of any collection);
- ``float32 products``: ``collect(..., exact=False)`` (each batch centred, product in float32);
- ``float64 products``: ``collect(..., exact=True)``, the default.

Cases: the digits demo's four paper-like convnets (every layer, every spatial position, the test
split), and four Fashion-MNIST half-width convnets on 2000 test images (untrained: the cost does
not depend on the weights) when the Debian package is installed.

Usage: python benchmarks/bench_collect.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time


def _time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("CONVERGENT_NO_PROGRESS", "1")
    import torch

    from convergent.collect import capture, collect
    from convergent.collect._loop import _batch
    from convergent.data import load_dataset
    from convergent.models import build_model, default_layers

    torch.set_num_threads(2)
    cases = []
    digits = load_dataset("digits")
    torch.manual_seed(0)
    nets = {f"net{i}": build_model("convnet", in_channels=1, input_size=8) for i in range(4)}
    cases.append(("digits convnet x4", nets, digits.split("test")[0]))
    try:
        fm = load_dataset("fashion-mnist")
    except Exception as exc:  # noqa: BLE001 - the package may be missing
        print(f"fashion-mnist skipped: {exc}")
    else:
        nets = {
            f"net{i}": build_model("convnet", in_channels=1, input_size=28, width=0.5)
            for i in range(4)
        }
        cases.append(("fashion-mnist convnet/2 x4", nets, fm.split("test")[0][:2000]))
    print(f"best of {args.repeats}, torch threads 2, {os.cpu_count()} cores, batch 256")
    print(f"{'case':<28}{'method':<20}{'seconds':>9}{'x forward':>11}{'x float32':>11}")
    for name, nets, x in cases:
        layers = default_layers(nets["net0"])

        def forward_only(nets=nets, layers=layers, x=x) -> None:
            with torch.inference_mode(), capture(nets, layers) as store:
                for start in range(0, len(x), 256):
                    batch = _batch(x, start, min(start + 256, len(x)))
                    for m in nets.values():
                        m(batch)
                    store.clear()

        rows = [("forward only", _time(forward_only, args.repeats))]
        for label, exact in (("float32 products", False), ("float64 products", True)):
            rows.append(
                (
                    label,
                    _time(
                        lambda exact=exact, nets=nets, x=x, layers=layers: collect(
                            nets, x, layers, exact=exact, progress=False
                        ),
                        args.repeats,
                    ),
                )
            )
        floor, f32 = rows[0][1], rows[1][1]
        for label, seconds in rows:
            print(
                f"{name:<28}{label:<20}{seconds:>9.2f}{seconds / floor:>11.2f}{seconds / f32:>11.2f}"
            )


if __name__ == "__main__":
    main()
