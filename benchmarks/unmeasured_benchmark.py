"""Benchmark: metabolites predicted from genes where the MSI does not cover the ST section.

Runs the workflow up to impute on the default demo with the MSI raster of every section cropped
by ``--crop`` of its side (``demo.samples.<sample>.msi_crop_frac``; the simulator's geometry
draws, so the ST section and its truth are those of the uncropped demo), for each ``--seeds``
value. Per section it prints how many ST spots the MSI left unmeasured, the method impute chose
(the best genes → metabolites method of the blocked cross-validation) and what the prediction
of those spots cost, then the median over metabolites of Pearson r against the truth's
noise-free shared log-mean (what the genes can know about each metabolite: baseline + domain
effect + link field) at the unmeasured spots, next to:

* ``genes`` / ``extrapolated`` / ``average``: the parts the output is chosen from (the genes
  alone; the extrapolation kriged from the measured spots; their
  standardised average, used where the CV says it beats the genes alone: ``output``);
* ``extrapolated_idw`` / ``average_idw``: the same two with the extrapolation the stage used
  until 2026-12-05 (inverse-distance weights of the 6 nearest measured spots), side by side;
* ``nearest``: each unmeasured spot given the measured values of the nearest measured spot
  (spatial extrapolation, what one gets without the genes);
* ``cv``: the same method's held-out predictions of the paired spots (blocked CV) against the
  same truth — the accuracy the pipeline reports, on the truth's scale.

Over the metabolites whose truth varies over the unmeasured spots (``n_metabolites``; on the
others the genes know nothing by construction: decoys and unstructured ions; ``n_informative``
of them are domain markers or linked metabolites by construction).

    flock /tmp/spatialfuse_heavy.lock .venv/bin/python benchmarks/unmeasured_benchmark.py \
        --seeds 0 1 [--crop 0.3] [--keep DIR] [--report-only]

``--from-paired RUN_DIR`` (a finished run's working folder, e.g. one kept by
``impute_benchmark.py --semireal --keep``): no simulation; in each of its sections'
``paired.h5mu`` the spots of the right-hand ``--crop`` fraction (by x) are treated as unmeasured:
their MSI is held back, impute runs on the other spots with the run's own config, and the
metabolites predicted at the held-back spots are compared with their *measured* values there
(median over m/z of Pearson r), next to nearest-measured-spot extrapolation and the CV's own
median r. This runs on any paired data, the real-expression semi-real sections included.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from impute_benchmark import (  # noqa: E402
    _nearest_within_ppm,
    _truth_folders,
    ensure_shared_logmean,
    run_seed,
)


def _median_r(P: np.ndarray, T: np.ndarray, keep: np.ndarray) -> float:
    """Median over the columns in ``keep`` of Pearson r between ``P`` and ``T`` (rows = spots);
    columns where either is constant are left out."""
    rs = []
    for j in np.flatnonzero(keep):
        p, t = P[:, j], T[:, j]
        if np.std(p) > 1e-9 and np.std(t) > 1e-6:
            rs.append(np.corrcoef(p, t)[0, 1])
    return float(np.median(rs)) if rs else np.nan


def _part_rs(un, method: str, T: np.ndarray, keep: np.ndarray) -> dict:
    """Median r of each part the prediction is made of (layers of ``unmeasured_msi.h5ad``):
    the genes alone, the extrapolation kriged from the measured spots, their average."""
    from spatialfuse.constants import Key
    from spatialfuse.impute.unmeasured import EXTRAPOLATION

    parts = {"r_genes": Key.layers.imputed(f"{method}_from_rna"),
             "r_extrapolated": Key.layers.imputed(EXTRAPOLATION),
             "r_average": Key.layers.imputed(f"{method}_from_rna_and_msi")}
    return {k: _median_r(np.asarray(un.layers[v], float), T, keep)
            for k, v in parts.items() if v in un.layers}


def _idw_rs(un, method: str, xy_from: np.ndarray, X_from: np.ndarray, T: np.ndarray,
            keep: np.ndarray) -> dict:
    """The previous extrapolation, side by side: inverse-distance weights of the 6 nearest
    measured spots (what the stage used until 2026-12-05) and its average with the genes."""
    from spatialfuse.constants import Key
    from spatialfuse.impute.cv import extrapolate_idw
    from spatialfuse.impute.unmeasured import combine_standardised

    E = extrapolate_idw(xy_from, X_from, np.asarray(un.obsm[Key.obsm.spatial], float))
    G = np.asarray(un.layers[Key.layers.imputed(f"{method}_from_rna")], float)
    return {"r_extrapolated_idw": _median_r(E, T, keep),
            "r_average_idw": _median_r(combine_standardised(G, E), T, keep)}


def _full_logmean(truth: Path) -> pd.DataFrame | None:
    """The demo section's noise-free metabolite log-means at its tissue spots (shared part +
    the decoys' own fields), simulated again from ``design.json`` (same parameters and seed)."""
    from spatialfuse.simulate.demo import DemoParams, simulate_sample

    params = json.loads((truth / "design.json").read_text()).get("params")
    if not params or "n_links" not in params:
        return None
    return simulate_sample(DemoParams(**params)).get("full_logmean_metabolites")


def section_rows(wd: Path, seed: int) -> list[dict]:
    import anndata as ad
    import mudata as md

    rows = []
    for sample, truth, res in _truth_folders(wd):
        if not (res / "unmeasured_msi.h5ad").is_file() or not ensure_shared_logmean(truth):
            continue
        un = ad.read_h5ad(res / "unmeasured_msi.h5ad")
        metrics = json.loads((res / "metrics.json").read_text())
        info = metrics["unmeasured_spots"]
        row = {"seed": seed, "sample": sample, "unmeasured": info["n_spots"],
               "measured": info["n_measured_spots"], "method": info["method"],
               "seconds": info["seconds"], "beyond_validated": info.get(
                   "n_beyond_validated_distance", 0),
               "cv_median_r_measured": info["heldout_pearson_median"]}
        if un.n_obs < 3:
            rows.append(row)
            continue
        design = json.loads((truth / "design.json").read_text())
        mets = pd.read_csv(truth / "metabolites.tsv", sep="\t")
        links = pd.read_csv(truth / "links.tsv", sep="\t")
        informative = set().union(*design["markers"]["metabolites"].values()) | set(
            links["metabolite"])
        shared = pd.read_csv(truth / "shared_logmean_metabolites.tsv.gz", sep="\t", index_col=0)
        i = _nearest_within_ppm(un.var["mz"], mets["mz"])
        name = np.where(i >= 0, mets["name"].to_numpy()[i], "")
        have = np.isin(name, shared.columns)
        mdata = md.read_h5mu(res / "imputed.h5mu")
        msi = mdata["msi"]

        def truth_at(barcodes):
            T = np.zeros((len(barcodes), un.n_vars))
            T[:, have] = shared.loc[barcodes, name[have]].to_numpy()
            return T

        T_un, T_pair = truth_at(un.obs_names), truth_at(msi.obs_names)
        varies = have & (T_un.std(0) > 1e-6)  # the rest: nothing the genes could know
        info_cols = varies & np.isin(name, list(informative))
        X = msi.X.toarray() if hasattr(msi.X, "toarray") else np.asarray(msi.X)
        from scipy.spatial import cKDTree

        near = cKDTree(np.asarray(msi.obsm["spatial"], float)).query(
            np.asarray(un.obsm["spatial"], float))[1]
        cv = np.asarray(msi.layers[f"imputed_{info['method']}_from_rna"], float)
        pred = np.asarray(un.X, float)
        row["n_metabolites"] = int(varies.sum())
        row["n_informative"] = int(info_cols.sum())
        row["output"] = info.get("output", "genes")
        row["r_pred"] = _median_r(pred, T_un, varies)
        row.update(_part_rs(un, info["method"], T_un, varies))
        xy_m = np.asarray(msi.obsm["spatial"], float)
        row.update(_idw_rs(un, info["method"], xy_m, X, T_un, varies))
        row["r_nearest"] = _median_r(X[near], T_un, varies)
        row["r_cv"] = _median_r(cv, T_pair, varies)
        # against everything but the noise (the decoy metabolites' own fields too, which the
        # genes cannot know but the measured MSI nearby can): every metabolite that varies
        full = _full_logmean(truth)
        if full is not None:
            F = np.zeros((un.n_obs, un.n_vars))
            F[:, have] = full.loc[un.obs_names, name[have]].to_numpy()
            vf = have & (F.std(0) > 1e-6)
            row["n_full"] = int(vf.sum())
            for k, P in (("pred", pred), ("nearest", X[near])):
                row[f"full_r_{k}"] = _median_r(P, F, vf)
            row.update({f"full_{k}": v for k, v in _part_rs(un, info["method"], F, vf).items()})
            row.update({f"full_{k}": v for k, v in
                        _idw_rs(un, info["method"], xy_m, X, F, vf).items()})
        rows.append(row)
    return rows


def held_back_rows(run: Path, frac: float) -> list[dict]:
    """``--from-paired``: the right-hand ``frac`` of each paired section's spots held back."""
    import time

    import yaml
    from scipy.spatial import cKDTree

    from spatialfuse.impute import predict_unmeasured, run_impute
    from spatialfuse.io import read_paired

    cfg = yaml.safe_load((run / "config" / "config.yaml").read_text())
    imp = cfg.get("impute", {})
    used = dict.fromkeys([*imp.get("models", ["vae", "gnn", "transformer"]),
                          *imp.get("denoise_models", ["gnn"])])
    mp = {m: (cfg.get("model") or {}).get(m, {}) for m in used}
    seed = int(cfg.get("seed", 0))
    rows = []
    for paired in sorted((run / "results").glob("*/align/paired.h5mu")):
        rna, msi, _ = read_paired(paired)
        xy = np.asarray(rna.obsm["spatial"], float)
        out = xy[:, 0] >= np.quantile(xy[:, 0], 1 - frac)
        t0 = time.process_time()
        _, m_in, metrics, table = run_impute(rna[~out].copy(), msi[~out].copy(), imp, seed=seed,
                                             model_params=mp, device="cpu")
        t1 = time.process_time()
        un, info = predict_unmeasured(rna, rna[~out].copy(), m_in, metrics, table,
                                      imp, seed=seed, model_params=mp, device="cpu")
        t2 = time.process_time()
        X = msi.X.toarray() if hasattr(msi.X, "toarray") else np.asarray(msi.X, float)
        held = X[out]
        near = cKDTree(xy[~out]).query(xy[out])[1]
        pred = np.asarray(un[rna.obs_names[out]].X, float)
        varies = held.std(0) > 1e-6
        rows.append({"sample": paired.parent.parent.name, "unmeasured": int(out.sum()),
                     "measured": int((~out).sum()), "method": info["method"],
                     "impute_cpu_s": round(t1 - t0, 1), "predict_cpu_s": round(t2 - t1, 1),
                     "beyond_validated": info.get("n_beyond_validated_distance", 0),
                     "output": info.get("output", "genes"),
                     "r_pred": _median_r(pred, held, varies),
                     **_part_rs(un[rna.obs_names[out]], info["method"], held, varies),
                     **_idw_rs(un[rna.obs_names[out]], info["method"], xy[~out], X[~out], held,
                               varies),
                     "r_nearest": _median_r(X[~out][near], held, varies),
                     "r_cv": info["heldout_pearson_median"],
                     "r_cv_block": info["heldout_pearson_block_median"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--crop", type=float, default=0.3, help="fraction of the MSI raster cut")
    ap.add_argument("--cores", default="2")
    ap.add_argument("--keep", help="working folder to keep (default: a temporary one)")
    ap.add_argument("--report-only", action="store_true", help="read --keep's results, run nothing")
    ap.add_argument("--from-paired", help="a finished run's folder: hold back part of each "
                    "section's paired spots instead of simulating a cropped raster")
    args = ap.parse_args()
    if args.from_paired:
        df = pd.DataFrame(held_back_rows(Path(args.from_paired), args.crop))
        with pd.option_context("display.width", 200, "display.max_columns", 40,
                               "display.float_format", "{:.3f}".format):
            print(f"{args.from_paired}: right-hand {args.crop:.0%} of each section's paired "
                  "spots held back; median r over m/z against their measured values")
            print(df.to_string(index=False))
        return
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="unmeasured_bench_"))
    edits = [f"demo.samples.{s}.msi_crop_frac={args.crop}" for s in ("demo1", "demo2")]
    rows = []
    for seed in args.seeds:
        wd = root / f"seed{seed}"
        run_seed(wd, seed, args.cores, edits, report_only=args.report_only)
        rows += section_rows(wd, seed)
    df = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 40,
                           "display.float_format", "{:.3f}".format):
        print(f"MSI raster cropped by {args.crop:.0%} of its side; median r against the "
              "truth's shared log-mean over metabolites (unmeasured spots; cv: held-out "
              "predictions of the paired spots); full_*: against the noise-free log-mean "
              "(shared + the decoys' own fields) over every metabolite that varies (n_full)")
        print(df.to_string(index=False))
    print(f"working folder: {root}")


if __name__ == "__main__":
    main()
