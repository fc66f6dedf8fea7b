"""Near-duplicate self-join benchmark: the embedded join against FAISS and numpy, one run.

Codes: the clustered generator of ``bench/search.py`` (``--clusters`` random centres, each bit
flipped with probability ``--flip``; cluster mates are ~46 bits apart, so they are *not*
near-duplicates), then ``--planted`` of the rows are overwritten by copies of other rows with
0..``--max-flips`` distinct bits flipped: planted near-duplicates, some forming chains.

Rows (same codes, same D):

- ``embedded self_join``: ``elastichash.index.duplicates`` on all n codes (+ groups).
- ``faiss MultiHash range``: ``IndexBinaryMultiHash`` with D + 1 tables of 256 // (D + 1) bits
  and ``nflip=0`` (complete by the same pigeonhole argument), range search of every code.
- ``faiss Flat range (sample)``: brute-force ``IndexBinaryFlat`` range search on a
  ``--faiss-sample`` subset, time extrapolated quadratically to n.
- ``numpy brute force``: all pairs of a ``--numpy-sample`` subset; the embedded join on the
  same subset must find exactly these pairs (recall 1.0).
- ``mih137 estimate``: what the per-code MIH lookup (4 x 16-bit subcodes, radius 2) would
  verify on the n codes, counted exactly from the bucket sizes, times the measured
  verification rate; not run.

Peak memory is the rise of the process's RSS over its RSS when the row started (the kernel's
peak, reset before each row, and samples every 2 ms; glibc is told to mmap every allocation
over 128 KiB so that memory an earlier row freed does not hide a row's own; the numpy row
also counts its traced numpy buffers).
Recall is against the pairs FAISS found on all n codes, and against numpy on the subset.

Usage: .venv/bin/python bench/duplicates.py [--n 1000000] [--distance 8] [--quick]
Writes bench/results/duplicates_<n>_d<D>.json (``--quick``: 100k codes, samples 20k).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import faiss
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from search import SHORT_BITS, generate

from bench.report import table, write_result
from elastichash.codes import radius_masks, select_bits, subcodes_array
from elastichash.index import duplicates as dup
from elastichash.index.kernels import popcount_rows

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
T = TypeVar("T")


def plant(codes: U8, count: int, max_flips: int, seed: int) -> None:
    """Overwrite ``count`` rows with copies of others, 0..max_flips distinct bits flipped."""
    rng = np.random.default_rng(seed)
    n = codes.shape[0]
    dst = rng.choice(n, count, replace=False)
    src = rng.integers(0, n, count)
    codes[dst] = codes[src]
    flips = rng.integers(0, max_flips + 1, count)
    bits = np.argsort(rng.random((count, 256), dtype=np.float32), axis=1)[:, :max_flips]
    for k in range(max_flips):
        sel = flips > k
        b = bits[sel, k]
        codes[dst[sel], b // 8] ^= (1 << (7 - b % 8)).astype(np.uint8)


def fixed_mmap_threshold() -> None:
    """Make glibc serve every allocation over 128 KiB with its own mmap (returned on free),
    so the RSS peak of a row is its own, not hidden in memory an earlier row freed."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 17)  # M_MMAP_THRESHOLD; setting it stops the dynamic raise
    except (OSError, AttributeError):
        pass


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def measured(fn: Callable[[], T], *, trace: bool = False) -> tuple[T, float, int]:
    """(result, seconds, peak RSS rise in bytes): the larger of the kernel's peak (VmHWM, reset
    first) and RSS sampled every 2 ms, over the RSS when the row started."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status("VmRSS")
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.002):
            peak = max(peak, _status("VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if trace:  # numpy reports its buffers to tracemalloc: exact for pure-numpy rows
        tracemalloc.start()
    t = time.perf_counter()
    try:
        out = fn()
    finally:
        secs = time.perf_counter() - t
        traced = tracemalloc.get_traced_memory()[1] if trace else 0
        if trace:
            tracemalloc.stop()
        done.set()
        sampler.join()
    return out, secs, max(traced, max(peak, _status("VmHWM")) - before)


def pair_keys(left: I64, right: I64, n: int) -> I64:
    out: I64 = np.sort(np.minimum(left, right) * n + np.maximum(left, right))
    return out


def faiss_pairs(res: tuple[Any, Any, Any], n: int) -> I64:
    lims, _, ids = res
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(lims).astype(np.int64))
    ids = ids.astype(np.int64)
    keep = rows < ids
    return pair_keys(rows[keep], ids[keep], n)


def numpy_brute(codes: U8, d: int, block: int = 64) -> I64:
    """Every pair (i < j) within ``d``: row blocks against all later rows."""
    words = codes.view(np.uint64)
    n = words.shape[0]
    keys: list[I64] = []
    for s in range(0, n, block):
        e = min(n, s + block)
        x = words[s:e, None, :] ^ words[None, s:, :]
        dist = np.bitwise_count(x).sum(axis=2, dtype=np.int32)
        i, j = np.nonzero(dist <= d)
        i, j = i + s, j + s
        keep = i < j
        keys.append(i[keep].astype(np.int64) * n + j[keep])
    return np.sort(np.concatenate(keys)) if keys else np.zeros(0, np.int64)


def mih137_candidates(codes: U8) -> int:
    """Pairs the per-code MIH lookup would verify, summed over the four subcode tables: for
    every bucket v and mask m of weight <= 2, |B_v| * |B_(v^m)|, halved, self-pairs removed."""
    subs = np.concatenate(
        [
            subcodes_array(select_bits(codes[s : s + (1 << 18)], SHORT_BITS))
            for s in range(0, codes.shape[0], 1 << 18)
        ]
    )
    masks = radius_masks().astype(np.int64)
    values = np.arange(1 << 16, dtype=np.int64)
    total = 0
    for t in range(subs.shape[1]):
        c = np.bincount(subs[:, t], minlength=1 << 16).astype(np.int64)
        ordered = sum(int((c * c[values ^ m]).sum()) for m in masks)
        total += (ordered - subs.shape[0]) // 2
    return total


def verify_rate(codes: U8, pairs: int, seed: int) -> float:
    """Candidate pairs verified per second by the join's gather + XOR + popcount step."""
    rng = np.random.default_rng(seed)
    words = codes.view(np.uint64)
    a = rng.integers(0, codes.shape[0], pairs)
    b = rng.integers(0, codes.shape[0], pairs)
    t = time.perf_counter()
    x = np.take(words, a, axis=0)
    np.bitwise_xor(x, np.take(words, b, axis=0), out=x)
    popcount_rows(x)
    return pairs / (time.perf_counter() - t)


def recall(found: I64, truth: I64) -> float:
    if truth.size == 0:
        return 1.0
    return float(np.isin(truth, found, assume_unique=True).mean())


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--distance", type=int, default=8)
    ap.add_argument("--clusters", type=int, default=10_000)
    ap.add_argument("--flip", type=float, default=0.1)
    ap.add_argument("--planted", type=float, default=0.05, help="share of rows planted")
    ap.add_argument("--max-flips", type=int, default=10)
    ap.add_argument("--faiss-sample", type=int, default=100_000)
    ap.add_argument("--numpy-sample", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="100k codes, samples of 20k")
    args = ap.parse_args()
    fixed_mmap_threshold()
    if args.quick:
        args.n = min(args.n, 100_000)
        args.faiss_sample = min(args.faiss_sample, 20_000)
        args.numpy_sample = min(args.numpy_sample, 20_000)
    n, d = args.n, args.distance
    dup.check_distance(d)
    rng = np.random.default_rng(args.seed)
    centres = rng.integers(0, 256, (args.clusters, 32), dtype=np.uint8)
    codes = generate(n, centres, args.flip, args.seed + 1)
    plant(codes, int(n * args.planted), args.max_flips, args.seed + 2)
    out: dict[str, Any] = {
        "n": n,
        "max_distance": d,
        "clusters": args.clusters,
        "flip": args.flip,
        "planted": int(n * args.planted),
        "max_flips": args.max_flips,
        "faiss_threads": faiss.omp_get_max_threads(),
    }
    rows: dict[str, dict[str, Any]] = {}

    join, secs, mem = measured(lambda: dup.self_join(codes, d))
    groups, gsecs, gmem = measured(lambda: dup.groups(join))
    ours = pair_keys(*join.expand()[:2], n)
    rows["embedded self_join"] = {
        "n": n,
        "seconds": secs,
        "groups_seconds": gsecs,
        "peak_bytes": max(mem, gmem),
        "pairs": int(ours.size),
        "candidates": join.candidates,
        "groups": len(groups),
        "largest_group": max((g.size for g in groups), default=0),
    }
    print("embedded", rows["embedded self_join"], flush=True)

    def multihash() -> tuple[Any, Any, Any]:
        bits = 256 // (d + 1)
        index = faiss.IndexBinaryMultiHash(256, d + 1, bits)
        index.nflip = 0
        index.add(codes)
        res = index.range_search(codes, d + 1)  # faiss keeps distances < radius
        index.reset()
        return res  # type: ignore[no-any-return]

    res, secs, mem = measured(multihash)
    truth = faiss_pairs(res, n)
    del res
    rows["faiss MultiHash range"] = {
        "n": n,
        "seconds": secs,
        "peak_bytes": mem,
        "pairs": int(truth.size),
    }
    rows["embedded self_join"]["recall"] = recall(ours, truth)
    print("faiss multihash", rows["faiss MultiHash range"], flush=True)

    fs = min(n, args.faiss_sample)
    sample = np.ascontiguousarray(codes[rng.choice(n, fs, replace=False)])

    def flat(codes: U8) -> tuple[Any, Any, Any]:
        index = faiss.IndexBinaryFlat(256)
        index.add(codes)
        return index.range_search(codes, d + 1)  # type: ignore[no-any-return]

    res, secs, mem = measured(lambda: flat(sample))
    rows["faiss Flat range (sample)"] = {
        "n": fs,
        "seconds": secs,
        "seconds_at_n": secs * (n / fs) ** 2,
        "peak_bytes": mem,
        "pairs": int(faiss_pairs(res, fs).size),
    }
    print("faiss flat", rows["faiss Flat range (sample)"], flush=True)
    del res

    ns = min(n, args.numpy_sample)
    sub = np.ascontiguousarray(codes[rng.choice(n, ns, replace=False)])
    brute, secs, mem = measured(lambda: numpy_brute(sub, d), trace=True)
    sub_join = dup.self_join(sub, d)
    sub_ours = pair_keys(*sub_join.expand()[:2], ns)
    rows["numpy brute force (sample)"] = {
        "n": ns,
        "seconds": secs,
        "seconds_at_n": secs * (n / ns) ** 2,
        "peak_bytes": mem,
        "pairs": int(brute.size),
    }
    rows["embedded self_join"]["recall_vs_numpy_sample"] = recall(sub_ours, brute)
    rows["embedded self_join"]["exact_on_numpy_sample"] = bool(np.array_equal(sub_ours, brute))
    print("numpy", rows["numpy brute force (sample)"], flush=True)

    cands = mih137_candidates(codes)
    rate = verify_rate(codes, 4_000_000, args.seed + 3)
    rows["mih137 estimate"] = {
        "n": n,
        "candidates": cands,
        "verify_pairs_per_s": rate,
        "seconds_at_n": cands / rate,
    }
    print("mih137", rows["mih137 estimate"], flush=True)

    out["results"] = rows
    ours_s = rows["embedded self_join"]["seconds"] + rows["embedded self_join"]["groups_seconds"]
    out["faiss_multihash_vs_embedded"] = rows["faiss MultiHash range"]["seconds"] / ours_s
    out["faiss_flat_extrapolated_vs_embedded"] = (
        rows["faiss Flat range (sample)"]["seconds_at_n"] / ours_s
    )
    out["numpy_extrapolated_vs_embedded"] = (
        rows["numpy brute force (sample)"]["seconds_at_n"] / ours_s
    )
    print(
        f"\nn={n:,}  D={d}  clusters={args.clusters}  flip={args.flip}  planted={out['planted']:,}"
    )
    print(table(
        [("method", "<30"), ("n", ">9d"), ("seconds", ">9.2f"), ("s at n", ">9.1f"),
         ("peak MiB", ">9.0f"), ("pairs", ">9.2g"), ("recall", ">7.3f")],
        [(name, r["n"], r.get("seconds"),
          r.get("seconds_at_n", r.get("seconds", 0.0) + r.get("groups_seconds", 0.0)),
          r["peak_bytes"] / 2**20 if "peak_bytes" in r else None,
          f"{r['pairs']:d}" if "pairs" in r else r.get("candidates", 0), r.get("recall", ""))
         for name, r in rows.items()]))
    e = rows["embedded self_join"]
    print(
        f"embedded: {e['candidates']:,} candidate pairs verified, {e['groups']:,} groups"
        f" (largest {e['largest_group']}), exact on the numpy sample: {e['exact_on_numpy_sample']};"
        f" MultiHash / embedded {out['faiss_multihash_vs_embedded']:.2f}x,"
        f" Flat (extrapolated) / embedded {out['faiss_flat_extrapolated_vs_embedded']:.0f}x,"
        f" numpy (extrapolated) / embedded {out['numpy_extrapolated_vs_embedded']:.0f}x;"
        f" the per-code 137-neighbour MIH lookup would verify"
        f" {rows['mih137 estimate']['candidates']:.2e} pairs"
        f" (~{rows['mih137 estimate']['seconds_at_n']:.0f} s of verification alone)"
    )
    write_result(f"duplicates_{n}_d{d}", out, quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
