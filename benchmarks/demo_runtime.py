"""Benchmark: wall time and peak memory of the demo, end to end and per rule.

Runs the workflow on the default demo config in a fresh working directory and prints one line per
job from Snakemake's benchmark files (seconds, max RSS), plus the total wall time.

    .venv/bin/python benchmarks/demo_runtime.py [--cores 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cores", default="2")
    ap.add_argument("--keep", help="working directory to use and keep (default: a temp dir)")
    args = ap.parse_args()
    wd = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sf_bench_"))
    (wd / "config").mkdir(parents=True, exist_ok=True)
    for f in ("config.yaml", "samples.tsv"):
        shutil.copy(REPO / "config" / f, wd / "config" / f)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(wd),
                    "--cores", args.cores, "--quiet"], check=True)
    wall = time.perf_counter() - t0
    rows = []
    for f in sorted((wd / "results" / "benchmarks").glob("*/*.tsv")):
        b = pd.read_csv(f, sep="\t")
        rows.append({"rule": f.parent.name, "job": f.stem, "seconds": b["s"].iloc[-1],
                     "max_rss_mb": b["max_rss"].iloc[-1]})
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 120)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"\njobs: {len(df)}; sum of job time: {df['seconds'].sum():.1f} s; "
          f"peak RSS of any job: {df['max_rss_mb'].max():.0f} MB")
    print(f"end-to-end wall time on {args.cores} cores: {wall:.1f} s")
    if not args.keep:
        shutil.rmtree(wd, ignore_errors=True)


if __name__ == "__main__":
    main()
