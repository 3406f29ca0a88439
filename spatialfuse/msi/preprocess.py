"""MSI preprocessing: tissue mask, normalisation, off-tissue (matrix) peak detection."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ..constants import Key
from ..errors import InputError

log = logging.getLogger(__name__)

NORMALISATIONS = ("tic", "rms", "median", "reference", "none")


def _otsu(v: np.ndarray, bins: int = 256) -> float:
    hist, edges = np.histogram(v, bins=bins)
    mids = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * mids) / np.maximum(w0, 1)
    m1 = (np.sum(hist * mids) - np.cumsum(hist * mids)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(mids[np.argmax(between)])


def tissue_mask(adata: ad.AnnData, method: str = "otsu", exclude: np.ndarray | None = None,
                statistic: str = "signal") -> np.ndarray:
    """Classify pixels as tissue: Otsu threshold on the log signal of the non-excluded peaks,
    then a spatial clean-up on the pixel raster (closing, hole filling, small specks removed).

    ``exclude``: boolean mask of features (e.g. matrix peaks) left out of the signal, since
    matrix ions cover the whole slide. Pixels with no signal at all are background and do not
    take part in the threshold. ``statistic``: 'signal' (log total intensity) or 'detected'
    (number of peaks detected, robust when strong matrix ions dominate the intensity).
    ``method='all'`` marks every pixel as tissue.
    """
    if method == "all":
        return np.ones(adata.n_obs, dtype=bool)
    X = adata.layers.get(Key.layers.intensity, adata.X)
    if exclude is not None and exclude.any() and (~exclude).any():
        X = X[:, ~exclude]
    if statistic == "detected":
        signal = np.diff(sp.csr_matrix(X).indptr).astype(float) if sp.issparse(X) else (
            np.asarray(X) > 0).sum(1).astype(float)
    else:
        signal = np.log1p(np.asarray(X.sum(1)).ravel())
    pos = signal > 0
    if pos.sum() < 2 or np.ptp(signal[pos]) == 0:
        return pos if pos.any() else np.ones(adata.n_obs, dtype=bool)
    mask = signal > _otsu(signal[pos])
    mask = _clean_on_raster(mask, adata.obs[Key.obs.x].to_numpy(), adata.obs[Key.obs.y].to_numpy())
    # a raster that is all tissue (no background) gives a meaningless split; keep everything
    if mask.mean() < 0.02:
        return np.ones(adata.n_obs, dtype=bool)
    return mask


def _clean_on_raster(mask: np.ndarray, x: np.ndarray, y: np.ndarray,
                     min_component: float = 0.01) -> np.ndarray:
    """Morphological closing + hole filling + removal of components smaller than
    ``min_component`` of the tissue, on the imzML pixel grid."""
    from scipy import ndimage

    x0, y0 = x - x.min(), y - y.min()
    img = np.zeros((int(y0.max()) + 1, int(x0.max()) + 1), dtype=bool)
    img[y0, x0] = mask
    img = ndimage.binary_closing(img, structure=np.ones((3, 3)), border_value=0)
    img = ndimage.binary_fill_holes(img)
    img = ndimage.binary_opening(img, structure=np.ones((2, 2)))
    lab, n = ndimage.label(img)
    if n > 1:
        sizes = ndimage.sum(img, lab, index=np.arange(1, n + 1))
        keep = np.nonzero(sizes >= min_component * sizes.sum())[0] + 1
        img = np.isin(lab, keep)
    return img[y0, x0]


def flag_matrix_peaks(adata: ad.AnnData, on_tissue: np.ndarray, ratio: float = 1.5) -> np.ndarray:
    """Peaks whose mean off-tissue intensity exceeds ``ratio`` × their mean on-tissue intensity."""
    if on_tissue.all() or (~on_tissue).all():
        return np.zeros(adata.n_vars, dtype=bool)
    X = adata.layers.get(Key.layers.intensity, adata.X)
    on = np.asarray(X[on_tissue].mean(0)).ravel()
    off = np.asarray(X[~on_tissue].mean(0)).ravel()
    return off > ratio * np.maximum(on, 1e-12)


def normalise(X, method: str = "tic", reference_idx: int | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
    """Per-pixel normalisation; returns (normalised X, per-pixel factors).

    tic: divide by total ion count; rms: root mean square; median: median of non-zero peaks;
    reference: one reference peak; none. Factors are rescaled to median 1 so intensities keep
    their units' order of magnitude.
    """
    if method not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {method!r}; choose from {NORMALISATIONS}")
    X = sp.csr_matrix(X, dtype=np.float64)
    n = X.shape[0]
    if method == "none":
        f = np.ones(n)
    elif method == "tic":
        f = np.asarray(X.sum(1)).ravel()
    elif method == "rms":
        f = np.sqrt(np.asarray(X.multiply(X).sum(1)).ravel() / X.shape[1])
    elif method == "median":
        f = np.array([np.median(X.data[X.indptr[i]:X.indptr[i + 1]]) if X.indptr[i + 1] > X.indptr[i]
                      else 0.0 for i in range(n)])
    else:
        if reference_idx is None:
            raise ValueError("reference normalisation needs a reference peak")
        f = np.asarray(X[:, reference_idx].todense()).ravel()
    pos = f > 0
    scale = np.median(f[pos]) if pos.any() else 1.0
    f = np.where(pos, f / scale, np.inf)
    Xn = sp.diags(1.0 / f) @ X
    return sp.csr_matrix(Xn, dtype=np.float32), f


def preprocess_msi(
    adata: ad.AnnData,
    *,
    normalisation: str = "tic",
    reference_mz: float | None = None,
    tissue_mask_method: str = "otsu",
    matrix_ratio: float = 1.5,
    remove_matrix_peaks: bool = True,
    min_pixel_fraction: float = 0.01,
    sample: str | None = None,
) -> tuple[ad.AnnData, dict]:
    """Tissue mask, matrix-peak flags, normalisation and log transform.

    Writes ``layers['intensity']`` (raw), ``X`` = log1p(normalised), ``obs['on_tissue']``,
    ``var['matrix_peak']``; off-tissue pixels are kept (alignment uses them) but statistics use
    on-tissue pixels only. Returns the new AnnData and a QC dict.
    """
    a = adata.copy()
    a.layers[Key.layers.intensity] = sp.csr_matrix(a.X, dtype=np.float32)
    qc: dict = {"pixels": int(a.n_obs), "peaks_input": int(a.n_vars)}
    # first pass: mask from the number of detected peaks (matrix ions are everywhere but few),
    # flag matrix peaks against it, then re-mask on the intensity of the other peaks
    mask = tissue_mask(a, tissue_mask_method, statistic="detected")
    matrix = flag_matrix_peaks(a, mask, matrix_ratio)
    if matrix.any():
        mask = tissue_mask(a, tissue_mask_method, exclude=matrix)
        matrix = flag_matrix_peaks(a, mask, matrix_ratio)
    a.obs[Key.obs.on_tissue] = mask
    a.var[Key.var.matrix_peak] = matrix
    detected = np.asarray((a.layers[Key.layers.intensity][mask] > 0).mean(0)).ravel()
    rare = detected < min_pixel_fraction
    qc.update(pixels_on_tissue=int(mask.sum()), matrix_peaks=int(matrix.sum()),
              rare_peaks=int(rare.sum()))
    drop = rare | (matrix if remove_matrix_peaks else np.zeros_like(matrix))
    if drop.all():
        raise InputError("every m/z peak is either off-tissue or too rare; check the tissue mask "
                         "or set ingest.msi.remove_matrix_peaks: false", sample)
    a = a[:, ~drop].copy()
    ref_idx = None
    if normalisation == "reference":
        if reference_mz is None:
            raise InputError("normalisation 'reference' needs ingest.msi.reference_mz", sample)
        ref_idx = int(np.argmin(np.abs(a.var[Key.var.mz].to_numpy() - reference_mz)))
    Xn, f = normalise(a.layers[Key.layers.intensity], normalisation, ref_idx)
    Xn.data = np.log1p(Xn.data)
    a.X = Xn
    a.obs["norm_factor"] = f
    empty = ~np.isfinite(f)
    if empty.any():
        a.X = sp.csr_matrix(sp.diags((~empty).astype(np.float32)) @ a.X)
        a.obs.loc[empty, Key.obs.on_tissue] = False
    qc.update(peaks_after=int(a.n_vars), empty_pixels=int(empty.sum()), normalisation=normalisation)
    log.info("MSI: %d pixels (%d on tissue), %d -> %d peaks (%d matrix, %d rare removed)",
             a.n_obs, mask.sum(), qc["peaks_input"], a.n_vars, matrix.sum(), rare.sum())
    return a, qc
