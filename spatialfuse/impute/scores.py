"""Per-feature scores of predicted against measured maps: Pearson, Spearman and map SSIM.

SSIM compares the *images*: spots are rasterised onto a square grid with the spot pitch as cell
size (collisions averaged, empty cells masked out), each map is scaled to [0, 1] by its own
minimum and maximum (so SSIM measures structure and contrast, not units or shrinkage of the
overall level), and the structural similarity index (Wang et al. 2004, Gaussian window
σ = 1.5 cells) is averaged over the cells the tissue covers. Local statistics ignore empty cells
(mask-normalised filtering), so tissue borders and holes do not count as dark pixels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

from ..metrics import columnwise_corr

#: SSIM stabilising constants for maps scaled to [0, 1] (Wang et al. 2004).
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2
#: Gaussian window of the local statistics (cells).
SSIM_SIGMA = 1.5


def spot_pitch_um(xy: np.ndarray) -> float:
    """Median distance from a spot to its nearest neighbour (µm)."""
    xy = np.asarray(xy, float)
    if len(xy) < 2:
        return 1.0
    d, _ = cKDTree(xy).query(xy, k=2)
    pitch = float(np.median(d[:, 1]))
    return pitch if pitch > 0 else 1.0


def raster_index(xy: np.ndarray,
                 pitch_um: float | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Flat grid-cell index of every spot and the grid shape (rows, cols), cell = pitch."""
    xy = np.asarray(xy, float)
    pitch = pitch_um or spot_pitch_um(xy)
    ij = np.round((xy - xy.min(0)) / pitch).astype(np.int64)
    shape = (int(ij[:, 1].max()) + 1, int(ij[:, 0].max()) + 1)
    return ij[:, 1] * shape[1] + ij[:, 0], shape


def rasterise(values: np.ndarray, cells: np.ndarray, shape: tuple[int, int]):
    """(n_spots, p) values → (p, rows, cols) images (mean of the spots in a cell) and the mask of
    cells holding at least one spot."""
    values = np.asarray(values, float)
    if values.ndim == 1:
        values = values[:, None]
    n_cells = shape[0] * shape[1]
    count = np.bincount(cells, minlength=n_cells).astype(float)
    img = np.zeros((values.shape[1], n_cells))
    for j in range(values.shape[1]):
        img[j] = np.bincount(cells, weights=values[:, j], minlength=n_cells)
    mask = count > 0
    img[:, mask] /= count[mask]
    return img.reshape(values.shape[1], *shape), mask.reshape(shape)


def _local_mean(img: np.ndarray, mask: np.ndarray, wsum: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(img * mask, SSIM_SIGMA, mode="constant") / wsum


def masked_ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean SSIM of two images over the cells in ``mask`` (both scaled to [0, 1] first; a
    constant map scores NaN)."""
    out = []
    for img in (a, b):
        v = img[mask]
        lo, hi = float(v.min()), float(v.max())
        if not np.isfinite(hi - lo) or hi - lo <= 0:
            return float("nan")
        out.append(np.where(mask, (img - lo) / (hi - lo), 0.0))
    a, b = out
    m = mask.astype(float)
    wsum = ndimage.gaussian_filter(m, SSIM_SIGMA, mode="constant")
    wsum = np.where(wsum > 1e-8, wsum, 1.0)
    mu_a, mu_b = _local_mean(a, m, wsum), _local_mean(b, m, wsum)
    va = _local_mean(a * a, m, wsum) - mu_a**2
    vb = _local_mean(b * b, m, wsum) - mu_b**2
    cov = _local_mean(a * b, m, wsum) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)) / \
        ((mu_a**2 + mu_b**2 + SSIM_C1) * (va + vb + SSIM_C2))
    return float(s[mask].mean())


#: Columns handled at a time by :func:`feature_scores`, :func:`morans_i` and
#: :func:`feature_clusters` (bounds their copies of a spots × features matrix; every result
#: is per column).
SCORE_CHUNK = 256


def feature_scores(pred: np.ndarray, measured: np.ndarray, xy: np.ndarray,
                   rows: np.ndarray | None = None,
                   blocks: np.ndarray | None = None) -> pd.DataFrame:
    """Per feature (column): Pearson r, Spearman r and map SSIM of ``pred`` against
    ``measured`` over the spots ``rows`` (bool mask; default all). SSIM uses the map of those
    spots only (other cells masked). With ``blocks`` (held-out block per spot), also
    ``pearson_r_block`` (:func:`blockwise_pearson`)."""
    pred, measured = np.asarray(pred), np.asarray(measured)
    rows = np.ones(len(pred), bool) if rows is None else np.asarray(rows, bool)
    cells, shape = raster_index(np.asarray(xy, float), spot_pitch_um(xy))
    cells = cells[rows]
    blk = None if blocks is None else np.asarray(blocks)[rows]
    parts = []
    # every score is per column: a few hundred columns at a time keep the copies, ranks and
    # images of a 10^5-spot section at a fraction of the matrix's size (same numbers)
    for j0 in range(0, max(pred.shape[1], 1), SCORE_CHUNK):
        cols = slice(j0, j0 + SCORE_CHUNK)
        P = np.asarray(pred[rows, cols], float)
        M = np.asarray(measured[rows, cols], float)
        img_p, mask = rasterise(P, cells, shape)
        img_m, _ = rasterise(M, cells, shape)
        part = pd.DataFrame({
            "pearson_r": columnwise_corr(P, M),
            "spearman_r": columnwise_corr(P, M, method="spearman"),
            "ssim": np.array([masked_ssim(img_p[j], img_m[j], mask) for j in range(P.shape[1])],
                             dtype=float)})
        if blk is not None:
            part["pearson_r_block"] = blockwise_pearson(P, M, blk)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


#: Fewest spots a held-out block needs to get a within-block correlation.
BLOCK_MIN_SPOTS = 5


def blockwise_pearson(pred: np.ndarray, measured: np.ndarray, blocks: np.ndarray,
                      min_spots: int = BLOCK_MIN_SPOTS) -> np.ndarray:
    """Per feature: Pearson r computed *within* each held-out block, averaged over the blocks
    (weighted by their spot count; blocks with fewer than ``min_spots`` spots or a constant map
    skipped; NaN when no block is left).

    Pooled out-of-fold r mixes predictions of different fold models: a level shift between
    blocks (each fold model is fitted on the other blocks, so a block whose mean is high is
    predicted from training spots whose mean is low) pulls the pooled r down, even to negative
    values, although the map inside every block is right. The within-block r scores only the
    pattern inside each block and is blind to that shift (and to true differences between the
    blocks), so the two are reported side by side."""
    pred, measured = np.asarray(pred, float), np.asarray(measured, float)
    blocks = np.asarray(blocks)
    num = np.zeros(pred.shape[1])
    den = np.zeros(pred.shape[1])
    for b in np.unique(blocks):
        rows = blocks == b
        if rows.sum() < min_spots:
            continue
        r = columnwise_corr(pred[rows], measured[rows])
        ok = np.isfinite(r)
        num[ok] += rows.sum() * r[ok]
        den[ok] += rows.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


#: Moran's I above which a measured feature counts as spatially structured.
SPATIAL_MORAN_MIN = 0.2


def morans_i(X: np.ndarray, xy: np.ndarray, k: int = 6) -> np.ndarray:
    """Moran's I of every column on the row-normalised k-NN graph of the spots (0: no spatial
    structure; 1: a smooth map)."""
    from ..graph import knn_graph, row_normalise

    X = np.asarray(X)
    W = row_normalise(knn_graph(xy, k=k))
    out = np.empty(X.shape[1])
    for j0 in range(0, X.shape[1], SCORE_CHUNK):  # per column: chunks bound the copies
        c = slice(j0, j0 + SCORE_CHUNK)
        Xc = np.asarray(X[:, c], float)
        Z = Xc - Xc.mean(0)
        sd = np.sqrt((Z**2).mean(0))
        Z = Z / np.where(sd > 0, sd, 1.0)
        out[c] = (Z * (W @ Z)).mean(0)
    return out


def summarise(scores: pd.DataFrame, spatial: np.ndarray | None = None) -> dict:
    """Median and mean of each score column (NaN-free), and the number of features scored;
    with ``spatial`` (a boolean mask of the features whose measured map is spatially
    structured, :func:`morans_i` ≥ :data:`SPATIAL_MORAN_MIN`), also the median Pearson r over
    those features only (``median_pearson_spatial``; the same features for every method).
    A ``pearson_r_block`` column (within-block r) gives ``median_pearson_block`` (and, with
    ``spatial``, ``median_pearson_block_spatial``)."""
    def finite(v: np.ndarray) -> np.ndarray:
        return v[np.isfinite(v)]

    def median(v: np.ndarray) -> float:
        return float(np.median(v)) if v.size else float("nan")

    out: dict = {}
    for c in ("pearson_r", "spearman_r", "ssim", "pearson_r_block"):
        if c in scores:
            v = finite(scores[c].to_numpy(float))
            name = c.replace("_r", "")
            out[f"median_{name}"] = median(v)
            out[f"mean_{name}"] = float(np.mean(v)) if v.size else float("nan")
    out["n_features"] = int(len(scores))
    if spatial is not None:
        spatial = np.asarray(spatial, bool)
        out["median_pearson_spatial"] = median(finite(scores["pearson_r"].to_numpy(float)[spatial]))
        out["n_features_spatial"] = int(spatial.sum())
        if "pearson_r_block" in scores:
            out["median_pearson_block_spatial"] = median(
                finite(scores["pearson_r_block"].to_numpy(float)[spatial]))
    return out


#: bootstrap resamples of :func:`paired_median_difference`
N_BOOT = 2000
#: features whose measured maps correlate at least this much (|Pearson r|, average linkage)
#: form one cluster of :func:`feature_clusters`, resampled as one unit
CLUSTER_MIN_ABS_R = 0.5


def feature_clusters(Y: np.ndarray, min_abs_r: float = CLUSTER_MIN_ABS_R) -> np.ndarray:
    """Cluster label of each column of ``Y`` (spots × features, the *measured* values):
    average-linkage clustering on 1 − |r| between the features' maps, cut where the average
    |r| between two clusters falls below ``min_abs_r``. Features that a domain moves together
    (markers of one region, the genes of one program) end up in one cluster; a feature with no
    variance is a cluster of its own. Chosen from the measured data alone, the same for every
    method."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    Y = np.asarray(Y, float)
    n = Y.shape[1]
    labels = np.arange(n)
    if n < 2:
        return labels
    if not np.isfinite(Y).all():
        Y = np.where(np.isfinite(Y), Y, np.nan)
    sd = np.concatenate([np.nanstd(Y[:, j0:j0 + SCORE_CHUNK], 0)  # chunks: nanstd copies
                         for j0 in range(0, n, SCORE_CHUNK)])
    var = np.isfinite(sd) & (sd > 0)
    if var.sum() < 2:
        return labels
    Z = Y[:, var] if not var.all() else Y.copy()
    Z -= np.nanmean(Z, 0)  # in place: one spots × features copy, not five
    Z /= sd[var]
    np.nan_to_num(Z, copy=False)
    C = np.clip(np.abs(Z.T @ Z) / len(Z), 0, 1)
    D = 1 - C
    np.fill_diagonal(D, 0)
    lab = fcluster(linkage(squareform(D, checks=False), method="average"),
                   t=1 - float(min_abs_r), criterion="distance")
    labels[var] = n + lab  # above every singleton label
    return np.unique(labels, return_inverse=True)[1]


def _weighted_medians(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Median of ``values`` with each repeated ``weights[b]`` times, for every row ``b`` (the
    median of the resampled list, as :func:`numpy.median` would give it)."""
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[:, order]
    c = np.cumsum(w, 1)
    total = c[:, -1]
    lo_rank, hi_rank = (total - 1) // 2, total // 2  # 0-based ranks of the middle element(s)
    lo = (c > lo_rank[:, None]).argmax(1)
    hi = (c > hi_rank[:, None]).argmax(1)
    return 0.5 * (v[lo] + v[hi])


def paired_median_difference(a: np.ndarray, b: np.ndarray, seed: int = 0,
                             n_boot: int = N_BOOT, strata: np.ndarray | None = None,
                             clusters: np.ndarray | None = None) -> dict:
    """Is method ``a`` better than method ``b`` on the same features? ``a``, ``b``: per-feature
    scores (e.g. held-out Pearson r), paired by position; features where either is NaN are left
    out. Returns the difference of the medians, its 95 % bootstrap interval (pairs kept
    together; with ``strata``, e.g. the run each feature comes from, resampled within each
    stratum), the Wilcoxon signed-rank p of the per-feature differences, the feature count and
    a ``verdict``: ``better`` / ``worse`` when the whole interval lies above / below 0, ``tie``
    otherwise (``n/a`` under 5 paired features).

    Without ``clusters`` the features are resampled one by one, as if independent. Genes and
    ions co-vary (a domain moves many at once), and then the interval is too narrow. With
    ``clusters`` (a label per feature, e.g. :func:`feature_clusters` of the measured maps;
    within a stratum when ``strata`` is given) whole clusters are resampled with replacement,
    so a block of features that moves together counts as one piece of evidence."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = int(a.size)
    out = {"difference": float("nan"), "ci95_low": float("nan"), "ci95_high": float("nan"),
           "wilcoxon_p": float("nan"), "n_features": n, "verdict": "n/a"}
    if clusters is not None:
        out["n_clusters"] = 0
    if n < 5:
        return out
    from scipy.stats import wilcoxon

    out["difference"] = float(np.median(a) - np.median(b))
    rng = np.random.default_rng(seed)
    st = np.zeros(n, int) if strata is None else np.unique(np.asarray(strata)[ok], return_inverse=True)[1]
    if clusters is None:
        if strata is None:
            idx = rng.integers(0, n, size=(n_boot, n))
        else:
            groups = [np.nonzero(st == g)[0] for g in np.unique(st)]
            idx = np.concatenate([g[rng.integers(0, g.size, size=(n_boot, g.size))] for g in groups], 1)
        boot = np.median(a[idx], axis=1) - np.median(b[idx], axis=1)
    else:
        # one unit per (stratum, cluster); each stratum draws as many units as it has
        unit = np.unique(np.c_[st, np.asarray(clusters)[ok]], axis=0, return_inverse=True)[1].ravel()
        n_units = int(unit.max()) + 1
        unit_stratum = np.zeros(n_units, int)
        unit_stratum[unit] = st
        out["n_clusters"] = n_units
        boot = np.empty(n_boot)
        for lo in range(0, n_boot, 250):  # chunks bound the (resamples × features) weights
            m = min(250, n_boot - lo)
            counts = np.zeros((m, n_units), np.int64)
            for g in np.unique(unit_stratum):
                u = np.nonzero(unit_stratum == g)[0]
                counts[:, u] = rng.multinomial(u.size, np.full(u.size, 1 / u.size), size=m)
            w = counts[:, unit]
            boot[lo:lo + m] = _weighted_medians(a, w) - _weighted_medians(b, w)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    out["ci95_low"], out["ci95_high"] = float(lo), float(hi)
    d = a - b
    if np.any(d != 0):
        out["wilcoxon_p"] = float(wilcoxon(d, zero_method="wilcox").pvalue)
    out["verdict"] = "better" if lo > 0 else "worse" if hi < 0 else "tie"
    return out
