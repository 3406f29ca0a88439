"""Benchmark: held-out accuracy of denoising and cross-modal prediction on simulated demos.

Runs the workflow up to the impute stage (``--until impute``) on the default demo config for
each ``--seeds`` value (the seed drives the simulator, so each seed is a new pair of demo
sections with known truth), then prints, per sample, the median held-out Pearson r, Spearman r
and map SSIM of every method in both directions (spatially blocked CV), the denoising scores
(hidden spots) and the impute job's wall time.

    flock /tmp/spatialfuse_heavy.lock .venv/bin/python benchmarks/impute_benchmark.py \
        --seeds 0 1 [--cores 2] [--set impute.model_max_steps=300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]


def _set(cfg: dict, dotted: str, value: str) -> None:
    node = cfg
    *head, last = dotted.split(".")
    for k in head:
        node = node.setdefault(k, {})
    node[last] = yaml.safe_load(value)


def run_seed(wd: Path, seed: int, cores: str, edits: list[str]) -> list[dict]:
    (wd / "config").mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["seed"] = seed
    for e in edits:
        k, v = e.split("=", 1)
        _set(cfg, k, v)
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    shutil.copy(REPO / "config" / "samples.tsv", wd / "config" / "samples.tsv")
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d",
                    str(wd), "--cores", cores, "--quiet", "--until", "impute"], check=True)
    rows = []
    for mfile in sorted((wd / "results").glob("*/impute/metrics.json")):
        sample = mfile.parents[1].name
        m = json.loads(mfile.read_text())
        bench = pd.read_csv(wd / "results" / "benchmarks" / "impute" / f"{sample}.tsv", sep="\t")
        base = {"seed": seed, "sample": sample, "job_s": float(bench["s"].iloc[-1])}
        for task, res in m["crossmodal"].items():
            for method, v in res.items():
                if isinstance(v, dict):
                    rows.append({**base, "task": task, "method": method,
                                 "median_r": v["median_pearson"],
                                 "median_spearman": v["median_spearman"],
                                 "median_ssim": v["median_ssim"], "n": v["n_features"]})
        for mod, res in m["denoise"].items():
            for method, v in res.items():
                rows.append({**base, "task": f"denoise_{mod}", "method": method,
                             "median_r": v["median_pearson"],
                             "median_spearman": v["median_spearman"],
                             "median_ssim": v["median_ssim"], "n": v["n_features"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--cores", default="2")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config edit, dotted key (e.g. impute.n_blocks=4); repeatable")
    ap.add_argument("--keep", help="folder for the working directories (default: temporary)")
    args = ap.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sf_impute_"))
    rows = []
    for seed in args.seeds:
        rows += run_seed(root / f"seed{seed}", seed, args.cores, args.set)
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 160)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    cross = df[df["task"].isin(["rna_to_msi", "msi_to_rna"])]
    models = cross[cross["method"].isin(["vae", "gnn", "transformer"])]
    base = cross[cross["method"].isin(["ridge", "knn"])]
    if len(models):
        best_m = models.groupby(["seed", "sample", "task"])["median_r"].max()
        best_b = base.groupby(["seed", "sample", "task"])["median_r"].max()
        cmp = pd.DataFrame({"best_model": best_m, "best_baseline": best_b})
        cmp["model_wins"] = cmp["best_model"] > cmp["best_baseline"]
        print("\nbest model vs best baseline, median held-out Pearson r:")
        print(cmp.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\nimpute job wall time: median {df.groupby(['seed', 'sample'])['job_s'].first().median():.1f} s")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
