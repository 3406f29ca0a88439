"""Resolution matching: MSI pixels → ST spots with area (partial-volume) weights.

Each MSI pixel is a square of side ``pixel_size_um`` in its own frame. It is sub-sampled on a
k×k lattice (k chosen so sub-cells are ≤ ``subcell_um``), every sub-cell centre is mapped into
the ST frame by the fitted transform, and a sub-cell contributes its area to the spot whose disk
(Visium) or square bin (Visium HD) contains it. ``W[spot, pixel]`` is then the area (µm²) of the
pixel inside the spot — the partial-volume weight — held as a sparse matrix, so memory grows with
the number of pixels, never pixels × spots.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from .transform import Transform


def overlap_weights(
    spot_xy: np.ndarray,
    spot_size_um: float,
    pixel_xy_native: np.ndarray,
    pixel_size_um: float,
    transform: Transform,
    *,
    spot_shape: str = "disk",
    subcell_um: float = 3.0,
    chunk: int = 20000,
) -> sp.csr_matrix:
    """Sparse (n_spots × n_pixels) matrix of overlap areas in µm² (ST frame)."""
    k = int(np.clip(np.ceil(pixel_size_um / subcell_um), 2, 16))
    off = ((np.arange(k) + 0.5) / k - 0.5) * pixel_size_um
    ox, oy = np.meshgrid(off, off)
    sub = np.stack([ox.ravel(), oy.ravel()], 1)  # k² offsets in the MSI frame
    det = abs(np.linalg.det(transform.linear))
    sub_area = (pixel_size_um / k) ** 2 * det
    tree = cKDTree(spot_xy)
    half = spot_size_um / 2
    # only pixels whose centre is within reach of some spot need sub-sampling
    reach = half + pixel_size_um * np.sqrt(det) * 0.75 + 1e-6
    centres_st = transform(pixel_xy_native)
    near = np.nonzero(np.isfinite(tree.query(centres_st, k=1, distance_upper_bound=reach)[0]))[0]
    rows, cols = [], []
    for start in range(0, near.size, chunk):
        idx = near[start:start + chunk]
        pts = (pixel_xy_native[idx, None, :] + sub[None, :, :]).reshape(-1, 2)
        q = transform(pts)
        d, j = tree.query(q, k=1)
        if spot_shape == "disk":
            hit = d <= half
        else:  # square bins: containment in the nearest bin's square
            dd = np.abs(q - spot_xy[np.minimum(j, len(spot_xy) - 1)])
            hit = np.isfinite(d) & (dd.max(1) <= half)
        pix = np.repeat(idx, k * k)
        rows.append(j[hit])
        cols.append(pix[hit])
    r = np.concatenate(rows) if rows else np.zeros(0, int)
    c = np.concatenate(cols) if cols else np.zeros(0, int)
    W = sp.csr_matrix((np.full(r.size, sub_area), (r, c)), shape=(len(spot_xy), len(pixel_xy_native)))
    W.sum_duplicates()
    return W


def aggregate(W: sp.csr_matrix, X, spot_area_um2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area-weighted mean of pixel values per spot.

    Returns (values (n_spots × n_features), covered fraction of each spot's area,
    number of pixels touching each spot).
    """
    tot = np.asarray(W.sum(1)).ravel()
    norm = sp.diags(np.where(tot > 0, 1.0 / np.maximum(tot, 1e-12), 0.0))
    V = norm @ W @ (X if sp.issparse(X) else np.asarray(X))
    V = V.toarray() if sp.issparse(V) else np.asarray(V)
    coverage = np.clip(tot / spot_area_um2, 0, None)
    n_pix = np.diff(W.indptr)
    return V.astype(np.float32), coverage, n_pix
