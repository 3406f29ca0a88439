"""Impute stage at Visium HD sizes: CPU time and peak memory against the number of spots.

A synthetic section of square bins (``--pitch`` µm, default 16: Visium HD's 16 µm bins) with
``--genes`` genes (all of them scored: ``impute.n_top_genes`` = that number) and ``--mz`` m/z;
genes are Poisson counts on four smooth spatial fields, metabolites Gaussian on the same
fields. The whole ``run_impute`` runs as the pipeline runs it (one thread), with the
baselines only by default (``--models`` adds joint models to the cross-modal CV,
``--denoise-models`` to the denoising CV; the pipeline's defaults are ``--models vae gnn
transformer --denoise-models gnn``). Prints spots, CPU seconds, wall seconds and the
process's peak resident memory. ``--workers N`` runs the fold fits in N processes, as the rule
with N threads does; CPU seconds then include the workers', and the largest worker's peak and
a bound on the job's (this process's + N × that) are printed too. ``--profile N`` also prints
the N most expensive calls (cumulative). ``--unmeasured-frac F`` leaves the right-hand fraction F of the
bins without MSI and runs the impute job's second step too, ``predict_unmeasured`` (their
metabolites from their genes), as the job does, after ``run_impute`` in the same process:
the peak before it and the job's peak are both printed. ``--unmeasured-method M`` makes that
step use M (a method the CV ran, e.g. ``gnn``) instead of the CV's winner, to measure it where
a joint model wins (it is then refitted on every paired bin, in the job's own process).

``--smoothing-only`` times only the stage's graph smoothing (the held-out choice of strength,
the smoothing itself and the held-out entries, both modalities, as the stage calls them) once
per ``--solve-chunk`` size, in one process, and prints how far each result is from the first.

    python benchmarks/impute_scale_benchmark.py --side 100 --genes 2000   # 10,000 bins, ~4 min
    python benchmarks/impute_scale_benchmark.py --side 141 --genes 2000   # 19,881 bins

Run one size per process: the peak memory is the process's.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatialfuse.constants import Key  # noqa: E402
from spatialfuse.impute.stage import run_impute  # noqa: E402


def synthetic_section(side: int, n_genes: int, n_mz: int, pitch_um: float, seed: int = 0):
    """(rna, msi) AnnData of ``side`` × ``side`` square bins sharing four spatial fields."""
    rng = np.random.default_rng(seed)
    g = np.arange(side) * pitch_um
    gx, gy = np.meshgrid(g, g)
    xy = np.c_[gx.ravel(), gy.ravel()]
    n = len(xy)
    F = np.stack([np.sin(xy[:, 0] / w + ph) * np.cos(xy[:, 1] / (1.3 * w) - ph)
                  for w, ph in ((150, 0), (300, 1), (500, 2), (800, 3))], 1)
    mu = np.exp(-1.5 + 0.4 * F @ rng.normal(0, 1, (4, n_genes)))
    counts = sp.csr_matrix(rng.poisson(mu).astype(np.float32))
    lib = np.asarray(counts.sum(1)).ravel() + 1
    Xn = sp.csr_matrix(sp.diags(1e4 / lib) @ counts)
    Xn.data = np.log1p(Xn.data)
    obs = pd.DataFrame(index=[f"s{i}" for i in range(n)])
    rna = ad.AnnData(Xn.astype(np.float32), obs=obs,
                     var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    rna.layers[Key.layers.counts] = counts
    rna.var[Key.var.highly_variable] = True
    rna.obsm[Key.obsm.spatial] = xy
    M = F @ rng.normal(0, 0.5, (4, n_mz)) + rng.normal(0, 0.5, (n, n_mz)) + 3
    msi = ad.AnnData(M.astype(np.float32), obs=obs.copy(),
                     var=pd.DataFrame(index=[f"mz{i}" for i in range(n_mz)]))
    msi.obsm[Key.obsm.spatial] = xy
    return rna, msi


def smoothing_only(args) -> list[dict]:
    """The stage's graph-smoothing calls on both modalities, timed per solve chunk size."""
    from spatialfuse.impute import smooth
    from spatialfuse.impute.stage import DEFAULTS, ENTRY_GROUPS
    from spatialfuse.models.api import fixed_threads

    rna, msi = synthetic_section(args.side, args.genes, args.mz, args.pitch)
    xy = rna.obsm[Key.obsm.spatial]
    p, seed = DEFAULTS, 0
    k, strengths, nf = int(p["k"]), p["strengths"], int(p["denoise_folds"])
    mats = {"rna": smooth._dense(rna.X), "msi": smooth._dense(msi.X)}
    first, rows = None, []
    for chunk in args.solve_chunk or [smooth.SOLVE_CHUNK]:
        smooth.SOLVE_CHUNK = chunk
        t0, w0, res = time.process_time(), time.perf_counter(), []
        with fixed_threads():
            for X in mats.values():
                dfolds = smooth.heldout_spot_folds(len(X), nf, seed)
                ch = smooth.choose_strength(X, xy, dfolds, strengths, k)
                res += [ch["heldout"], smooth.graph_smooth(X, xy, ch["strength"], k)]
                groups, efolds = smooth.heldout_entry_folds(*X.shape, nf, ENTRY_GROUPS, seed)
                res += list(smooth.heldout_entry_predictions(X, xy, groups, efolds,
                                                             strengths, k).values())
        out = {"spots": len(xy), "genes": args.genes, "mz": args.mz, "solve_chunk": chunk,
               "cpu_s": round(time.process_time() - t0, 1),
               "wall_s": round(time.perf_counter() - w0, 1)}
        first = first or res
        out["max_abs_diff_vs_first"] = float(max(np.abs(a - b).max() for a, b in zip(res, first)))
        print("\t".join(f"{k}={v}" for k, v in out.items()), flush=True)
        rows.append(out)
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=100, help="bins per side (spots = side²)")
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--mz", type=int, default=200)
    ap.add_argument("--pitch", type=float, default=16.0, help="bin size in µm")
    ap.add_argument("--models", nargs="*", default=[], help="joint models of the cross-modal CV")
    ap.add_argument("--denoise-models", nargs="*", default=[],
                    help="joint models of the denoising CV (the pipeline's default: gnn)")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="impute.model_max_steps (default: the stage's, 400)")
    ap.add_argument("--workers", type=int, default=1,
                    help="processes for the joint models' fold fits (the rule's threads)")
    ap.add_argument("--profile", type=int, default=0, help="print the N most expensive calls")
    ap.add_argument("--unmeasured-frac", type=float, default=0.0,
                    help="right-hand fraction of bins without MSI, predicted afterwards")
    ap.add_argument("--unmeasured-method", default=None,
                    help="predict the unmeasured bins with this genes -> metabolites method "
                         "(e.g. gnn) instead of the CV's winner: the cost where a joint model "
                         "wins and is refitted on every paired bin")
    ap.add_argument("--smoothing-only", action="store_true",
                    help="time only the graph smoothing's solves, once per --solve-chunk")
    ap.add_argument("--solve-chunk", type=int, nargs="+", default=None,
                    help="right-hand sides per sparse solve (default: the stage's)")
    args = ap.parse_args(argv)
    if args.smoothing_only:
        return smoothing_only(args)
    if args.unmeasured_method:  # checked before the run, not after hours of it
        from spatialfuse.impute.unmeasured import method_parts

        try:
            parts = method_parts(args.unmeasured_method)
        except ValueError as e:
            ap.error(f"--unmeasured-method: {e}")
        if parts["sparse"] or not set(parts["models"]) <= set(args.models) \
                or args.unmeasured_frac <= 0:
            ap.error(f"--unmeasured-method {args.unmeasured_method}: needs --unmeasured-frac "
                     "and a method the CV runs (its model in --models; no sparse methods)")
    st, msi = synthetic_section(args.side, args.genes, args.mz, args.pitch)
    rna = st
    if args.unmeasured_frac > 0:
        x = st.obsm[Key.obsm.spatial][:, 0]
        measured = x < np.quantile(x, 1 - args.unmeasured_frac)
        rna, msi = st[measured].copy(), msi[measured].copy()
    params = {"models": list(args.models), "denoise_models": list(args.denoise_models),
              "n_top_genes": args.genes}
    if args.max_steps is not None:
        params["model_max_steps"] = args.max_steps
    prof = cProfile.Profile() if args.profile else None
    t0, w0 = time.process_time(), time.perf_counter()
    if prof:
        prof.enable()
    _, msi_out, metrics, table = run_impute(rna, msi, params, seed=0, workers=args.workers)
    out = {"spots": rna.n_obs, "genes": args.genes, "mz": args.mz, "workers": args.workers}
    if args.unmeasured_frac > 0:
        from spatialfuse.impute import predict_unmeasured

        out["run_impute_peak_rss_gb"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
        if args.unmeasured_method:
            metrics["crossmodal"]["rna_to_msi"]["best_method"] = args.unmeasured_method
        _, summary = predict_unmeasured(st, rna, msi_out, metrics, table, params, seed=0)
        out.update(st_spots=st.n_obs, unmeasured_method=summary["method"],
                   unmeasured_s=summary["seconds"])
    if prof:
        prof.disable()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the fit workers, once they ended
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    out.update(
        cpu_s=round(time.process_time() - t0 + kids.ru_utime + kids.ru_stime, 1),
        wall_s=round(time.perf_counter() - w0, 1), peak_rss_gb=round(peak, 2))
    if args.workers > 1:  # each worker's peak is at most the largest one's
        out.update(worker_peak_rss_gb=round(kids.ru_maxrss / 1e6, 2),
                   job_peak_rss_bound_gb=round(peak + args.workers * kids.ru_maxrss / 1e6, 2))
    out.update(
        ridge_rna_to_msi_median_r=round(float(
            metrics["crossmodal"]["rna_to_msi"]["ridge"]["median_pearson"]), 4))
    print("\t".join(f"{k}={v}" for k, v in out.items()), flush=True)
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(args.profile)
    return out


if __name__ == "__main__":
    main()
