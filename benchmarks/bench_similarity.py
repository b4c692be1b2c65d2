"""Whole-layer similarity from streamed moments vs. from stored activations: time and peak memory.

Two nets of 512 units each (D = 1024 joint units), N samples in batches of 8192 float32 rows:

- ``moments``: each batch folded into a ``KernelMoments`` (float32 centred products, float64 state
  and float64 kernel sums), then every metric of the pair from the moments (``pair_similarity``:
  linear and debiased CKA, CCA, SVCCA, PWCCA both ways, angular / Procrustes with rotations and
  with the unit matching). "stream" and "metrics" are timed separately; memory is O(D^2).
- ``stored``: the usual way -- keep every activation (an N x D float32 array), then compute the
  same metrics from it in float64: centre each net, CKA and debiased CKA in feature space, CCA from
  QR of each net, SVCCA from an SVD of each net, PWCCA from the canonical variates, the shape
  metrics from X^T Y. Skipped (with the reason printed) where its memory estimate,
  N * D * 32 bytes (measured), exceeds the cap.

A second table measures the arrays API (``linear_cka(x, y)`` on two stored float32 arrays,
N x 512 each): ``streamed`` (rows folded into float64 moments in blocks, the current code) against
``one copy`` (both arrays copied to one float64 N x D array and folded in one update, the previous
code); peak memory above the stored arrays.

Every measurement runs in a fresh process; "peak MiB" is that process's peak resident memory above
its resident memory just before the timed region (the shared pool of input batches is not counted).
Batches cycle through a pre-generated pool so data generation is not timed. "max |diff|" is the
largest difference between the two methods' values over every metric (float32 products vs. float64).
The machine is a shared 2-core VM: timings are the best of ``--repeats`` runs.

Usage: python benchmarks/bench_similarity.py [--sizes 100000,200000,...] [--repeats 1]
       [--arrays-sizes 50000,200000] [--skip-moments]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

from _memory import peak_mib, rss_mib  # benchmarks/_memory.py (run as a script)

BATCH = 8192
POOL = 8
WIDTH = 512
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
MEMORY_CAP_GIB = 8.0
#: bytes per stored value at the stored method's peak (measured ~31 at N = 196608: the float32 store,
#: float64 centred copies, Q factors and SVD factors)
STORED_BYTES_PER_VALUE = 32


def _pool():
    import numpy as np

    rng = np.random.default_rng(0)
    latent = 64
    mix_a = rng.normal(size=(latent, WIDTH)).astype(np.float32) / latent**0.5
    mix_b = rng.normal(size=(latent, WIDTH)).astype(np.float32) / latent**0.5
    out = []
    for _ in range(POOL):
        z = rng.normal(size=(BATCH, latent)).astype(np.float32)
        a = np.maximum(z @ mix_a + 0.3 * rng.normal(size=(BATCH, WIDTH)).astype(np.float32), 0)
        b = np.maximum(z @ mix_b + 0.3 * rng.normal(size=(BATCH, WIDTH)).astype(np.float32), 0)
        out.append(np.ascontiguousarray(np.concatenate([a, b], axis=1)))
    return out


def _from_moments(pool, batches):
    from convergent.analysis._similarity import scalars
    from convergent.similarity import KernelMoments, pair_blocks, pair_similarity

    t0 = time.perf_counter()
    m = KernelMoments(2 * WIDTH, {"a": (0, WIDTH), "b": (WIDTH, 2 * WIDTH)})
    for i in range(batches):
        m.update(pool[i % POOL])
    t1 = time.perf_counter()
    results = pair_similarity(pair_blocks(m))
    values = scalars(results)
    values["pwcca_b"] = results["pwcca_b"].value
    return t1 - t0, time.perf_counter() - t1, values


def _from_stored(pool, batches):
    """The usual way, written out: keep everything, then compute from the arrays."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    t0 = time.perf_counter()
    n = batches * BATCH
    stored = np.empty((n, 2 * WIDTH), dtype=np.float32)
    for i in range(batches):
        stored[i * BATCH : (i + 1) * BATCH] = pool[i % POOL]
    x = stored[:, :WIDTH].astype(np.float64)
    x -= x.mean(axis=0)
    y = stored[:, WIDTH:].astype(np.float64)
    y -= y.mean(axis=0)
    xx, yy, xy = x.T @ x, y.T @ y, x.T @ y
    out = {"cka": np.sum(xy**2) / np.sqrt(np.sum(xx**2) * np.sum(yy**2))}
    # debiased CKA (unbiased HSIC, feature-space form on the centred data)
    sq_x, sq_y = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)

    def hsic(f, s, ta, tb):
        return (f - s + ta * tb / ((n - 1) * (n - 2)) - 2 * s / (n - 2)) / (n * (n - 3))

    h_xy = hsic(np.sum(xy**2), sq_x @ sq_y, sq_x.sum(), sq_y.sum())
    h_xx = hsic(np.sum(xx**2), sq_x @ sq_x, sq_x.sum(), sq_x.sum())
    h_yy = hsic(np.sum(yy**2), sq_y @ sq_y, sq_y.sum(), sq_y.sum())
    out["debiased_cka"] = h_xy / np.sqrt(h_xx * h_yy)
    del sq_x, sq_y
    # CCA and PWCCA from QR of each net
    qx, _ = np.linalg.qr(x)
    qy, _ = np.linalg.qr(y)
    u, rho, vt = np.linalg.svd(qx.T @ qy)
    out["cca"] = rho.mean()
    hx, hy = qx @ u, qy @ vt.T
    del qx, qy
    for key, h, data in (("pwcca", hx, x), ("pwcca_b", hy, y)):
        alpha = np.abs(h.T @ data).sum(axis=1)
        out[key] = alpha @ rho / alpha.sum()
    del hx, hy
    # SVCCA: SVD of each net, keep 99% of the variance, CCA of the reduced data

    def reduce(a):
        uu, s, _ = np.linalg.svd(a, full_matrices=False)
        k = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), 0.99 - 1e-12)) + 1
        return uu[:, :k]  # orthonormal basis of the reduced data: CCA needs no further QR

    out["svcca"] = np.linalg.svd(reduce(x).T @ reduce(y), compute_uv=False).mean()
    # shape metrics (alpha = 1): rotation and the best unit matching
    norm = np.sqrt(np.trace(xx) * np.trace(yy))
    for suffix, cos in (
        ("", np.linalg.svd(xy, compute_uv=False).sum() / norm),
        ("_perm", xy[linear_sum_assignment(xy, maximize=True)].sum() / norm),
    ):
        out["angular" + suffix] = np.arccos(np.clip(cos, -1, 1))
        out["procrustes" + suffix] = np.sqrt(max(2 - 2 * cos, 0))
    return time.perf_counter() - t0, {k: float(v) for k, v in out.items()}


def _arrays(pool, batches):
    """The two nets' activations as two stored float32 arrays (allocated before the timed region)."""
    import numpy as np

    x = np.empty((batches * BATCH, WIDTH), dtype=np.float32)
    y = np.empty_like(x)
    for i in range(batches):  # filled in place: no intermediate copy raises the peak beforehand
        x[i * BATCH : (i + 1) * BATCH] = pool[i % POOL][:, :WIDTH]
        y[i * BATCH : (i + 1) * BATCH] = pool[i % POOL][:, WIDTH:]
    return x, y


def _arrays_api(x, y, streamed: bool):
    import numpy as np

    from convergent.similarity import KernelMoments, linear_cka

    t0 = time.perf_counter()
    if streamed:
        value = linear_cka(x, y).value
    else:  # the previous arrays path: one float64 copy of both arrays, one update
        m = KernelMoments(2 * WIDTH, {"a": (0, WIDTH), "b": (WIDTH, 2 * WIDTH)}, exact=True)
        m.update(np.concatenate([np.asarray(x, np.float64), np.asarray(y, np.float64)], axis=1))
        value = linear_cka(m).value
    return time.perf_counter() - t0, {"cka": float(value)}


def _worker(method: str, n: int, queue: mp.Queue) -> None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(THREADS)  # before NumPy loads its BLAS
    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    pool = _pool()
    batches = n // BATCH
    # warm-up outside the timed region (BLAS threads, allocator, imports)
    from convergent.similarity import KernelMoments

    KernelMoments(2 * WIDTH, {"a": (0, WIDTH), "b": (WIDTH, 2 * WIDTH)}).update(pool[0])
    _ = np.linalg.qr(pool[0][:1024, :WIDTH].astype(np.float64))
    if method.startswith("arrays"):
        x, y = _arrays(pool, batches)
        base = rss_mib()
        total, values = _arrays_api(x, y, streamed=method == "arrays_streamed")
        queue.put((total, 0.0, max(0.0, peak_mib() - base), values))
        return
    base = rss_mib()
    if method == "moments":
        stream, metrics, values = _from_moments(pool, batches)
    else:
        stream, values = _from_stored(pool, batches)
        metrics = 0.0
    queue.put((stream, metrics, max(0.0, peak_mib() - base), values))


def measure(method: str, n: int, repeats: int):
    ctx = mp.get_context("spawn")
    best = None
    for _ in range(repeats):
        queue = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(method, n, queue))
        proc.start()
        result = queue.get()
        proc.join()
        if best is None or sum(result[:2]) < sum(best[:2]):
            best = result
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,200000,500000,1000000,2000000")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many runs")
    parser.add_argument("--arrays-sizes", default="50000,200000", help="N of the arrays table")
    parser.add_argument("--skip-moments", action="store_true", help="only the arrays table")
    args = parser.parse_args()
    sizes = [] if args.skip_moments else [(int(s) // BATCH) * BATCH for s in args.sizes.split(",")]
    print(
        f"D = 2 x {WIDTH}, batch {BATCH} samples, {THREADS} threads, best of {args.repeats} run(s); "
        f"memory cap for stored activations {MEMORY_CAP_GIB} GiB; N rounded down to whole batches"
    )
    header = (
        f"{'N':>8} | {'moments: stream s':>17} {'metrics s':>9} {'peak MiB':>8} | "
        f"{'stored: total s':>15} {'peak MiB':>8} | {'time x':>6} {'memory x':>8} {'max |diff|':>10}"
    )
    print(header)
    print("-" * len(header))
    for n in sizes:
        stream, metrics, peak, ours = measure("moments", n, args.repeats)
        left = f"{n:>8} | {stream:>17.2f} {metrics:>9.2f} {peak:>8.1f} | "
        need = n * 2 * WIDTH * STORED_BYTES_PER_VALUE / 2**30
        if need > MEMORY_CAP_GIB:
            print(f"{left}skipped: stored needs ~{need:.1f} GiB (> {MEMORY_CAP_GIB} GiB cap)")
            continue
        total, _, stored_peak, theirs = measure("stored", n, args.repeats)
        diff = max(abs(ours[k] - theirs[k]) for k in theirs)
        print(
            f"{left}{total:>15.2f} {stored_peak:>8.1f} | {total / (stream + metrics):>6.2f} "
            f"{stored_peak / max(peak, 1.0):>8.1f} {diff:>10.2e}",
            flush=True,
        )
    print(
        "time x = stored total / (moments stream + metrics); memory x = stored peak / moments peak "
        "(moments peak floored at 1 MiB)"
    )
    arrays_table([(int(s) // BATCH) * BATCH for s in args.arrays_sizes.split(",")], args.repeats)


def arrays_table(sizes: list[int], repeats: int) -> None:
    print(
        f"\narrays API: linear_cka(x, y) on two stored float32 arrays of N x {WIDTH}; peak MiB above "
        "the arrays (arrays themselves: N x 4 KiB)"
    )
    header = (
        f"{'N':>8} | {'streamed s':>10} {'peak MiB':>8} | {'one copy s':>10} {'peak MiB':>8} | "
        f"{'memory x':>8} {'|diff|':>8}"
    )
    print(header)
    print("-" * len(header))
    for n in sizes:
        t_new, _, peak_new, new = measure("arrays_streamed", n, repeats)
        t_old, _, peak_old, old = measure("arrays_copy", n, repeats)
        print(
            f"{n:>8} | {t_new:>10.2f} {peak_new:>8.1f} | {t_old:>10.2f} {peak_old:>8.1f} | "
            f"{peak_old / max(peak_new, 1.0):>8.1f} {abs(new['cka'] - old['cka']):>8.1e}",
            flush=True,
        )
    print("memory x = one-copy peak / streamed peak; |diff| = difference of the two CKA values")


if __name__ == "__main__":
    main()
