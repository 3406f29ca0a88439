"""Resolution matching: MSI pixels → ST spots with exact area (partial-volume) weights.

Each MSI pixel is a square of side ``pixel_size_um`` in its own frame (a rectangle where the
raster's x and y steps differ). Its four corners are
mapped into the ST frame by the fitted transform (affine and non-rigid), giving a quadrilateral;
neighbouring pixels share corners, so the mapped pixels tile the plane without gaps or overlaps.
``W[spot, pixel]`` is the exact area (µm²) of that quadrilateral inside the spot:

* Visium spots (disks): polygon ∩ disk, summed edge by edge as the signed area of the triangle
  (spot centre, edge) inside the circle — circular sectors where the edge runs outside the
  circle, the straight triangle where it runs inside;
* Visium HD bins (axis-aligned squares): the polygon clipped to the bin (Sutherland–Hodgman),
  then the shoelace area.

The only approximation is that a pixel's image under the smooth non-rigid field is taken as the
quadrilateral through its mapped corners (exact for affine transforms). ``W`` is a sparse
matrix built chunk by chunk, so memory grows with the number of pixels, never pixels × spots.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from ..pixels import pixel_xy
from .transform import Transform

_CORNERS = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])


def _cross(a, b):
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def polygon_disk_area(poly: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Exact area of convex-or-not simple polygons ``poly`` (m, V, 2) inside disks (m, 2), r."""
    p = poly - centre[:, None, :]
    a, b = p, np.roll(p, -1, axis=1)
    d = b - a
    dd = (d * d).sum(-1)
    ad = (a * d).sum(-1)
    aa = (a * a).sum(-1)
    disc = ad**2 - dd * (aa - radius**2)
    ok = (disc > 0) & (dd > 0)
    sq = np.sqrt(np.where(ok, disc, 0.0))
    dds = np.where(dd > 0, dd, 1.0)
    t1 = np.clip((-ad - sq) / dds, 0.0, 1.0)
    t2 = np.clip((-ad + sq) / dds, 0.0, 1.0)
    t1 = np.where(ok, t1, 0.0)
    t2 = np.where(ok, t2, 0.0)
    p1 = a + t1[..., None] * d
    p2 = a + t2[..., None] * d

    def angle(v, w):
        return np.arctan2(_cross(v, w), (v * w).sum(-1))

    contrib = 0.5 * radius**2 * (angle(a, p1) + angle(p2, b)) + 0.5 * _cross(p1, p2)
    return np.abs(contrib.sum(-1))


def polygon_box_area(poly: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Exact area of convex polygons ``poly`` (m, 4, 2) inside axis-aligned boxes [lo, hi]."""
    m, v0, _ = poly.shape
    vmax = v0 + 4
    P = np.zeros((m, vmax, 2))
    P[:, :v0] = poly
    nv = np.full(m, v0)
    rows = np.arange(m)
    # four half-planes: x >= lo_x, x <= hi_x, y >= lo_y, y <= hi_y  (sign * (coord - bound) >= 0)
    for axis, bound, sign in ((0, lo[:, 0], 1), (0, hi[:, 0], -1), (1, lo[:, 1], 1), (1, hi[:, 1], -1)):
        out = np.zeros_like(P)
        cnt = np.zeros(m, int)
        for i in range(vmax):
            active = i < nv
            if not active.any():
                break
            cur = P[:, i]
            nxt = P[rows, np.where(i + 1 < nv, i + 1, 0)]
            fc = sign * (cur[:, axis] - bound)
            fn = sign * (nxt[:, axis] - bound)
            cin, nin = fc >= 0, fn >= 0
            w = active & cin
            out[rows[w], cnt[w]] = cur[w]
            cnt += w
            cross = active & (cin != nin)
            t = np.where(cross, fc / np.where(cross, fc - fn, 1.0), 0.0)
            ip = cur + t[:, None] * (nxt - cur)
            out[rows[cross], cnt[cross]] = ip[cross]
            cnt += cross
        P, nv = out, cnt
    # shoelace over the valid vertices
    idx = np.arange(vmax)[None, :]
    valid = idx < nv[:, None]
    nxt_idx = np.where(idx + 1 < nv[:, None], idx + 1, 0)
    Q = P[rows[:, None], nxt_idx]
    area = np.where(valid, _cross(P, Q), 0.0).sum(1)
    return np.abs(area) / 2


def overlap_weights(
    spot_xy: np.ndarray,
    spot_size_um: float,
    pixel_xy_native: np.ndarray,
    pixel_size_um,
    transform: Transform,
    *,
    spot_shape: str = "disk",
    chunk: int = 50000,
) -> sp.csr_matrix:
    """Sparse (n_spots × n_pixels) matrix of exact overlap areas in µm² (ST frame).

    ``spot_size_um``: spot diameter (disks) or bin side (squares); ``pixel_xy_native``: pixel
    centres in the MSI frame (µm); ``pixel_size_um``: one number (square pixels) or (x, y).
    """
    spot_xy = np.asarray(spot_xy, float)
    pixel_xy_native = np.asarray(pixel_xy_native, float)
    n_spots, n_pix = len(spot_xy), len(pixel_xy_native)
    pxy = pixel_xy(pixel_size_um)
    half = spot_size_um / 2
    spot_reach = half if spot_shape == "disk" else half * np.sqrt(2)
    tree = cKDTree(spot_xy)
    rows, cols, vals = [], [], []
    for start in range(0, n_pix, chunk):
        sl = slice(start, min(start + chunk, n_pix))
        centres = transform(pixel_xy_native[sl])
        corners = transform((pixel_xy_native[sl, None, :] + _CORNERS[None] * pxy)
                            .reshape(-1, 2)).reshape(-1, 4, 2)
        r_pix = np.linalg.norm(corners - centres[:, None, :], axis=-1).max(1)
        reach = spot_reach + r_pix.max() + 1e-6
        near = np.nonzero(np.isfinite(tree.query(centres, k=1, distance_upper_bound=reach)[0]))[0]
        if near.size == 0:
            continue
        lists = tree.query_ball_point(centres[near], reach)
        counts = np.fromiter((len(x) for x in lists), int, len(lists))
        pix = np.repeat(near, counts)
        spot = np.fromiter((j for x in lists for j in x), int, counts.sum())
        poly = corners[pix]
        if spot_shape == "disk":
            area = polygon_disk_area(poly, spot_xy[spot], half)
        else:
            area = polygon_box_area(poly, spot_xy[spot] - half, spot_xy[spot] + half)
        keep = area > 1e-9
        rows.append(spot[keep])
        cols.append(pix[keep] + start)
        vals.append(area[keep])
    r = np.concatenate(rows) if rows else np.zeros(0, int)
    c = np.concatenate(cols) if cols else np.zeros(0, int)
    v = np.concatenate(vals) if vals else np.zeros(0)
    W = sp.csr_matrix((v, (r, c)), shape=(n_spots, n_pix))
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
