"""Interpret stage: calibration of the spatial null, power on shared fields, speed and memory.

Parts (``--parts``):
* ``calibration`` — independent smooth random fields (the demo's wavelengths, 0.6–2 mm) on a
  Visium-like hex section: share of pairs called at p < α by the rotation null (raw and
  kNN-smoothed statistic) and by plain Pearson, over ``--reps`` replicate sections;
* ``power`` — a gene and a metabolite sharing one smooth field (amplitude and noise roughly
  as the demo's links) among independent ones: share of shared pairs found at p < 0.01 and
  p < 1e-4 (about what BH needs over 18,000 pairs);
* ``scale`` — wall time and peak memory (tracemalloc: Python/numpy allocations) of
  ``associate`` on synthetic sections of growing size (spots × genes × metabolites, draws);
* ``demo`` — precision and recall of the demo's true links from a finished run (``--results``).

Run on a shared machine under ``flock /tmp/spatialfuse_heavy.lock``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatialfuse.graph import knn_graph, row_normalise  # noqa: E402
from spatialfuse.interpret import (associate, link_recovery, rotation_draws,  # noqa: E402
                                   spatial_correlation_test)
from spatialfuse.simulate.fields import SmoothField  # noqa: E402


def hex_section(radius_um: float, pitch: float = 100.0) -> np.ndarray:
    dy = pitch * np.sqrt(3) / 2
    n = int(2.2 * radius_um / dy) + 2
    r, c = np.meshgrid(np.arange(n), np.arange(2 * n), indexing="ij")
    keep = (c % 2) == (r % 2)
    xy = np.c_[c[keep] * pitch / 2, r[keep] * dy]
    v = xy - xy.mean(0)
    return xy[np.hypot(*v.T) < radius_um]


def fields(rng, xy, k, noise=0.5):
    return np.stack([SmoothField.random(rng)(xy) for _ in range(k)], 1) + noise * rng.normal(
        size=(len(xy), k))


def calibration(reps: int, seed: int) -> pd.DataFrame:
    rows = []
    for rep in range(reps):
        rng = np.random.default_rng([seed, rep])
        xy = hex_section(1100.0)
        A, B = fields(rng, xy, 40), fields(rng, xy, 40)
        draws = rotation_draws(xy, 200, seed=rep)
        W = row_normalise(knn_graph(xy, 6, include_self=True))
        n = len(xy)
        for name, sm in (("spatial, raw", None), ("spatial, kNN-smoothed", W)):
            out = spatial_correlation_test(A, B, draws, smoother=sm)
            for a in (0.05, 0.01, 0.001):
                rows.append((rep, name, a, float((out["pval"] < a).mean())))
        r = spatial_correlation_test(A, B, draws)["r"]
        p = 2 * stats.t.sf(np.abs(r * np.sqrt((n - 2) / (1 - r**2))), n - 2)
        for a in (0.05, 0.01, 0.001):
            rows.append((rep, "plain Pearson", a, float((p < a).mean())))
    df = pd.DataFrame(rows, columns=["rep", "test", "alpha", "fpr"])
    return df.groupby(["test", "alpha"])["fpr"].agg(["mean", "min", "max"]).reset_index()


def power(reps: int, seed: int) -> pd.DataFrame:
    rows = []
    for rep in range(reps):
        rng = np.random.default_rng([seed, 100 + rep])
        xy = hex_section(1100.0)
        A, B = fields(rng, xy, 10, noise=0.8), fields(rng, xy, 10, noise=0.8)
        for k in range(5):  # 5 shared pairs (k, k): one field, the demo's link amplitudes
            f = SmoothField.random(rng)(xy)
            A[:, k] = rng.uniform(0.6, 0.9) * f + 0.8 * rng.normal(size=len(xy))
            B[:, k] = rng.uniform(0.6, 0.9) * f + 0.8 * rng.normal(size=len(xy))
        draws = rotation_draws(xy, 200, seed=rep)
        W = row_normalise(knn_graph(xy, 6, include_self=True))
        for name, sm in (("spatial, raw", None), ("spatial, kNN-smoothed", W)):
            p = spatial_correlation_test(A, B, draws, smoother=sm)["pval"]
            off = p[~np.eye(10, dtype=bool)]
            rows.append((rep, name, float((np.diag(p)[:5] < 1e-2).mean()),
                         float((np.diag(p)[:5] < 1e-4).mean()), float((off < 1e-2).mean())))
    cols = ["power_p<0.01", "power_p<1e-4", "fpr_p<0.01"]
    df = pd.DataFrame(rows, columns=["rep", "test", *cols])
    return df.groupby("test")[cols].mean().reset_index()


def scale(sizes, seed: int) -> pd.DataFrame:
    import anndata as ad

    rows = []
    for radius, n_genes, n_mets, n_draws in sizes:
        rng = np.random.default_rng(seed)
        xy = hex_section(radius)
        n = len(xy)
        rna = ad.AnnData(rng.normal(size=(n, n_genes)).astype(np.float32),
                         obsm={"spatial": xy})
        rna.var_names = [f"g{i}" for i in range(n_genes)]
        msi = ad.AnnData(rng.normal(size=(n, n_mets)).astype(np.float32), obsm={"spatial": xy})
        msi.var_names = [f"m{i}" for i in range(n_mets)]
        msi.var["mz"] = np.arange(n_mets) + 100.0
        labels = (xy[:, 0] > np.median(xy[:, 0])).astype(int)
        tracemalloc.start()
        t = time.perf_counter()
        associate(rna, msi, labels=labels, n_genes=n_genes, n_null=n_draws, seed=0)
        sec = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        rows.append((n, n_genes, n_mets, n_genes * n_mets, n_draws, round(sec, 1), round(peak)))
        print(rows[-1], flush=True)
    return pd.DataFrame(rows, columns=["spots", "genes", "metabolites", "pairs", "draws",
                                       "seconds", "peak_mb"])


def demo(results: Path) -> pd.DataFrame:
    rows = []
    for summ in sorted(results.glob("*/interpret/summary.json")):
        s = summ.parents[1].name
        d = json.loads(summ.read_text())
        assoc = pd.read_csv(summ.parent / "associations.tsv", sep="\t")
        truth = results / "demo" / s / "truth" / "links.tsv"
        if not truth.exists():
            continue
        tl = pd.read_csv(truth, sep="\t")
        for fdr in (0.05, 0.1, 0.2):
            for name, q in (("spatial", "qval"), ("plain Pearson", "pearson_qval")):
                lr = link_recovery(assoc.assign(qval=assoc[q]), tl, fdr)
                rows.append((s, name, fdr, lr["significant_pairs"], lr["true_positives"],
                             lr["true_links_tested"], lr["precision"], lr["recall"]))
        rows.append((s, "median n_eff", np.nan, np.nan, np.nan, np.nan, np.nan,
                     d.get("median_n_eff")))
    return pd.DataFrame(rows, columns=["sample", "test", "fdr", "significant", "true_pos",
                                       "true_tested", "precision", "recall"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", nargs="+", default=["calibration", "power", "scale", "demo"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--quick", action="store_true", help="smaller scale part")
    a = ap.parse_args()
    pd.set_option("display.width", 160)
    if "calibration" in a.parts:
        print("## false-positive rate on independent smooth fields\n",
              calibration(a.reps, a.seed).to_string(index=False), flush=True)
    if "power" in a.parts:
        print("## shared smooth field (demo link amplitude)\n",
              power(a.reps, a.seed).to_string(index=False), flush=True)
    if "scale" in a.parts:
        sizes = [(1100.0, 300, 60, 200), (3300.0, 500, 200, 200)]
        if not a.quick:
            sizes += [(3300.0, 2000, 500, 200), (16600.0, 200, 100, 100)]
        print("## associate: time and peak memory\n", scale(sizes, a.seed).to_string(index=False))
    if "demo" in a.parts:
        print("## demo: true links recovered\n", demo(a.results).to_string(index=False))


if __name__ == "__main__":
    main()
