"""Throughput and peak memory of ``Moments.update`` vs. the floor and vs. what a user would do.

One table, measured side by side in one run on this machine:

- ``ours``: ``Moments(D).update(batch)`` on float32 batches (centred float32 product, float64 state);
- ``ours-exact``: the same with ``exact=True`` (float64 products);
- ``floor``: a bare float32 ``X.T @ X`` accumulated over the same batches with NumPy (whose matmul
  runs ``X.T @ X`` as BLAS syrk, the fastest bare product here), and ``floor-torch``: the same with a
  torch matmul (a general GEMM), both with the same threads;
- ``store+corrcoef``: store every activation, then ``numpy.corrcoef`` (only where the stored matrix and
  corrcoef's float64 copies fit in the memory cap; skipped rows say so).

Every measurement runs in a fresh process; "peak MiB" is that process's peak resident memory above
its resident memory just before the timed loop (so the shared pool of input batches is not counted).
Batches cycle through a pre-generated pool so data generation is not timed.

Usage: python benchmarks/bench_moments.py [--quick] [--max-n N] [--dims 256,1024,2048]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

from _memory import peak_mib, rss_mib  # benchmarks/_memory.py (run as a script)

BATCH = 8192
POOL = 8
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
MEMORY_CAP_GIB = 10.0


def _worker(method: str, dim: int, n: int, queue: mp.Queue) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(dim, dim, generator=gen) / dim**0.5
    pool = [torch.relu(torch.randn(BATCH, dim, generator=gen) @ mix + 0.1) for _ in range(POOL)]
    batches = n // BATCH
    # warm-up (BLAS threads, allocator) outside the timed region
    from convergent.stats import Moments

    Moments(dim).update(pool[0])
    _ = pool[0].T @ pool[0]
    base = rss_mib()
    t0 = time.perf_counter()
    if method in ("ours", "ours-exact"):
        m = Moments(dim, exact=method == "ours-exact")
        for i in range(batches):
            m.update(pool[i % POOL])
        result = m.corr()
    elif method == "floor-torch":
        acc = torch.zeros(dim, dim)
        for i in range(batches):
            x = pool[i % POOL]
            acc += x.T @ x
        result = acc.numpy()
    elif method == "floor":
        acc = np.zeros((dim, dim), dtype=np.float32)
        arrays = [p.numpy() for p in pool]
        for i in range(batches):
            x = arrays[i % POOL]
            acc += x.T @ x
        result = acc
    elif method == "store+corrcoef":
        stored = np.empty((batches * BATCH, dim), dtype=np.float32)
        for i in range(batches):
            stored[i * BATCH : (i + 1) * BATCH] = pool[i % POOL].numpy()
        result = np.corrcoef(stored, rowvar=False)
    else:
        raise ValueError(method)
    seconds = time.perf_counter() - t0
    assert result.shape == (dim, dim)
    queue.put((seconds, max(0.0, peak_mib() - base)))


def measure(method: str, dim: int, n: int, repeats: int) -> tuple[float, float]:
    """Best of ``repeats`` fresh-process runs (this machine is a shared VM: the minimum is the
    least disturbed run); peak memory of the last."""
    ctx = mp.get_context("spawn")
    best = float("inf")
    peak = 0.0
    for _ in range(repeats):
        queue = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(method, dim, n, queue))
        proc.start()
        seconds, peak = queue.get()
        proc.join()
        best = min(best, seconds)
    return best, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N up to 200k only")
    parser.add_argument("--max-n", type=int, default=2_000_000)
    parser.add_argument("--dims", default="256,1024,2048")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    sizes = [200_000] if args.quick else [200_000, 1_000_000, 2_000_000]
    sizes = [s for s in sizes if s <= args.max_n] or [args.max_n]
    dims = [int(d) for d in args.dims.split(",")]
    print(
        f"batch {BATCH} samples, {THREADS} threads, best of {args.repeats} runs, memory cap for "
        f"store+corrcoef {MEMORY_CAP_GIB} GiB; N rounded down to whole batches"
    )
    header = (
        f"{'D':>5} {'N':>9} {'method':<15} {'seconds':>9} {'x floor':>8} {'x ours':>8} "
        f"{'peak MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for dim in dims:
        for n in sizes:
            n = (n // BATCH) * BATCH
            results = {}
            for method in ("floor", "floor-torch", "ours", "ours-exact", "store+corrcoef"):
                need_gib = n * dim * (4 + 8 + 8) / 2**30
                if method == "store+corrcoef" and need_gib > MEMORY_CAP_GIB:
                    print(
                        f"{dim:>5} {n:>9} {method:<15} {'skipped':>9}   needs ~{need_gib:.1f} GiB "
                        f"(> {MEMORY_CAP_GIB} GiB cap)"
                    )
                    continue
                seconds, peak = measure(method, dim, n, args.repeats)
                results[method] = seconds
                floor = results.get("floor", float("nan"))
                ours = results.get("ours", float("nan"))
                print(
                    f"{dim:>5} {n:>9} {method:<15} {seconds:>9.2f} {seconds / floor:>8.2f} "
                    f"{seconds / ours:>8.2f} {peak:>9.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
