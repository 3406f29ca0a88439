"""MSI preprocessing: tissue mask, off-tissue (matrix) peaks, normalisation, transform.

Everything works on the CSR matrix of raw intensities without densifying it and without copying
it more than once: per-pixel and per-peak statistics are sparse matrix-vector products or
passes over blocks of rows, so memory stays a small multiple of the stored peaks (see
``benchmarks/ingest_benchmark.py``).
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ..constants import Key
from ..errors import InputError

log = logging.getLogger(__name__)

NORMALISATIONS = ("tic", "rms", "median", "reference", "none")
TRANSFORMS = ("log1p", "sqrt", "none")
_ROWS = 8192  # rows per block in the block-wise passes (bounds their temporary memory)


def _raw(adata: ad.AnnData) -> sp.csr_matrix:
    X = adata.layers[Key.layers.intensity] if Key.layers.intensity in adata.layers else adata.X
    return X if sp.isspmatrix_csr(X) or isinstance(X, sp.csr_array) else sp.csr_matrix(X)


def _blocks(n: int):
    for a in range(0, n, _ROWS):
        yield a, min(n, a + _ROWS)


def _row_reduce(X: sp.csr_matrix, fn, keep_cols: np.ndarray | None = None) -> np.ndarray:
    """``fn(values of the row)`` for every row, over the kept columns (vectorised per block:
    ``fn`` receives (block values, per-row start positions, per-row counts))."""
    out = np.zeros(X.shape[0])
    for a, b in _blocks(X.shape[0]):
        lo, hi = X.indptr[a], X.indptr[b]
        v = X.data[lo:hi]
        rel = (X.indptr[a:b + 1] - lo).astype(np.int64)
        if keep_cols is not None:
            s = keep_cols[X.indices[lo:hi]]
            c = np.r_[0, np.cumsum(s)]
            v, rel = v[s], c[rel]
        out[a:b] = fn(np.asarray(v, dtype=np.float64), rel)
    return out


def _segment_sum(v: np.ndarray, rel: np.ndarray) -> np.ndarray:
    c = np.r_[0.0, np.cumsum(v)]
    return c[rel[1:]] - c[rel[:-1]]


def _otsu(v: np.ndarray, bins: int = 256) -> tuple[float, float]:
    """Otsu threshold and its effectiveness (between-class / total variance, 0–1)."""
    hist, edges = np.histogram(v, bins=bins)
    mids = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * mids) / np.maximum(w0, 1)
    m1 = (np.sum(hist * mids) - np.cumsum(hist * mids)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2 / max(w0[-1], 1) ** 2
    k = int(np.argmax(between))
    total = float(np.var(v))
    return float(mids[k]), float(between[k] / total) if total > 0 else 0.0


def tissue_mask(adata: ad.AnnData, method: str = "otsu", exclude: np.ndarray | None = None,
                statistic: str = "signal") -> np.ndarray:
    """Classify pixels as tissue: Otsu threshold on the log signal of the non-excluded peaks,
    then a spatial clean-up on the pixel raster (closing, hole filling, small specks removed).

    Reads ``layers['intensity']`` (else ``X``). ``exclude``: boolean mask of features (e.g.
    matrix peaks) left out of the signal, since matrix ions cover the whole slide. Pixels with no
    signal at all are background and do not take part in the threshold. ``statistic``: 'signal'
    (log total intensity) or 'detected' (number of peaks detected, robust when strong matrix ions
    dominate the intensity). ``method='all'`` marks every pixel as tissue.
    """
    if method == "all":
        return np.ones(adata.n_obs, dtype=bool)
    X = _raw(adata)
    keep = None
    if exclude is not None and exclude.any() and (~exclude).any():
        keep = ~exclude
    if statistic == "detected":
        signal = _row_reduce(X, lambda v, rel: _segment_sum((v > 0).astype(float), rel), keep)
    else:
        signal = np.log1p(_row_reduce(X, _segment_sum, keep))
    pos = signal > 0
    if pos.sum() < 2 or np.ptp(signal[pos]) == 0:
        return pos if pos.any() else np.ones(adata.n_obs, dtype=bool)
    # pixels without signal are background; whether they take part in the threshold (a clean
    # tissue/empty split) or not (background with some signal) is decided by which separates
    # better, by Otsu's effectiveness measure
    t_pos, eta_pos = _otsu(signal[pos])
    t_all, eta_all = _otsu(signal) if (~pos).any() else (t_pos, -1.0)
    mask = signal > (t_all if eta_all > eta_pos else t_pos)
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


def _column_means(X: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """Mean of every column over the selected rows (a sparse mat-vec, no row copy)."""
    w = rows.astype(X.dtype)
    return np.asarray(X.T @ w, dtype=np.float64).ravel() / max(int(rows.sum()), 1)


def off_tissue_ratio(adata: ad.AnnData, on_tissue: np.ndarray) -> np.ndarray:
    """Per peak: mean off-tissue intensity / mean on-tissue intensity (inf when absent on
    tissue, nan when the mask has no off-tissue or no on-tissue pixels)."""
    if on_tissue.all() or (~on_tissue).all():
        return np.full(adata.n_vars, np.nan)
    X = _raw(adata)
    on, off = _column_means(X, on_tissue), _column_means(X, ~on_tissue)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(on > 0, off / np.where(on > 0, on, 1), np.where(off > 0, np.inf, 0.0))


def flag_matrix_peaks(adata: ad.AnnData, on_tissue: np.ndarray, ratio: float = 1.5) -> np.ndarray:
    """Peaks whose mean off-tissue intensity exceeds ``ratio`` × their mean on-tissue intensity."""
    r = off_tissue_ratio(adata, on_tissue)
    return np.nan_to_num(r, nan=0.0) > ratio


def _detected_fraction(X: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """Per column: fraction of the selected rows with a non-zero value."""
    counts = np.zeros(X.shape[1], np.int64)
    for a, b in _blocks(X.shape[0]):
        r = np.nonzero(rows[a:b])[0] + a
        if r.size:
            sub = X[r]
            counts += np.bincount(sub.indices[sub.data > 0], minlength=X.shape[1])
    return counts / max(int(rows.sum()), 1)


def _keep_columns(X: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """``X[:, keep]`` in two block-wise passes into preallocated arrays (one copy at most)."""
    if keep.all():
        return X
    remap = (np.cumsum(keep) - 1).astype(np.int32)
    n = X.shape[0]
    counts = np.zeros(n, np.int64)
    for a, b in _blocks(n):
        lo = X.indptr[a]
        s = keep[X.indices[lo:X.indptr[b]]]
        c = np.r_[0, np.cumsum(s)]
        rel = X.indptr[a:b + 1] - lo
        counts[a:b] = c[rel[1:]] - c[rel[:-1]]
    indptr = np.r_[0, np.cumsum(counts)]
    data = np.empty(int(indptr[-1]), X.dtype)
    indices = np.empty(int(indptr[-1]), np.int32)
    for a, b in _blocks(n):
        lo, hi = X.indptr[a], X.indptr[b]
        s = keep[X.indices[lo:hi]]
        data[indptr[a]:indptr[b]] = X.data[lo:hi][s]
        indices[indptr[a]:indptr[b]] = remap[X.indices[lo:hi][s]]
    idx_t = np.int32 if indptr[-1] < 2**31 else np.int64
    return sp.csr_matrix((data, indices.astype(idx_t, copy=False), indptr.astype(idx_t)),
                         shape=(n, int(keep.sum())))


def normalisation_factors(X, method: str = "tic", reference_idx: int | None = None) -> np.ndarray:
    """Per-pixel factors, rescaled to median 1 over the pixels where they are positive (inf
    where a pixel has no signal for the method).

    tic: total ion count; rms: root mean square over the peaks; median: median of the non-zero
    peaks; reference: the intensity of one reference peak; none: 1.
    """
    if method not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {method!r}; choose from {NORMALISATIONS}")
    X = X if sp.issparse(X) else sp.csr_matrix(np.asarray(X, dtype=np.float64))
    X = sp.csr_matrix(X)
    n = X.shape[0]
    if method == "none":
        return np.ones(n)
    if method == "tic":
        f = _row_reduce(X, _segment_sum)
    elif method == "rms":
        f = np.sqrt(_row_reduce(X, lambda v, rel: _segment_sum(v * v, rel)) / X.shape[1])
    elif method == "median":
        def med(v, rel):
            return np.array([np.median(v[rel[k]:rel[k + 1]][v[rel[k]:rel[k + 1]] > 0])
                             if np.any(v[rel[k]:rel[k + 1]] > 0) else 0.0
                             for k in range(rel.size - 1)])
        f = _row_reduce(X, med)
    else:
        if reference_idx is None:
            raise ValueError("reference normalisation needs a reference peak")
        f = np.asarray(X[:, reference_idx].todense(), dtype=np.float64).ravel()
    pos = f > 0
    scale = np.median(f[pos]) if pos.any() else 1.0
    return np.where(pos, f / scale, np.inf)


def _scaled_transformed(X: sp.csr_matrix, f: np.ndarray, transform: str) -> np.ndarray:
    """The data array of ``diag(1/f) @ X`` after ``transform`` (same sparsity pattern)."""
    data = np.array(X.data, dtype=np.float32, copy=True)
    inv = (1.0 / f).astype(np.float32)
    for a, b in _blocks(X.shape[0]):
        lo, hi = X.indptr[a], X.indptr[b]
        data[lo:hi] *= np.repeat(inv[a:b], np.diff(X.indptr[a:b + 1]))
    if transform == "log1p":
        np.log1p(data, out=data)
    elif transform == "sqrt":
        np.sqrt(data, out=data)
    elif transform != "none":
        raise ValueError(f"unknown transform {transform!r}; choose from {TRANSFORMS}")
    return data


def normalise(X, method: str = "tic", reference_idx: int | None = None,
              transform: str = "none") -> tuple[sp.csr_matrix, np.ndarray]:
    """Per-pixel normalisation (see :func:`normalisation_factors`), then ``transform``
    (log1p, sqrt — variance-stabilising for Poisson-like counts — or none). Returns
    (normalised X as float32 CSR, per-pixel factors)."""
    X = sp.csr_matrix(X, dtype=np.float32)
    f = normalisation_factors(X, method, reference_idx)
    data = _scaled_transformed(X, f, transform)
    return sp.csr_matrix((data, X.indices, X.indptr), shape=X.shape), f


def preprocess_msi(
    adata: ad.AnnData,
    *,
    normalisation: str = "tic",
    reference_mz: float | None = None,
    reference_ppm: float = 10.0,
    transform: str = "log1p",
    tissue_mask_method: str = "otsu",
    matrix_ratio: float = 1.5,
    remove_matrix_peaks: bool = True,
    min_pixel_fraction: float = 0.01,
    sample: str | None = None,
) -> tuple[ad.AnnData, dict]:
    """Tissue mask, matrix-peak flags, normalisation and transform.

    Writes ``layers['intensity']`` (raw), ``X`` = transform(normalised), ``obs['on_tissue']``,
    ``obs['norm_factor']``, ``var['matrix_peak']`` and ``var['off_tissue_ratio']``; off-tissue
    pixels are kept (alignment uses them) but statistics use on-tissue pixels only. Peaks
    detected in fewer than ``min_pixel_fraction`` of the tissue pixels are dropped, and so are
    matrix peaks when ``remove_matrix_peaks``. The input is not modified. Returns the new AnnData
    and a QC dict (numbers before/after).
    """
    if normalisation not in NORMALISATIONS:
        raise InputError(f"unknown normalisation {normalisation!r}; choose from "
                         f"{list(NORMALISATIONS)}", sample)
    if transform not in TRANSFORMS:
        raise InputError(f"unknown transform {transform!r}; choose from {list(TRANSFORMS)}", sample)
    raw = _raw(adata)
    qc: dict = {"pixels": int(adata.n_obs), "peaks_input": int(adata.n_vars)}
    # first pass: mask from the number of detected peaks (matrix ions are everywhere but few),
    # flag matrix peaks against it, then re-mask on the intensity of the other peaks
    mask = tissue_mask(adata, tissue_mask_method, statistic="detected")
    matrix = flag_matrix_peaks(adata, mask, matrix_ratio)
    if matrix.any():
        mask = tissue_mask(adata, tissue_mask_method, exclude=matrix)
        matrix = flag_matrix_peaks(adata, mask, matrix_ratio)
    ratio = off_tissue_ratio(adata, mask)
    rare = _detected_fraction(raw, mask) < min_pixel_fraction
    qc.update(pixels_on_tissue=int(mask.sum()), matrix_peaks=int(matrix.sum()),
              rare_peaks=int(rare.sum()), matrix_peaks_removed=bool(remove_matrix_peaks))
    drop = rare | (matrix if remove_matrix_peaks else np.zeros_like(matrix))
    if drop.all():
        raise InputError("every m/z peak is either off-tissue or too rare; check the tissue mask "
                         "or set ingest.msi.remove_matrix_peaks: false", sample)
    kept = _keep_columns(raw, ~drop)
    var = adata.var.loc[~drop].copy()
    var[Key.var.matrix_peak] = matrix[~drop]
    var[Key.var.off_tissue_ratio] = ratio[~drop]
    ref_idx = None
    if normalisation == "reference":
        if reference_mz is None:
            raise InputError("normalisation 'reference' needs ingest.msi.reference_mz", sample)
        mz = var[Key.var.mz].to_numpy()
        ref_idx = int(np.argmin(np.abs(mz - reference_mz)))
        err = abs(mz[ref_idx] - reference_mz) / reference_mz * 1e6
        if err > reference_ppm:
            raise InputError(f"no kept peak within {reference_ppm:g} ppm of reference_mz "
                             f"{reference_mz} (nearest: {mz[ref_idx]:.4f}, {err:.0f} ppm)", sample)
    f = normalisation_factors(kept, normalisation, ref_idx)
    data = _scaled_transformed(kept, f, transform)
    obs = adata.obs.copy()
    obs[Key.obs.on_tissue] = mask
    obs[Key.obs.norm_factor] = f
    empty = ~np.isfinite(f)
    obs.loc[empty, Key.obs.on_tissue] = False
    # X and the raw layer share one sparsity pattern (indices/indptr arrays): one copy less
    a = ad.AnnData(X=sp.csr_matrix((data, kept.indices, kept.indptr), shape=kept.shape),
                   obs=obs, var=var, obsm={k: v for k, v in adata.obsm.items()},
                   uns=dict(adata.uns))
    a.layers[Key.layers.intensity] = kept
    a.uns.setdefault(Key.uns.spatialfuse, {})
    a.uns[Key.uns.spatialfuse] = {**a.uns[Key.uns.spatialfuse], "normalisation": normalisation,
                                  "transform": transform}
    qc.update(peaks_after=int(a.n_vars), empty_pixels=int(empty.sum()), normalisation=normalisation,
              transform=transform,
              median_tic_on_tissue=float(np.median(adata.obs[Key.obs.tic].to_numpy()[mask]))
              if Key.obs.tic in adata.obs and mask.any() else None)
    log.info("MSI: %d pixels (%d on tissue), %d -> %d peaks (%d matrix%s, %d rare removed), "
             "%s normalisation, %s transform", a.n_obs, mask.sum(), qc["peaks_input"], a.n_vars,
             matrix.sum(), " removed" if remove_matrix_peaks else " kept", rare.sum(),
             normalisation, transform)
    return a, qc
