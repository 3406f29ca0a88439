"""QC filters, normalisation and highly variable genes for spots/bins (scanpy underneath)."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ..constants import Key
from ..errors import InputError

log = logging.getLogger(__name__)


def preprocess_st(
    adata: ad.AnnData,
    *,
    min_counts: int = 10,
    min_genes: int = 5,
    max_pct_mt: float = 50.0,
    min_spots_per_gene: int = 3,
    target_sum: float | None = 1e4,
    n_top_genes: int = 2000,
    in_tissue_only: bool = True,
    sample: str | None = None,
) -> tuple[ad.AnnData, dict]:
    """Filter spots and genes, log-normalise, flag highly variable genes.

    Keeps raw counts in ``layers['counts']``; ``X`` = log1p(counts / total × ``target_sum``);
    writes ``obs`` total_counts / n_genes_by_counts / pct_counts_mt and ``var['highly_variable']``.
    Returns the new AnnData and a dict of QC numbers (before/after).
    """
    import scanpy as sc

    a = adata.copy()
    qc: dict = {"spots_input": int(a.n_obs), "genes_input": int(a.n_vars)}
    if in_tissue_only and Key.obs.in_tissue in a.obs:
        a = a[a.obs[Key.obs.in_tissue].astype(bool)].copy()
    qc["spots_in_tissue"] = int(a.n_obs)
    has_counts = Key.layers.counts in a.layers
    if has_counts:
        a.X = a.layers[Key.layers.counts].copy()
    a.var[Key.var.mt] = a.var_names.str.upper().str.startswith("MT-")
    sc.pp.calculate_qc_metrics(a, qc_vars=[Key.var.mt], percent_top=None, log1p=False, inplace=True)
    if has_counts:
        keep = (
            (a.obs[Key.obs.total_counts] >= min_counts)
            & (a.obs[Key.obs.n_genes] >= min_genes)
            & (a.obs[Key.obs.pct_mt] <= max_pct_mt)
        )
        qc["spots_removed_low_counts"] = int((a.obs[Key.obs.total_counts] < min_counts).sum())
        qc["spots_removed_low_genes"] = int((a.obs[Key.obs.n_genes] < min_genes).sum())
        qc["spots_removed_high_mt"] = int((a.obs[Key.obs.pct_mt] > max_pct_mt).sum())
        a = a[keep.to_numpy()].copy()
        gene_spots = np.asarray((a.X > 0).sum(0)).ravel()
        a = a[:, gene_spots >= min_spots_per_gene].copy()
    if a.n_obs < 10:
        raise InputError(f"only {a.n_obs} spots pass QC (min_counts={min_counts}, "
                         f"min_genes={min_genes}, max_pct_mt={max_pct_mt}); loosen ingest.st",
                         sample, adata.uns.get(Key.uns.spatialfuse, {}).get("source"))
    if has_counts:
        sc.pp.normalize_total(a, target_sum=target_sum)
        sc.pp.log1p(a)
    a.X = sp.csr_matrix(a.X, dtype=np.float32)
    n_hvg = int(min(n_top_genes, a.n_vars))
    try:
        sc.pp.highly_variable_genes(a, n_top_genes=n_hvg, flavor="seurat")
    except Exception as exc:  # tiny or degenerate data: fall back to top-variance genes
        log.warning("highly_variable_genes failed (%s); using the top-variance genes", exc)
        X = a.X.toarray()
        order = np.argsort(-X.var(0))[:n_hvg]
        hv = np.zeros(a.n_vars, bool)
        hv[order] = True
        a.var[Key.var.highly_variable] = hv
    a.uns.pop("log1p", None)
    qc.update(spots_after_qc=int(a.n_obs), genes_after_qc=int(a.n_vars),
              highly_variable_genes=int(a.var[Key.var.highly_variable].sum()),
              median_counts_per_spot=float(np.median(a.obs[Key.obs.total_counts])),
              median_genes_per_spot=float(np.median(a.obs[Key.obs.n_genes])))
    log.info("ST QC: %d -> %d spots, %d -> %d genes, %d HVG", qc["spots_input"], a.n_obs,
             qc["genes_input"], a.n_vars, qc["highly_variable_genes"])
    return a, qc
