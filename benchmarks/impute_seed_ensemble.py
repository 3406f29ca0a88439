"""Benchmark: would averaging each joint model's fold fits over several model seeds beat one?

The joint models' per-fold fits see 150–350 training spots, so their predictions vary from
seed to seed; ridge and kNN do not. This refits the impute stage's cross-modal CV (the same
blocks, buffer, settings and fold-fit parameters as the stage, through ``crossmodal_cv``) with
model seeds ``--seeds`` on the registered sections of an earlier
``benchmarks/impute_benchmark.py --keep DIR`` run, and prints per section and direction the
best baseline against the best decoder (the joint models' own prediction) and the best
``<model>_ridge`` hybrid, each from the first seed alone and averaged over all seeds; then,
pooled over every section's features, the paired differences of the median r (95 % interval,
clusters of co-varying features resampled within each section).

    python benchmarks/impute_benchmark.py --semireal --seeds 0 --keep /tmp/ib_semi \
        --set 'impute.models=[]' --set 'impute.denoise_models=[]'   # sections only
    python benchmarks/impute_seed_ensemble.py --keep /tmp/ib_semi --seeds 0 1 2

Costs ``len(seeds)`` times the stage's cross-modal fits (on 2 worker processes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DECODERS = ("vae", "gnn", "transformer")


def section_predictions(paired: Path, config: Path, seeds, models, workers: int = 2):
    """Out-of-fold predictions of the stage's cross-modal CV, once per model seed (the folds
    and the baselines do not depend on it), with what scoring them needs."""
    from spatialfuse.constants import Key
    from spatialfuse.impute.crossmodal import crossmodal_cv, model_fold_jobs
    from spatialfuse.impute.fitpool import FoldFits
    from spatialfuse.impute.smooth import knn_smooth
    from spatialfuse.impute.stage import (
        DEFAULTS, _dense, crossmodal_fit_params, cv_folds, scored_genes)
    from spatialfuse.io import read_paired
    from spatialfuse.models.api import fixed_threads

    cfg = yaml.safe_load(config.read_text())
    rna, msi, _ = read_paired(paired)
    p = {**DEFAULTS, **cfg.get("impute", {})}
    stage_seed = int(cfg.get("seed", 0))
    xy = np.asarray(rna.obsm[Key.obsm.spatial], float)
    genes = scored_genes(rna, p["n_top_genes"])
    Xr, Xm = _dense(rna[:, genes].X), _dense(msi.X)
    folds, masks, _ = cv_folds(xy, p, stage_seed)
    mparams = crossmodal_fit_params(models, {m: cfg["model"].get(m, {}) for m in models}, p)
    Sr, Sm = knn_smooth(Xr, xy, p["k"], p["alpha"]), knn_smooth(Xm, xy, p["k"], p["alpha"])
    runs = {}
    with fixed_threads(), FoldFits(rna, msi, workers, "cpu") as fits:
        for s in seeds:
            t0 = time.perf_counter()
            fitted = fits.map(model_fold_jobs(models, mparams, folds, masks,
                                              n_top_genes=p["n_top_genes"], seed=s))
            runs[s], _ = crossmodal_cv(
                Xr, Xm, Sr, Sm, folds, masks, models=models, model_params=mparams, rna_ad=rna,
                msi_ad=msi, gene_index=genes, n_comps=int(p["n_comps"]),
                ridge_alpha=p["ridge_alpha"], knn_k=int(p["knn_k"]),
                n_top_genes=p["n_top_genes"], seed=stage_seed, xy=xy, fitted=fitted)
            print(f"  {paired.parts[-3]}: model seed {s} in {time.perf_counter() - t0:.0f} s "
                  f"wall ({workers} worker processes)", flush=True)
    return runs, folds, xy, {"msi": Xm, "rna": Xr}


def score_section(runs, folds, xy, targets, models) -> pd.DataFrame:
    """Per-feature pooled and within-block r of every method, from the first seed alone
    (``seeds`` 1) and averaged over all seeds (``seeds`` n; baselines: first seed only)."""
    from spatialfuse.impute.scores import feature_clusters, feature_scores

    seeds = list(runs)
    rows = []
    for tgt, Y in targets.items():
        clusters = feature_clusters(Y)
        for method in runs[seeds[0]]:
            model_based = method.split("_")[0] in models
            for tag, use in (("1", seeds[:1]), ("n", seeds)):
                if tag == "n" and not model_based:
                    continue
                P = np.mean([runs[s][method][tgt].astype(float) for s in use], 0)
                sc = feature_scores(P, Y, xy, blocks=folds)
                rows.append(pd.DataFrame({
                    "target": tgt, "method": method, "seeds": tag, "feature": np.arange(len(sc)),
                    "cluster": clusters, "pearson_r": sc["pearson_r"].to_numpy(float),
                    "pearson_r_block": sc["pearson_r_block"].to_numpy(float)}))
    return pd.concat(rows, ignore_index=True)


def kind(method: str) -> str:
    if method in DECODERS:
        return "decoder"
    return "hybrid" if method.endswith("_ridge") else "baseline"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", type=Path, required=True,
                    help="an impute_benchmark.py --keep DIR: its seed*/results/*/align/paired.h5mu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds")
    ap.add_argument("--models", nargs="+", default=list(DECODERS))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from spatialfuse.impute.scores import paired_median_difference

    tables = []
    for paired in sorted(args.keep.glob("seed*/results/*/align/paired.h5mu")):
        run_dir = paired.parents[3]
        section = f"{run_dir.name}/{paired.parts[-3]}"
        runs, folds, xy, targets = section_predictions(paired, run_dir / "config" / "config.yaml",
                                                       args.seeds, tuple(args.models),
                                                       args.workers)
        tables.append(score_section(runs, folds, xy, targets, args.models).assign(section=section))
    if not tables:
        raise SystemExit(f"no seed*/results/*/align/paired.h5mu under {args.keep}")
    df = pd.concat(tables, ignore_index=True)
    df["kind"] = df["method"].map(kind)
    n = len(args.seeds)
    print(f"\nmedian held-out r per section: best baseline | best decoder 1 seed -> mean of {n} "
          f"seeds | best hybrid 1 -> {n}")
    for col in ("pearson_r", "pearson_r_block"):
        med = df.groupby(["section", "target", "kind", "method", "seeds"])[col].median()
        for (section, tgt), m in med.groupby(level=["section", "target"]):
            m = m.droplevel(["section", "target"])
            best = {(k, s): m.xs((k, s), level=["kind", "seeds"]).max()
                    for k, s in (("baseline", "1"), ("decoder", "1"), ("decoder", "n"),
                                 ("hybrid", "1"), ("hybrid", "n"))}
            direction = "genes -> metabolites" if tgt == "msi" else "metabolites -> genes"
            print(f"  {section:>26} {direction:>21} {col:>15}: {best['baseline', '1']:.3f} | "
                  f"{best['decoder', '1']:.3f} -> {best['decoder', 'n']:.3f} | "
                  f"{best['hybrid', '1']:.3f} -> {best['hybrid', 'n']:.3f}")
    print("\npooled over the sections' features, paired per feature (difference of median r, "
          "95 % interval; clusters resampled within each section):")
    for tgt in ("msi", "rna"):
        for col in ("pearson_r", "pearson_r_block"):
            sub = df[df["target"] == tgt]
            base = sub[sub["kind"] == "baseline"]
            # per section the best baseline / decoder by its median, as the stage picks them
            picks = {}
            for label, sel in (("baseline", (base, "1")),
                               ("decoder, 1 seed", (sub[sub["kind"] == "decoder"], "1")),
                               (f"decoder, {n} seeds", (sub[sub["kind"] == "decoder"], "n"))):
                d, s = sel
                d = d[d["seeds"] == s]
                best = d.groupby(["section", "method"])[col].median().groupby("section").idxmax()
                picks[label] = pd.concat([d[(d["section"] == sec) & (d["method"] == m)]
                                          for sec, m in best.values]).sort_values(
                                              ["section", "feature"])
            b = picks["baseline"]
            strata = pd.factorize(b["section"])[0]
            clusters = pd.factorize(b["section"] + ":" + b["cluster"].astype(str))[0]
            for a_lab, b_lab in (("decoder, 1 seed", "baseline"),
                                 (f"decoder, {n} seeds", "baseline"),
                                 (f"decoder, {n} seeds", "decoder, 1 seed")):
                r = paired_median_difference(picks[a_lab][col].to_numpy(),
                                             picks[b_lab][col].to_numpy(), strata=strata,
                                             clusters=clusters)
                direction = "genes -> metabolites" if tgt == "msi" else "metabolites -> genes"
                print(f"  {direction:>21} {col:>15}: {a_lab} - {b_lab}: {r['difference']:+.3f} "
                      f"[{r['ci95_low']:+.3f}, {r['ci95_high']:+.3f}] {r['verdict']}")


if __name__ == "__main__":
    main()
