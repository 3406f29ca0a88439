"""The interpret stage: markers, associations, pathways, and recovery of known links."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ..constants import Key
from .associations import associate, candidate_names, within_domain_associations
from .markers import domain_markers, top_markers
from .pathways import load_pathways, metabolite_key, pair_enrichment, pathway_enrichment
from .spatial_null import rotation_draws

log = logging.getLogger(__name__)


def link_recovery(assoc: pd.DataFrame, truth_links: pd.DataFrame, fdr: float,
                  mz_tol_ppm: float = 10.0) -> dict:
    """Precision/recall of significant (q ≤ fdr) metabolite–gene pairs against true links
    (matched by gene name and m/z within ``mz_tol_ppm``)."""
    sig = assoc[assoc["qval"] <= fdr]
    tested = assoc[["gene", "mz"]]

    def is_true(df):
        hit = np.zeros(len(df), bool)
        for _, t in truth_links.iterrows():
            hit |= (df["gene"].to_numpy() == t["gene"]) & (
                np.abs(df["mz"].to_numpy() - t["mz"]) / t["mz"] * 1e6 <= mz_tol_ppm)
        return hit

    tp = int(is_true(sig).sum())
    testable = int(is_true(tested).sum())
    return {"significant_pairs": int(len(sig)), "true_links": int(len(truth_links)),
            "true_links_tested": testable, "true_positives": tp,
            "precision": float(tp / len(sig)) if len(sig) else float("nan"),
            "recall": float(tp / testable) if testable else float("nan")}


def run_interpret(rna: ad.AnnData, msi: ad.AnnData, labels: np.ndarray, params: dict,
                  truth_dir: str | Path | None = None, seed: int = 0) -> dict:
    """Markers, metabolite–gene associations (overall and within domains), pathway enrichment
    and, when ``truth_dir`` holds ``links.tsv``, recovery of the true links.

    ``params``: the config's ``interpret`` section (defaults as in the schema). Returns the
    tables ``markers``, ``associations``, ``associations_domains``, ``pathways`` and the
    ``summary`` dict (written to summary.json).
    """
    fdr = float(params.get("fdr", 0.05))
    method = str(params.get("association", "spatial"))
    n_top = int(params.get("n_top_pairs", 100))
    labels = np.asarray(labels)
    hv = rna.var[Key.var.highly_variable].to_numpy(bool) if Key.var.highly_variable in rna.var \
        else None
    markers = pd.concat([domain_markers(rna, labels, "rna", hv),
                         domain_markers(msi, labels, "msi")], ignore_index=True)
    ann = msi.var[Key.var.annotation].fillna("").astype(str) if Key.var.annotation in msi.var \
        else pd.Series("", index=msi.var_names)
    markers["annotation"] = markers["feature"].map(ann).where(markers["modality"] == "msi", "")

    xy = np.asarray(rna.obsm[Key.obsm.spatial], dtype=np.float64)[:, :2]
    warnings: list[str] = []
    draws = None
    if method == "spatial":
        draws = rotation_draws(xy, int(params.get("n_null", 200)), seed=seed)
        if draws.n_draws < int(params.get("n_null", 200)):
            warnings.append(f"interpret: only {draws.n_draws} rotations of the section overlap "
                            "it enough for the spatial null (asked for "
                            f"{int(params.get('n_null', 200))})")
    assoc = associate(rna, msi, labels=labels, n_genes=int(params.get("n_genes", 500)),
                      method=method, smooth_k=int(params.get("smooth_k", 6)),
                      adjust_domains=bool(params.get("adjust_domains", True)), seed=seed,
                      draws=draws)
    top = assoc[assoc["qval"] <= fdr].head(n_top)
    if len(top) < n_top:  # within-domain view of the best pairs even when few are significant
        top = assoc.head(n_top)
    if draws is None:
        draws = rotation_draws(xy, int(params.get("n_null", 200)), seed=seed)
    by_domain = within_domain_associations(rna, msi, top, labels, draws)

    # pathways: per domain (top up-regulated genes + metabolite candidates), over the
    # significant associations (their genes and metabolites pooled), and pair-level
    table = load_pathways(params.get("pathway_table"))
    # metabolites meet the pathway table's compounds under a normalised name key
    met_names = {f: list(dict.fromkeys(metabolite_key(c) for c in candidate_names(a)))
                 for f, a in ann.items()}
    universe = set(rna.var_names) | {n for v in met_names.values() for n in v}
    query = {}
    tm = top_markers(markers, int(params.get("n_markers", 25)), fdr)
    for d, grp in tm.groupby("domain"):
        genes = set(grp.loc[grp["modality"] == "rna", "feature"])
        mets = {n for f in grp.loc[grp["modality"] == "msi", "feature"]
                for n in met_names.get(f, [])}
        query[f"domain_{d}"] = genes | mets
    sig = assoc[assoc["qval"] <= fdr].head(n_top)
    if len(sig):
        query["associations"] = set(sig["gene"]) | {
            n for f in sig["metabolite_feature"] for n in met_names.get(f, [])}
    tested_genes = set(assoc["gene"])
    assoc_universe = tested_genes | {n for v in met_names.values() for n in v}
    pw = [pathway_enrichment({k: v for k, v in query.items() if k != "associations"},
                             universe, table)]
    if "associations" in query:
        pw.append(pathway_enrichment({"associations": query["associations"]}, assoc_universe,
                                     table))
    long = assoc[["metabolite_feature", "gene", "qval"]].assign(
        metabolite=assoc["metabolite_feature"].map(met_names))
    long = long.explode("metabolite").dropna(subset=["metabolite"])
    pw.append(pair_enrichment(long, long["qval"].to_numpy() <= fdr, table, min_overlap=1))
    pathways = pd.concat([p for p in pw if len(p)], ignore_index=True) if any(len(p) for p in pw) \
        else pw[0]
    if len(pathways):
        pathways = pathways.sort_values(["qval", "pval"], kind="stable").reset_index(drop=True)

    n_sig = int((assoc["qval"] <= fdr).sum())
    summary = {
        "n_domains": int(len(np.unique(labels))),
        "markers_significant": int((markers["qval"] <= fdr).sum()),
        "associations_tested": int(len(assoc)),
        "associations_significant": n_sig,
        "associations_significant_pearson": int((assoc["pearson_qval"] <= fdr).sum()),
        "within_domain_significant": int((by_domain["qval"] <= fdr).sum()) if len(by_domain)
        else 0,
        "pathways_significant": int((pathways["qval"] <= fdr).sum()) if len(pathways) else 0,
        "fdr": fdr,
        "association_method": method,
        "null_draws": int(draws.n_draws),
        "null_overlap": round(draws.overlap, 4),
        "median_n_eff": float(np.median(assoc["n_eff"])) if "n_eff" in assoc else float(len(xy)),
        "top_associations": assoc.head(10)[["metabolite_feature", "annotation", "gene", "r",
                                            "qval"]].to_dict(orient="records"),
        "top_markers": top_markers(markers, 3, fdr)[
            ["domain", "modality", "feature", "annotation", "log2fc", "auroc", "qval"]]
        .to_dict(orient="records"),
    }
    if warnings:
        summary["warnings"] = warnings
    if truth_dir is not None and (Path(truth_dir) / "links.tsv").exists():
        truth_links = pd.read_csv(Path(truth_dir) / "links.tsv", sep="\t")
        summary["link_recovery"] = link_recovery(assoc, truth_links, fdr)
        summary["link_recovery_pearson"] = link_recovery(
            assoc.assign(qval=assoc["pearson_qval"]), truth_links, fdr)
    log.info("interpret: %d significant markers, %d/%d significant associations (%s; plain "
             "Pearson: %d), %d pathways", summary["markers_significant"], n_sig,
             summary["associations_tested"], method, summary["associations_significant_pearson"],
             summary["pathways_significant"])
    return {"markers": markers, "associations": assoc, "associations_domains": by_domain,
            "pathways": pathways, "summary": summary}
