"""m/z annotation against a metabolite table, with adducts and a ppm tolerance.

Every candidate within tolerance is kept (isomers share a formula; different adducts of different
metabolites can share an m/z): ``var['annotation']`` lists them all, ``;``-separated, and
``annotation_table`` returns one row per (peak, candidate) for downstream stages.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ..constants import Key

#: mass shifts (Da) of common MSI adducts, z = 1
ADDUCTS = {
    "[M+H]+": 1.007276,
    "[M+Na]+": 22.989218,
    "[M+K]+": 38.963158,
    "[M+NH4]+": 18.033823,
    "[M-H]-": -1.007276,
    "[M+Cl]-": 34.969402,
    "[M-H2O-H]-": -19.01784,
}


def load_metabolite_table(path: str | Path | None = None) -> pd.DataFrame:
    """Read a metabolite table (TSV/CSV with ``name`` and ``monoisotopic_mass``; optional
    ``formula``, ``hmdb_id``, ``chebi_id``, ``kegg_id``). ``None`` → the shipped default."""
    if path is None:
        path = resources.files("spatialfuse.resources") / "metabolites.tsv"
    path = Path(str(path))
    sep = "\t" if path.suffix in (".tsv", ".gz") or path.name.endswith(".tsv.gz") else ","
    t = pd.read_csv(path, sep=sep)
    missing = {"name", "monoisotopic_mass"} - set(t.columns)
    if missing:
        raise ValueError(f"metabolite table {path} lacks columns {sorted(missing)}")
    return t


def annotation_table(mz: np.ndarray, table: pd.DataFrame, adducts: list[str],
                     tol_ppm: float) -> pd.DataFrame:
    """All (peak index, candidate) pairs within ``tol_ppm``: columns peak, mz, name, formula,
    adduct, theoretical_mz, error_ppm (plus any id columns of the table)."""
    unknown = [a for a in adducts if a not in ADDUCTS]
    if unknown:
        raise ValueError(f"unknown adducts {unknown}; known: {list(ADDUCTS)}")
    rows = []
    mass = table["monoisotopic_mass"].to_numpy(dtype=float)
    for add in adducts:
        theo = mass + ADDUCTS[add]
        order = np.argsort(theo)
        ts = theo[order]
        lo = np.searchsorted(ts, mz * (1 - tol_ppm * 1e-6), side="left")
        hi = np.searchsorted(ts, mz * (1 + tol_ppm * 1e-6), side="right")
        for i in np.nonzero(hi > lo)[0]:
            for j in order[lo[i]:hi[i]]:
                rows.append((i, mz[i], j, add, theo[j], (mz[i] - theo[j]) / theo[j] * 1e6))
    cols = ["peak", "mz", "row", "adduct", "theoretical_mz", "error_ppm"]
    df = pd.DataFrame(rows, columns=cols)
    extra = [c for c in table.columns if c not in ("monoisotopic_mass",)]
    df = df.join(table[extra].reset_index(drop=True), on="row").drop(columns="row")
    return df.sort_values(["peak", "error_ppm"], key=lambda s: s.abs() if s.name == "error_ppm" else s)


def annotate_mz(adata: ad.AnnData, table: pd.DataFrame, adducts: list[str],
                tol_ppm: float = 5.0) -> pd.DataFrame:
    """Annotate ``adata.var['mz']`` in place; returns the long candidate table.

    Writes ``var['annotation']`` ('name [adduct]' for every candidate, ``;``-separated, empty if
    none) and ``var['n_candidates']``.
    """
    mz = adata.var[Key.var.mz].to_numpy(dtype=float)
    long = annotation_table(mz, table, adducts, tol_ppm)
    labels = [""] * len(mz)
    counts = np.zeros(len(mz), dtype=int)
    for peak, grp in long.groupby("peak"):
        labels[peak] = ";".join(f"{n} {a}" for n, a in zip(grp["name"], grp["adduct"]))
        counts[peak] = len(grp)
    adata.var[Key.var.annotation] = labels
    adata.var[Key.var.n_candidates] = counts
    long.insert(0, "feature", adata.var_names[long["peak"].to_numpy()])
    return long.drop(columns="peak").reset_index(drop=True)
