"""Pathway over-representation of gene + metabolite sets (hypergeometric, BH FDR)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..metrics import bh_fdr


def load_pathways(path: str | Path | None = None) -> pd.DataFrame:
    """Pathway membership table (pathway_id, pathway_name, analyte_type gene|compound, name);
    ``None`` → the shipped Reactome + WikiPathways table."""
    if path is None:
        path = resources.files("spatialfuse.resources") / "pathways.tsv.gz"
    t = pd.read_csv(str(path), sep="\t", dtype=str)
    need = {"pathway_id", "pathway_name", "analyte_type", "name"}
    if need - set(t.columns):
        raise ValueError(f"pathway table {path} lacks columns {sorted(need - set(t.columns))}")
    t["key"] = t["name"].str.upper()
    return t


def pathway_enrichment(query: dict[str, set[str]], universe: set[str], table: pd.DataFrame,
                       min_overlap: int = 2) -> pd.DataFrame:
    """Hypergeometric test per (query set, pathway), genes and metabolites pooled.

    ``query``: name → set of analyte names (gene symbols and metabolite names); ``universe``:
    every analyte measured. Names compare case-insensitively.
    """
    uni = {u.upper() for u in universe}
    t = table[table["key"].isin(uni)]
    members = t.groupby("pathway_id")["key"].apply(set)
    names = t.drop_duplicates("pathway_id").set_index("pathway_id")["pathway_name"]
    N = len(uni)
    rows = []
    for qname, q in query.items():
        qs = {x.upper() for x in q} & uni
        if not qs:
            continue
        for pid, mem in members.items():
            k = len(qs & mem)
            if k < min_overlap:
                continue
            p = stats.hypergeom.sf(k - 1, N, len(mem), len(qs))
            rows.append((qname, pid, names[pid], k, len(mem), len(qs), p,
                         ";".join(sorted(qs & mem))))
    cols = ["query", "pathway_id", "pathway_name", "overlap", "pathway_size", "query_size",
            "pval", "members"]
    df = pd.DataFrame(rows, columns=cols)
    if len(df):
        df["qval"] = bh_fdr(df["pval"].to_numpy())
        df = df.sort_values("pval").reset_index(drop=True)
    else:
        df["qval"] = []
    return df
