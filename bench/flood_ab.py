"""Search under an ingest flood: an older commit against this checkout, back to back.

    python bench/flood_ab.py [--before main] [--runs 3] [--flood 3000] [--queries 40]
                             [--out bench/results/ingest_flood_ab.json]

Each run is ``bench/ingest.py --flood N --no-reference`` (default settings only), alternately
in an export of ``--before`` and in this checkout, both with this checkout's
``bench/ingest.py`` and ``bench/report.py``, so the two differ in the code under test only. On
a shared machine the load changes from one minute to the next: alternating puts both under the
same conditions, and medians over the runs are quoted beside each run's figures and load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import table, write_result  # noqa: E402

BENCH_FILES = ("bench/ingest.py", "bench/report.py")  # what the runs use, from this checkout


def export(rev: str, dest: Path) -> str:
    """The tree of ``rev`` in ``dest``, with this checkout's bench script; its commit id."""
    commit = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, check=True, text=True,
                            capture_output=True, timeout=30).stdout.strip()
    archive = dest.parent / "tree.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, stdout=out, timeout=120)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()
    for name in BENCH_FILES:
        shutil.copy(ROOT / name, dest / name)
    return commit


def one_run(tree: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(tree / "bench/ingest.py"), "--flood", str(args.flood),
           "--queries", str(args.queries), "--repeat", "1", "--no-reference", "--out", str(out)]
    subprocess.run(cmd, cwd=tree, check=True, timeout=1200)
    run = json.loads(out.read_text())["runs"][-1]
    return {
        "idle_p50_ms": run["idle"]["p50_ms"],
        "flood_p50_ms": run["flood"]["p50_ms"],
        "idle_p99_ms": run["idle"]["p99_ms"],
        "flood_p99_ms": run["flood"]["p99_ms"],
        "ratio_p50": run["ratio_p50"],
        "ratio_p99": run["ratio_p99"],
        "uploading_p50_ms": run["flood_uploading"]["p50_ms"],
        "backlog_p50_ms": run["flood_backlog"]["p50_ms"],
        "backlog_p99_ms": run["flood_backlog"]["p99_ms"],
        "ratio_uploading_p50": run["ratio_uploading_p50"],
        "ratio_backlog_p50": run["ratio_backlog_p50"],
        "ratio_backlog_p99": run["ratio_backlog_p99"],
        "indexed_per_s": run["indexed_per_s"],
        "cores_busy": run["cores_busy"][0],
        "load_1min": run["load_1min"][0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flood", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/ingest_flood_ab.json")
    args = parser.parse_args()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, text=True,
                          capture_output=True, timeout=30).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=ROOT, check=True, text=True, capture_output=True,
                                timeout=30).stdout.strip())
    results: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="eh-flood-ab-") as t:
        tmp = Path(t)
        (tmp / "before").mkdir()
        before = export(args.before, tmp / "before")
        trees = {"before": tmp / "before", "after": ROOT}
        for i in range(args.runs):
            for name, tree in trees.items():
                got = one_run(tree, args, tmp / f"{name}{i}.json")
                print(f"run {i} {name}: idle {got['idle_p50_ms']:.0f} ms, uploading "
                      f"{got['uploading_p50_ms']:.0f} ms x{got['ratio_uploading_p50']:.2f},"
                      f" backlog {got['backlog_p50_ms']:.0f} ms"
                      f" x{got['ratio_backlog_p50']:.2f}, indexed "
                      f"{got['indexed_per_s']:.0f}/s, load {got['load_1min']:.1f}",
                      file=sys.stderr, flush=True)
                results[name].append(got)
    keys = ("idle_p50_ms", "flood_p50_ms", "ratio_p50", "idle_p99_ms", "flood_p99_ms",
            "ratio_p99", "uploading_p50_ms", "ratio_uploading_p50", "backlog_p50_ms",
            "ratio_backlog_p50", "backlog_p99_ms", "ratio_backlog_p99", "indexed_per_s",
            "load_1min")
    medians = {name: {k: float(np.median([r[k] for r in runs])) for k in keys}
               for name, runs in results.items()}
    print(f"search by upload under a flood of {args.flood} images, {args.queries} queries per "
          f"run, {args.runs} runs each, alternated, {os.cpu_count()} CPUs; medians over runs")
    labels = {"before": f"before ({before[:10]})",
              "after": f"after ({head[:10]}{'+' if dirty else ''})"}
    print(table(
        [("code", "<24"), ("idle p50", ">8.0f"), ("uploading p50", ">13.0f"), ("x", ">5.2f"),
         ("backlog p50", ">11.0f"), ("x", ">5.2f"), ("backlog p99", ">11.0f"), ("x", ">5.2f"),
         ("indexed/s", ">9.0f"), ("load", ">5.1f")],
        [(labels[n], m["idle_p50_ms"], m["uploading_p50_ms"], m["ratio_uploading_p50"],
          m["backlog_p50_ms"], m["ratio_backlog_p50"], m["backlog_p99_ms"],
          m["ratio_backlog_p99"], m["indexed_per_s"], m["load_1min"])
         for n, m in medians.items()]))
    print("(ms; x: to idle. uploading: searches while the flood was still being posted to the "
          "gateway; backlog: after, while only its backlog was encoded)")
    write_result("ingest_flood_ab", {
        "before": before, "after": head, "after_uncommitted_changes": dirty,
        "flood_images": args.flood, "queries": args.queries, "runs": args.runs,
        "cpus": os.cpu_count(), "target_ratio": 2.0,
        "medians": medians, "per_run": results,
    }, path=args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
