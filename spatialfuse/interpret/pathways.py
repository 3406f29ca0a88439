"""Pathway over-representation of gene + metabolite sets (hypergeometric, BH FDR)."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import InputError
from ..metrics import bh_fdr


REQUIRED_COLUMNS = ("pathway_id", "pathway_name", "analyte_type", "name")

_SALT = re.compile(r"[\s,]*\(?\b(MONO|DI|TRI|TETRA)?(SODIUM|POTASSIUM|CALCIUM|LITHIUM|AMMONIUM)\b.*$"
                   r"|[\s,]*\(?\b(HYDROCHLORIDE|DIHYDROCHLORIDE|HCL|CHLORIDE|BROMIDE|ANHYDROUS|"
                   r"MONOHYDRATE|HYDRATE|TETRAHYDRATE|SALT)\b.*$")
_STEREO = re.compile(r"^(DL|D|L|\(\+\)|\(-\)|\(\+/-\)|[DL]\([+-]\))-")


def metabolite_key(name: str) -> str:
    """A name key under which a metabolite of the annotation table and a compound of the
    pathway table meet: upper case; salt, hydrate and counter-ion suffixes, charge states
    ("(2-)"), "zwitterion" and a leading stereo descriptor (L-, D-, DL-, (+)-; MSI cannot
    tell enantiomers apart) dropped; "-ic acid" read as "-ate" (acid and conjugate base are
    one m/z feature); spaces removed. 'L-Glutamic acid' and 'L-glutamate(1-)' both give
    'GLUTAMATE'."""
    s = str(name).upper().strip()
    for a, b in (("′", "'"), ("−", "-"), ("–", "-"), ("Α", "ALPHA"), ("Β", "BETA"),
                 ("Γ", "GAMMA")):
        s = s.replace(a, b)
    s = re.sub(r"\s+ZWITTERION$", "", s)
    s = re.sub(r"\s*\(\d*[+-]\)$", "", s)
    s = _SALT.sub("", s).strip()
    s = _STEREO.sub("", s)
    s = re.sub(r"IC ACID$", "ATE", s)
    return s.replace(" ", "")


def load_pathways(path: str | Path | None = None) -> pd.DataFrame:
    """Pathway membership table: one row per (pathway, analyte) with columns ``pathway_id``,
    ``pathway_name``, ``analyte_type`` (``gene`` or ``compound``) and ``name`` (gene symbol or
    metabolite name; other columns are kept). Tab-separated, optionally gzipped. ``None`` →
    the shipped Reactome + WikiPathways table (``spatialfuse/resources/SOURCE.md``).

    A user's table that cannot be read or lacks a column raises :class:`InputError` naming
    the file."""
    if path is None or str(path) == "":
        path = resources.files("spatialfuse.resources") / "pathways.tsv.gz"
    elif not Path(path).is_file():
        raise InputError("the pathway table (interpret.pathway_table) does not exist", path=path)
    try:
        t = pd.read_csv(str(path), sep="\t", dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as e:
        raise InputError(f"not a readable tab-separated pathway table ({type(e).__name__}: {e})",
                         path=path) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in t.columns]
    if missing:
        raise InputError(f"the pathway table lacks column(s) {missing} (needs "
                         f"{list(REQUIRED_COLUMNS)}, tab-separated)", path=path)
    t = t.dropna(subset=["pathway_id", "name"]).copy()
    t["analyte_type"] = t["analyte_type"].str.lower().str.strip()
    bad = sorted(set(t["analyte_type"].dropna()) - {"gene", "compound"})
    if bad:
        raise InputError(f"analyte_type must be 'gene' or 'compound', found {bad[:5]}", path=path)
    t["key"] = t["name"].str.strip().str.upper()
    comp = t["analyte_type"] == "compound"
    t.loc[comp, "key"] = t.loc[comp, "name"].map(metabolite_key)
    return t


def pathway_enrichment(query: dict[str, set[str]], universe: set[str], table: pd.DataFrame,
                       min_overlap: int = 2) -> pd.DataFrame:
    """Hypergeometric test per (query set, pathway), genes and metabolites pooled.

    ``query``: name → set of analyte names (gene symbols and metabolite names); ``universe``:
    every analyte measured. Names compare case-insensitively. BH FDR within each query over
    every pathway with a member in the universe (those with fewer than ``min_overlap`` query
    members count as p = 1 and are not listed). ``n_genes``/``n_metabolites``: how many of the
    overlap are genes and metabolites.
    """
    uni = {u.upper() for u in universe}
    t = table[table["key"].isin(uni)]
    members = t.groupby("pathway_id")["key"].apply(set)
    genes = set(t.loc[t["analyte_type"] == "gene", "key"])
    names = t.drop_duplicates("pathway_id").set_index("pathway_id")["pathway_name"]
    N = len(uni)
    cols = ["query", "pathway_id", "pathway_name", "overlap", "n_genes", "n_metabolites",
            "pathway_size", "query_size", "pval", "members", "qval"]
    parts = []
    for qname, q in query.items():
        qs = {x.upper() for x in q} & uni
        if not qs:
            continue
        rows = []
        for pid, mem in members.items():
            hit = qs & mem
            k = len(hit)
            p = stats.hypergeom.sf(k - 1, N, len(mem), len(qs)) if k else 1.0
            ng = len(hit & genes)
            rows.append((qname, pid, names[pid], k, ng, k - ng, len(mem), len(qs), p,
                         ";".join(sorted(hit))))
        df = pd.DataFrame(rows, columns=cols[:-1])
        df["qval"] = bh_fdr(df["pval"].to_numpy())
        parts.append(df[df["overlap"] >= min_overlap])
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["pval", "query", "pathway_id"], kind="stable").reset_index(drop=True)


def pair_enrichment(pairs: pd.DataFrame, significant: np.ndarray, table: pd.DataFrame,
                    min_overlap: int = 2) -> pd.DataFrame:
    """Pathways whose enzyme genes and metabolites are associated *with each other*.

    ``pairs``: every tested (metabolite, gene) pair, columns ``metabolite`` (one candidate name
    per row: a peak with several candidates contributes one row per candidate) and ``gene``;
    ``significant``: boolean per row. A pair belongs to a pathway when both its gene and its
    metabolite are members. Hypergeometric test of the significant pairs among the pathway's
    tested pairs, against all tested pairs (each distinct gene–metabolite pair counted once);
    BH FDR over every pathway with a tested pair (rows below ``min_overlap`` not listed).
    Columns as :func:`pathway_enrichment` with ``query = "associated pairs"`` and
    ``members`` the significant ``metabolite~gene`` pairs.
    """
    cols = ["query", "pathway_id", "pathway_name", "overlap", "pathway_size", "query_size",
            "pval", "members", "qval"]
    if not len(pairs):
        return pd.DataFrame(columns=cols)
    p = pd.DataFrame({"m": pairs["metabolite"].map(metabolite_key).to_numpy(),
                      "g": pairs["gene"].astype(str).str.upper().to_numpy(),
                      "sig": np.asarray(significant, bool),
                      "label": pairs["metabolite"].astype(str) + "~" + pairs["gene"].astype(str)})
    p = p.groupby(["m", "g"], sort=False).agg(sig=("sig", "any"), label=("label", "first"))
    p = p.reset_index()
    N, n_sig = len(p), int(p["sig"].sum())
    if not N or not n_sig:
        return pd.DataFrame(columns=cols)
    genes = table[table["analyte_type"] == "gene"]
    comps = table[table["analyte_type"] == "compound"]
    g_mem = genes[genes["key"].isin(set(p["g"]))].groupby("pathway_id")["key"].apply(set)
    m_mem = comps[comps["key"].isin(set(p["m"]))].groupby("pathway_id")["key"].apply(set)
    names = table.drop_duplicates("pathway_id").set_index("pathway_id")["pathway_name"]
    rows = []
    for pid in g_mem.index.intersection(m_mem.index):
        inside = p["g"].isin(g_mem[pid]).to_numpy() & p["m"].isin(m_mem[pid]).to_numpy()
        K = int(inside.sum())
        k = int((inside & p["sig"].to_numpy()).sum())
        if not K:
            continue
        pv = stats.hypergeom.sf(k - 1, N, K, n_sig) if k else 1.0
        rows.append(("associated pairs", pid, names[pid], k, K, n_sig, pv,
                     ";".join(sorted(p.loc[inside & p["sig"].to_numpy(), "label"]))))
    df = pd.DataFrame(rows, columns=cols[:-1])
    df["qval"] = bh_fdr(df["pval"].to_numpy()) if len(df) else []
    df = df[df["overlap"] >= min_overlap]
    return df.sort_values(["pval", "pathway_id"], kind="stable").reset_index(drop=True)
