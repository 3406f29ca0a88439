"""A small synthetic results tree in the pipeline's output layout, for the report tests.

Two samples share three domain programmes (stripes across the section) but number them
differently, so the report's domain matching can be checked: sample ``a`` has a truth folder,
sample ``b`` has none and is flagged for poor registration. Models: ``pca`` (no training curve)
and ``vae`` (loss + val_loss), with labels that are permutations of the programmes.
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mudata as md  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

md.set_options(pull_on_update=False)

#: sample → model → permutation (programme k is written as label perm[k])
PERMUTATIONS = {"a": {"pca": [2, 0, 1], "vae": [1, 2, 0]},
                "b": {"pca": [1, 0, 2], "vae": [0, 2, 1]}}
TRUTH_OF_A = [0, 1, 2]  # the truth numbers programme k as k
N_GENES, N_METS = 40, 12


def _png(path: Path, text: str) -> None:
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.text(0.5, 0.5, text, ha="center")
    ax.axis("off")
    fig.savefig(path, dpi=40)
    plt.close(fig)


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def build_tree(root: Path, samples=("a", "b"), models=("pca", "vae"), *, truth_for=("a",),
               flag=("b",), pathways=True, seed=0) -> dict:
    """Write ``root/results/...`` and ``root/truth/{sample}/spots.tsv``; return what the tests
    need to know (truth folders, programme of every spot)."""
    rng = np.random.default_rng(seed)
    res = root / "results"
    gx, gy = np.meshgrid(np.arange(12), np.arange(10))
    xy = np.c_[gx.ravel() * 100.0 + 50 * (gy.ravel() % 2) + 300, gy.ravel() * 86.6 + 300]
    prog = np.digitize(xy[:, 0], np.quantile(xy[:, 0], [1 / 3, 2 / 3]))  # 3 vertical stripes
    centroids = rng.normal(0, 1, (3, N_GENES)) * 2
    met_centroids = rng.normal(0, 1, (3, N_METS))
    genes = [f"G{i:03d}" for i in range(N_GENES)]
    mets = [f"mz_{100 + 7.1 * i:.4f}" for i in range(N_METS)]
    info = {"truth": {}, "programme": {}}
    for s in samples:
        bc = np.array([f"{s.upper()}{i:04d}-1" for i in range(len(xy))])
        info["programme"][s] = pd.Series(prog, index=bc)
        d = res / s
        for sub in ("ingest", "align", "impute", "domains", "interpret"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        _write_json(d / "ingest/qc.json", {"sample": s, "st": {"spots_after_qc": len(xy)},
                                           "st_meta": {"spot_diameter_um": 55.0}})
        st = ad.AnnData(np.zeros((len(xy), 1), np.float32), obs=pd.DataFrame(index=bc))
        st.obsm["spatial"] = xy
        st.write_h5ad(d / "ingest/st.h5ad")
        _png(d / "ingest/qc.png", f"{s} ingest")
        flagged = s in flag
        qc = {"sample": s, "msi_pixel_size_um": 50.0, "transform": {"mean_scale": 1.0},
              "tissue_dice": 0.41 if flagged else 0.95, "spots": len(xy),
              "spots_covered": len(xy) - (30 if flagged else 0),
              "warnings": ["tissue overlap (Dice 0.41) is below align.min_dice=0.6: the "
                           "registration may be wrong"] if flagged else [],
              "flagged": flagged, "new_key_from_align": {"nested": 1.5, "text": "x"},
              "affine_uncertainty_um": 7.3}
        if s in truth_for:  # its tissue cut at the capture edge (b: a sliver, not reported)
            qc.update(truth_error_um_median=12.5, truth_error_um_p90=30.0,
                      truth_error_um_median_in_capture=9.5, msi_tissue_outside_capture=0.18)
        else:
            qc["msi_tissue_outside_capture"] = 0.01
        _write_json(d / "align/qc.json", qc)
        px = np.array([(x, y) for x in np.arange(250, 1600, 50.0)
                       for y in np.arange(250, 1200, 50.0)])
        msi_al = ad.AnnData(np.zeros((len(px), 1), np.float32),
                            obs=pd.DataFrame({"on_tissue": px[:, 0] < 1500},
                                             index=[f"p{i}" for i in range(len(px))]))
        msi_al.obsm["spatial"] = px
        msi_al.write_h5ad(d / "align/msi_aligned.h5ad")
        _png(d / "align/overlay.png", f"{s} overlay")
        X = centroids[prog] + rng.normal(0, 0.5, (len(xy), N_GENES))
        M = met_centroids[prog] + rng.normal(0, 0.5, (len(xy), N_METS))
        rna = ad.AnnData(X.astype(np.float32), obs=pd.DataFrame(index=bc),
                         var=pd.DataFrame(index=genes))
        msi = ad.AnnData(M.astype(np.float32), obs=pd.DataFrame(index=bc),
                         var=pd.DataFrame({"mz": [float(m[3:]) for m in mets],
                                           "annotation": [f"Met{i} [M+H]+" if i % 3 else ""
                                                          for i in range(N_METS)]}, index=mets))
        md.MuData({"rna": rna, "msi": msi}).write(d / "align/paired.h5mu")
        msi.layers["imputed_knn_smooth"] = M.astype(np.float32)
        msi.layers["imputed_gnn_reconstruction"] = M.astype(np.float32)
        msi.layers["imputed_ridge_from_rna"] = (met_centroids[prog] * 0.7).astype(np.float32)
        msi.layers["imputed_vae_from_rna"] = (met_centroids[prog] * 0.5).astype(np.float32)
        md.MuData({"rna": rna, "msi": msi}).write(d / "impute/imputed.h5mu")
        r = rng.uniform(0.2, 0.9, N_METS)
        # the VAE leads the cross-modal methods (as in metrics.json); the location-only
        # reference (no layer: not a method) and the denoising methods score higher still (the
        # latter read the metabolites themselves)
        methods = [("rna_to_msi", "ridge_from_rna", r), ("rna_to_msi", "vae_from_rna", r + 0.03),
                   ("rna_to_msi", "location", r + 0.06),
                   ("denoise", "knn_smooth", r + 0.05), ("denoise", "gnn_reconstruction", r + 0.1)]
        pd.DataFrame({"modality": "msi", "task": np.repeat([t for t, _, _ in methods], N_METS),
                      "method": np.repeat([m for _, m, _ in methods], N_METS),
                      "feature": mets * len(methods),
                      "pearson_r": np.concatenate([v for _, _, v in methods])}).to_csv(
            d / "impute/feature_scores.tsv", sep="\t", index=False)
        _write_json(d / "impute/metrics.json",
                    {"crossmodal": {"rna_to_msi": {
                        "ridge": {"median_pearson": float(np.median(r))},
                        "vae": {"median_pearson": float(np.median(r)) + 0.03},
                        "location": {"median_pearson": float(np.median(r)) + 0.06,
                                     "median_pearson_block": 0.1},
                        "model_vs_baselines": {"method": "vae", "baseline": "ridge",
                                               "difference": 0.03, "ci95_low": 0.01,
                                               "ci95_high": 0.05, "verdict": "better"}}},
                     "cv": {"scheme": "spatial_blocks"}})
        _png(d / "impute/prediction.png", f"{s} prediction")
        for m in models:
            (d / "model" / m).mkdir(parents=True, exist_ok=True)
            Z = np.c_[np.eye(3)[prog] * 3, rng.normal(0, 0.3, (len(xy), 5))]
            e = ad.AnnData(obs=pd.DataFrame(index=bc))
            e.obsm["spatial"] = xy
            e.obsm[f"X_{m}"] = Z.astype(np.float32)
            e.write_h5ad(d / "model" / m / "embedding.h5ad")
            if m == "pca":
                (d / "model" / m / "train_log.tsv").write_text("epoch\tloss\tseconds\n0\t\t1.2\n")
            else:
                ep = np.arange(1, 31)
                pd.DataFrame({"epoch": ep, "loss": 2 / ep + 0.1, "recon_rna": 1 / ep,
                              "val_loss": 2.2 / ep + 0.15, "seconds": ep * 0.1}).to_csv(
                    d / "model" / m / "train_log.tsv", sep="\t", index=False)
            _write_json(d / "model" / m / "metrics.json", {"model": m, "embedding_dim": 8})
            lab = np.asarray(PERMUTATIONS.get(s, {}).get(m, [0, 1, 2]))[prog]
            pd.DataFrame({"barcode": bc, "domain": lab}).to_csv(d / "domains" / f"{m}.tsv",
                                                                sep="\t", index=False)
            dm = {"n_domains": 3, "model": m, "neighbour_agreement": 0.9, "chaos_um": 120.0}
            if s in truth_for:
                dm.update(ari=1.0, nmi=1.0)
            _write_json(d / "domains" / f"{m}_metrics.json", dm)
        pairs = [(mt, g) for mt in mets for g in genes[:10]]
        rr = rng.uniform(-0.3, 0.3, len(pairs))
        rr[0], rr[5] = 0.8, -0.7
        q = np.where(np.abs(rr) > 0.5, 1e-8, 0.5)
        pd.DataFrame({"metabolite_feature": [p[0] for p in pairs],
                      "mz": [float(p[0][3:]) for p in pairs],
                      "annotation": [msi.var.loc[p[0], "annotation"] for p in pairs],
                      "gene": [p[1] for p in pairs], "r": rr, "pval": q, "method": "pearson",
                      "qval": q}).sort_values("qval").to_csv(d / "interpret/associations.tsv",
                                                             sep="\t", index=False)
        cols = ["query", "pathway_id", "pathway_name", "overlap", "pathway_size", "query_size",
                "pval", "members", "qval"]
        pw = pd.DataFrame([["domain_0", "R-1", "Glycolysis", 3, 10, 20, 1e-4, "A;B;C", 1e-3],
                           ["domain_1", "R-2", "TCA cycle", 2, 12, 20, 0.2, "D;E", 0.4]],
                          columns=cols) if pathways else pd.DataFrame(columns=cols)
        pw.to_csv(d / "interpret/pathways.tsv", sep="\t", index=False)
        top = [{"metabolite_feature": mets[0], "annotation": "", "gene": genes[0], "r": 0.8,
                "qval": 1e-8}]
        summ = {"n_domains": 3, "associations_tested": len(pairs),
                "associations_significant": 2, "fdr": 0.05, "top_associations": top}
        if s in truth_for:
            summ["link_recovery"] = {"true_positives": 1, "true_links_tested": 2, "precision": 0.5}
        _write_json(d / "interpret/summary.json", summ)
        _png(d / "interpret/associations.png", f"{s} associations")
        prov = res / "provenance"
        prov.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([(s, "st", f"{s}/st.h5", 10, "0" * 64)],
                     columns=["sample", "input", "file", "bytes", "sha256"]).to_csv(
            prov / f"{s}.sha256.tsv", sep="\t", index=False)
        if s in truth_for:
            t = root / "truth" / s
            t.mkdir(parents=True, exist_ok=True)
            extra = pd.DataFrame({"domain": [-1]}, index=pd.Index([f"{s}-outside"], name="barcode"))
            pd.concat([pd.DataFrame({"domain": np.asarray(TRUTH_OF_A)[prog]},
                                    index=pd.Index(bc, name="barcode")), extra]).to_csv(
                t / "spots.tsv", sep="\t")
            info["truth"][s] = str(t)
    bench = res / "benchmarks" / "aggregate"
    bench.mkdir(parents=True, exist_ok=True)
    (bench / "aggregate.tsv").write_text("s\th:m:s\tmax_rss\n3.5\t0:00:03\t250.1\n")
    # a models benchmark run on these results (benchmarks/models_benchmark.py --out)
    (res / "benchmarks" / "models_benchmark.tsv").write_text(
        "part\tsample\tmethod\tari\tnmi\ndemo\ta\tgnn\t0.9871\t0.97\n"
        "demo\ta\tSpatialMETA\t0.7692\t0.87\n")
    return info


AGGREGATE_NAMES = ["metrics", "spots", "matching", "links", "pathways", "prediction",
                   "domains_figure",
                   "composition_figure", "registration_figure", "training_figure", "umap_figure",
                   "imputation_figure", "associations_figure", "pathways_figure", "metrics_figure"]


def aggregate_outputs(root: Path) -> dict[str, Path]:
    out = {}
    for n in AGGREGATE_NAMES:
        out[n] = root / "results" / "aggregate" / (f"figures/{n}.png" if n.endswith("figure")
                                                    else f"{n}.tsv")
    return out


def make_report(root: Path, samples=("a", "b"), models=("pca", "vae"), conditions=None,
                cohort=(), **tree_kw) -> dict:
    """Build the tree, run the aggregate stage and the summary page; return paths and info."""
    from conftest import REPO

    from spatialfuse.report import ResultsTree, build_summary, run_aggregate
    from spatialfuse.report.summary import read_captions

    info = build_tree(root, samples, models, **tree_kw)
    tree = ResultsTree(root / "results")
    outputs = aggregate_outputs(root)
    conditions = conditions or {}
    tables = run_aggregate(tree, list(samples), list(models), outputs, truth=info["truth"],
                           conditions=conditions, reference_model="pca", seed=0,
                           params={"umap_max_spots": 500})
    html = root / "results" / "report.html"
    sheet = {s: {"sample": s, "st": f"{s}/st", "msi": f"{s}.imzML",
                 "condition": conditions.get(s, ""), "truth": info["truth"].get(s, "")}
             for s in samples}
    res = root / "results"
    build_summary(
        title="Test report", config={"seed": 0, "device": "cpu", "model": {"vae": {"seed": 3}}},
        samples_info=sheet, models=list(models), reference_model="pca", tree=tree,
        aggregate=outputs,
        sample_figures={"ingest_qc": {s: res / s / "ingest/qc.png" for s in samples},
                        "align_overlay": {s: res / s / "align/overlay.png" for s in samples},
                        "impute": {s: res / s / "impute/prediction.png" for s in samples},
                        "associations": {s: res / s / "interpret/associations.png"
                                         for s in samples}},
        captions=read_captions(sorted((REPO / "workflow" / "report").glob("*.rst"))),
        checksums=[res / "provenance" / f"{s}.sha256.tsv" for s in samples],
        cohort=list(cohort), params={"map_max_spots": 5000},
        bench_dir=res / "benchmarks", out_path=html)
    return {"html": html, "outputs": outputs, "tables": tables, "info": info, "tree": tree}
