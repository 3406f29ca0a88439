"""The interpret stage: markers, associations, pathways, and recovery of known links."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ..constants import Key
from .associations import associate
from .markers import domain_markers
from .pathways import load_pathways, pathway_enrichment

log = logging.getLogger(__name__)


def candidate_names(annotation: str) -> list[str]:
    """'Glucose [M+H]+;Fructose [M+H]+' → ['Glucose', 'Fructose'] (every candidate kept)."""
    out = []
    for part in str(annotation or "").split(";"):
        part = part.strip()
        if part:
            out.append(part.rsplit(" [", 1)[0])
    return list(dict.fromkeys(out))


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
    fdr = float(params.get("fdr", 0.05))
    hv = rna.var[Key.var.highly_variable].to_numpy() if Key.var.highly_variable in rna.var else None
    markers = pd.concat([domain_markers(rna, labels, "rna", hv), domain_markers(msi, labels, "msi")],
                        ignore_index=True)
    ann = msi.var[Key.var.annotation] if Key.var.annotation in msi.var else pd.Series("", msi.var_names)
    markers["annotation"] = markers["feature"].map(ann).where(markers["modality"] == "msi", "")
    assoc = associate(rna, msi, n_genes=int(params.get("n_genes", 500)))

    # pathway enrichment: per domain, top up-regulated genes + metabolite candidates
    table = load_pathways(params.get("pathway_table"))
    met_names = {f: candidate_names(a) for f, a in ann.items()}
    universe = set(rna.var_names) | {n for v in met_names.values() for n in v}
    n_top = int(params.get("n_markers", 25))
    query = {}
    for d, grp in markers[(markers["qval"] <= fdr) & (markers["log2fc"] > 0)].groupby("domain"):
        top = grp.nsmallest(n_top, "qval")
        genes = set(top.loc[top["modality"] == "rna", "feature"])
        mets = {n for f in top.loc[top["modality"] == "msi", "feature"] for n in met_names.get(f, [])}
        query[f"domain_{d}"] = genes | mets
    pathways = pathway_enrichment(query, universe, table)

    summary = {
        "n_domains": int(len(np.unique(labels))),
        "markers_significant": int((markers["qval"] <= fdr).sum()),
        "associations_tested": int(len(assoc)),
        "associations_significant": int((assoc["qval"] <= fdr).sum()),
        "pathways_significant": int((pathways["qval"] <= fdr).sum()) if len(pathways) else 0,
        "fdr": fdr,
        "association_method": "pearson",
        "top_associations": assoc.head(10)[["metabolite_feature", "annotation", "gene", "r", "qval"]]
        .to_dict(orient="records"),
    }
    if truth_dir is not None and (Path(truth_dir) / "links.tsv").exists():
        truth_links = pd.read_csv(Path(truth_dir) / "links.tsv", sep="\t")
        summary["link_recovery"] = link_recovery(assoc, truth_links, fdr)
    log.info("interpret: %d significant markers, %d/%d significant associations, %d pathways",
             summary["markers_significant"], summary["associations_significant"],
             summary["associations_tested"], summary["pathways_significant"])
    return {"markers": markers, "associations": assoc, "pathways": pathways, "summary": summary}
