"""What both modalities share, in a form registration can compare.

* **Feature maps**: the leading principal components of each modality, computed separately (ST
  on its log-normalised genes, MSI on its log TIC-normalised on-tissue pixels), each scaled to
  unit variance. The two sets are *not* the same variables; registration compares them through
  a linear map fitted on the fly (regression / canonical correlation), which makes the sign and
  order ambiguity of principal components irrelevant.
* **Tissue masks**: MSI ``on_tissue`` per pixel, refined to a partial-volume fraction along the
  mask's edge (:func:`msi_tissue_fraction`); ST in-tissue spots plus *background points*
  (capture-array positions without a tissue spot), so that MSI tissue falling on empty capture
  area is penalised while MSI tissue beyond the capture area is not.
* :class:`MsiRaster`: the MSI pixels on their own lattice as images (mask, raster footprint,
  features), from which blurred level images are built (:meth:`MsiRaster.level`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import ndimage
from scipy.spatial import cKDTree

from ..constants import VISIUM_SPOT_PITCH_UM
from ..pixels import lattice_index, pixel_xy

log = logging.getLogger(__name__)


def leading_components(X, n_comps: int, rows: np.ndarray | None = None, *, max_fit: int = 20000,
                       max_vars: int = 1000, seed: int = 0) -> np.ndarray:
    """Unit-variance scores of the ``n_comps`` leading principal components of ``X``.

    Fitted on ``rows`` (default all; at most ``max_fit`` of them, drawn with ``seed``) and on the
    ``max_vars`` most variable columns; scores are returned for every row. Memory and time are
    linear in the number of rows.
    """
    n = X.shape[0]
    rows = np.arange(n) if rows is None else np.asarray(rows)
    rng = np.random.default_rng(seed)
    fit = rows if len(rows) <= max_fit else np.sort(rng.choice(rows, max_fit, replace=False))
    Xf = X[fit]
    Xf = Xf.toarray() if sp.issparse(Xf) else np.asarray(Xf, dtype=np.float64)
    Xf = Xf.astype(np.float64)
    var = Xf.var(0)
    cols = np.argsort(-var)[:max_vars]
    cols = cols[var[cols] > 0]
    if cols.size == 0:
        return np.zeros((n, 0))
    Xf = Xf[:, cols]
    mu = Xf.mean(0)
    C = np.cov(Xf - mu, rowvar=False) if cols.size > 1 else np.atleast_2d(Xf.var())
    evals, evecs = np.linalg.eigh(np.atleast_2d(C))
    order = np.argsort(-evals)[: min(n_comps, cols.size)]
    V = evecs[:, order]
    sd = np.sqrt(np.maximum(evals[order], 1e-12))
    Xc = X[:, cols]
    scores = (Xc @ V) if sp.issparse(Xc) else np.asarray(Xc, dtype=np.float64) @ V
    scores = np.asarray(scores) - mu @ V
    return scores / sd


def lda_posteriors(X_train: np.ndarray, labels: np.ndarray, X: np.ndarray, n_classes: int,
                   ridge: float = 1e-3) -> np.ndarray:
    """(n, n_classes) posteriors of a linear discriminant (class means, one pooled covariance,
    equal priors) trained on ``X_train`` with ``labels``; classes without training rows get 0.
    Closed form, deterministic."""
    X_train, X = np.asarray(X_train, float), np.asarray(X, float)
    d = X.shape[1]
    present = [j for j in range(n_classes) if (labels == j).sum() > d]
    P = np.zeros((len(X), n_classes))
    if len(present) < 2:
        return P
    mu = np.stack([X_train[labels == j].mean(0) for j in present])
    R = np.concatenate([X_train[labels == j] - mu[i] for i, j in enumerate(present)])
    S = R.T @ R / max(len(R) - len(present), 1)
    S += ridge * np.trace(S) / d * np.eye(d)
    W = np.linalg.solve(S, mu.T)  # (d, c)
    L = X @ W - 0.5 * np.einsum("cd,dc->c", mu, W)
    L -= L.max(1, keepdims=True)
    E = np.exp(L)
    P[:, present] = E / E.sum(1, keepdims=True)
    return P


def smooth_on_raster(native_xy: np.ndarray, values: np.ndarray, mask: np.ndarray, pixel_um,
                     sigma_um: float) -> np.ndarray:
    """Gaussian smoothing (``sigma_um``) of per-pixel ``values`` (n, k) over the pixels in
    ``mask`` on the MSI lattice (normalised convolution: pixels outside the mask do not count);
    rows outside the mask are returned unchanged."""
    xy = np.asarray(native_xy, float)
    V = np.asarray(values, float)
    s = float(sigma_um) / pixel_xy(pixel_um)[::-1]  # per image axis (rows, columns)
    if s.max() < 0.3 or not mask.any():
        return V.copy()
    ij = lattice_index(xy, pixel_um)
    nx, ny = ij.max(0) + 1
    w = np.zeros((ny, nx))
    w[ij[mask, 1], ij[mask, 0]] = 1.0
    den = ndimage.gaussian_filter(w, s, mode="constant")[ij[mask, 1], ij[mask, 0]]
    out = V.copy()
    for j in range(V.shape[1]):
        img = np.zeros((ny, nx))
        img[ij[mask, 1], ij[mask, 0]] = V[mask, j]
        out[mask, j] = ndimage.gaussian_filter(img, s, mode="constant")[ij[mask, 1], ij[mask, 0]] / np.maximum(den, 1e-9)
    return out


def msi_tissue_fraction(native_xy: np.ndarray, on_tissue: np.ndarray, signal: np.ndarray | None,
                        pixel_um: float, radius_px: int = 2) -> np.ndarray:
    """Fraction of each MSI pixel's area that is tissue (partial volume), per pixel.

    A binary mask puts the tissue edge on pixel boundaries: pixels half on tissue are all in or
    all out, which shifts the outline by up to half a pixel wherever the threshold falls. Ions
    come only from the tissue part of the ablated area, so along the edge (pixels with a
    neighbour of the other mask value) the fraction is the pixel's signal (total ion count
    of the tissue peaks) over the median signal of the interior tissue pixels around it (a
    ``2·radius_px + 1`` window: a local reference, robust to regions of different ion yield),
    clipped to [0, 1]. Inside the mask 1, outside 0. Without a signal: the binary mask.
    """
    on = np.asarray(on_tissue, bool)
    frac = on.astype(float)
    if signal is None or on.sum() < 3 or (~on).sum() < 1:
        return frac
    sig = np.nan_to_num(np.asarray(signal, float).ravel(), nan=0.0).clip(0, None)
    xy = np.asarray(native_xy, float)
    ij = lattice_index(xy, pixel_um)
    nx, ny = ij.max(0) + 1
    if nx * ny > 5e7:
        return frac
    on_img = np.zeros((ny, nx), bool)
    acquired = np.zeros((ny, nx), bool)
    sig_img = np.zeros((ny, nx))
    on_img[ij[:, 1], ij[:, 0]] = on
    acquired[ij[:, 1], ij[:, 0]] = True
    sig_img[ij[:, 1], ij[:, 0]] = sig
    # edge: pixels with an 8-neighbour of the other mask value. Reference: the median signal of
    # the interior pixels within ``radius_px`` (edge pixels are themselves partly empty; the
    # median follows the majority region where two regions of different ion yield meet), or of
    # every on-tissue pixel there where the tissue is too thin to have an interior
    grow = ndimage.binary_dilation(on_img, np.ones((3, 3), bool))
    interior = ndimage.binary_erosion(on_img, np.ones((3, 3), bool), border_value=1)
    edge_img = grow & ~interior & acquired
    ey, ex = np.nonzero(edge_img)
    r = int(radius_px)
    ref_img = np.zeros((ny, nx))
    for use in (on_img, interior):
        vals = np.full((len(ey), (2 * r + 1) ** 2), np.nan)
        k = 0
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                yy, xx = ey + dy, ex + dx
                ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
                yc, xc = yy.clip(0, ny - 1), xx.clip(0, nx - 1)
                vals[:, k] = np.where(ok & use[yc, xc], sig_img[yc, xc], np.nan)
                k += 1
        has = np.isfinite(vals).any(1)
        med = np.zeros(len(ey))
        if has.any():
            med[has] = np.nanmedian(vals[has], axis=1)
        ref_img[ey[has], ex[has]] = med[has]
    ref = ref_img[ij[:, 1], ij[:, 0]]
    edge = edge_img[ij[:, 1], ij[:, 0]]
    ok = edge & (ref > 0)
    frac[ok] = np.clip(sig[ok] / ref[ok], 0.0, 1.0)
    return frac


@dataclass
class StPoints:
    """ST observations in the ST frame (µm): tissue spots with features, and background points.

    ``xy`` (n, 2), ``tissue`` (n,) target tissue value in [0, 1] (1 for spots, 0 for background,
    fractions for super-bins), ``features`` (n, k) (rows of background points are 0),
    ``has_features`` (n,) bool.
    """

    xy: np.ndarray
    tissue: np.ndarray
    features: np.ndarray
    has_features: np.ndarray
    pitch_um: float
    footprint_sigma_um: float
    #: group id of each feature channel (None: one group); with balanced weights each group is
    #: weighted by the inverse of its own residual variance (e.g. principal components vs
    #: domain indicators, whose noise levels differ by an order of magnitude)
    groups: np.ndarray | None = None
    #: see :attr:`tolerance_um` (0: the pitch)
    tol_um: float = 0.0

    @property
    def tolerance_um(self) -> float:
        """The length the registration's tolerances are counted in (trust limits, deliberately
        wrong shifts, the uncertainty's blocks and flag): the spot pitch of a spot lattice
        (Visium, legacy ST), at least Visium's 100 µm for Visium HD's super-bins (16–50 µm),
        which would otherwise make them several times stricter than the same error in µm on
        Visium, where they were calibrated."""
        return float(self.tol_um or self.pitch_um)


def infer_lattice(st_xy: np.ndarray, pitch: float, tol: float = 0.3) -> tuple[np.ndarray, np.ndarray] | None:
    """Integer lattice indices ``(rows, cols)`` of spot centres that lie on a regular lattice
    (square or hexagonal) without array coordinates, e.g. legacy ST spots detected on the image;
    ``None`` when they do not (every spot within ``tol`` × the lattice spacing of its lattice
    position; the spots of the real legacy-ST breast sections lie up to 0.25 spacing off).

    The two lattice vectors are the two most frequent nearest-neighbour directions (folded to a
    half-plane); any two independent ones span a square or hexagonal lattice. Indices are rounded
    from that basis, then basis and origin are refitted to all spots by least squares.
    """
    n = len(st_xy)
    if n < 12 or not np.isfinite(pitch) or pitch <= 0:
        return None
    d, nb = cKDTree(st_xy).query(st_xy, k=min(7, n))
    vec = (st_xy[nb[:, 1:]] - st_xy[:, None, :]).reshape(-1, 2)
    near = (d[:, 1:].ravel() > 0.7 * pitch) & (d[:, 1:].ravel() < 1.3 * pitch)
    vec = vec[near]
    if len(vec) < n:
        return None
    vec[vec[:, 1] < 0] *= -1  # fold to a half-plane: v and -v are the same direction
    vec[(vec[:, 1] == 0) & (vec[:, 0] < 0)] *= -1
    ang = np.degrees(np.arctan2(vec[:, 1], vec[:, 0])) % 180.0
    hist, edges = np.histogram(ang, bins=36, range=(0, 180))
    order = np.argsort(hist)[::-1]
    a1 = 0.5 * (edges[order[0]] + edges[order[0] + 1])

    def mean_vector(center):
        diff = (ang - center + 90.0) % 180.0 - 90.0
        sel = np.abs(diff) < 10.0
        if sel.sum() < 3:
            return None
        u = np.array([np.cos(np.radians(center)), np.sin(np.radians(center))])
        v = vec[sel]
        return (v * np.sign(v @ u)[:, None]).mean(0)  # 1° and 179° are one direction

    basis = [mean_vector(a1)]
    for b in order[1:]:
        a2 = 0.5 * (edges[b] + edges[b + 1])
        if abs((a2 - a1 + 90.0) % 180.0 - 90.0) >= 30.0 and hist[b] >= 0.2 * hist[order[0]]:
            basis.append(mean_vector(a2))
            break
    if len(basis) < 2 or basis[0] is None or basis[1] is None:
        return None
    B = np.stack(basis, 1)  # columns: lattice vectors
    if abs(np.linalg.det(B)) < 0.3 * pitch ** 2:
        return None
    origin = st_xy[np.argmin(np.linalg.norm(st_xy - np.median(st_xy, 0), axis=1))]
    for _ in range(2):  # round, refit basis and origin on every spot, round again
        idx = np.rint(np.linalg.solve(B, (st_xy - origin).T).T)
        G = np.c_[idx, np.ones(n)]
        coef, *_ = np.linalg.lstsq(G, st_xy, rcond=None)
        B, origin = coef[:2].T, coef[2]
    resid = np.linalg.norm(G @ coef - st_xy, axis=1)
    spacing = float(np.linalg.norm(B, axis=0).min())
    if resid.max() > tol * spacing or len(np.unique(idx, axis=0)) < n:
        return None
    return idx[:, 1].astype(int), idx[:, 0].astype(int)


def _lattice_background(st_xy: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                        box: np.ndarray, tol_um: float = 5.0) -> np.ndarray | None:
    """Capture-array positions without a tissue spot, from the array row/col of the spots."""
    if len(st_xy) < 6:
        return None
    G = np.c_[cols, rows, np.ones(len(cols))]
    coef, res, rank, _ = np.linalg.lstsq(G, st_xy, rcond=None)
    if rank < 3 or np.abs(G @ coef - st_xy).max() > tol_um:
        return None  # positions are not an exact lattice: no reliable completion
    parity = np.unique((rows + cols) % 2)
    # the array index range that covers the capture box
    corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]])
    Linv = np.linalg.pinv(coef[:2].T)
    cr = (corners - coef[2]) @ Linv.T
    c0, c1 = int(np.floor(cr[:, 0].min())) - 1, int(np.ceil(cr[:, 0].max())) + 1
    r0, r1 = int(np.floor(cr[:, 1].min())) - 1, int(np.ceil(cr[:, 1].max())) + 1
    if (c1 - c0) * (r1 - r0) > 4e6:
        return None
    cc, rr = np.meshgrid(np.arange(c0, c1 + 1), np.arange(r0, r1 + 1))
    cc, rr = cc.ravel(), rr.ravel()
    keep = np.isin((rr + cc) % 2, parity)
    cc, rr = cc[keep], rr[keep]
    taken = set(zip(rows.tolist(), cols.tolist()))
    free = np.array([(r, c) not in taken for r, c in zip(rr.tolist(), cc.tolist())], bool)
    xy = np.c_[cc[free], rr[free], np.ones(free.sum())] @ coef
    return xy[in_box(xy, box)]


def in_box(xy: np.ndarray, box) -> np.ndarray:
    """Bool per point: inside the box (xmin, ymin, xmax, ymax), edges included."""
    xy, b = np.asarray(xy, float), np.asarray(box, float)
    return (xy[:, 0] >= b[0]) & (xy[:, 0] <= b[2]) & (xy[:, 1] >= b[1]) & (xy[:, 1] <= b[3])


def st_points(st_xy: np.ndarray, st_features: np.ndarray, capture_box: np.ndarray, *,
              spot_um: float, spot_shape: str = "disk", array_rows: np.ndarray | None = None,
              array_cols: np.ndarray | None = None, max_points: int = 40000,
              tissue_fraction: np.ndarray | None = None) -> StPoints:
    """Observation points of the ST section (see :class:`StPoints`).

    Visium: every tissue spot, and the array positions without a tissue spot as background
    (lattice completion from ``array_row``/``array_col``; without them, a grid at the spot pitch).
    Many small bins (Visium HD): pooled into square super-bins so at most ~``max_points`` remain;
    the target tissue value of a super-bin is the fraction of it covered by tissue bins, each
    bin counting as its ``tissue_fraction`` (pooled Visium HD squares, see
    :func:`spatialfuse.st.pool_visium_hd`; default 1).
    """
    st_xy = np.asarray(st_xy, float)
    box = np.asarray(capture_box, float)
    k = st_features.shape[1]
    if spot_shape == "disk":
        d, _ = cKDTree(st_xy).query(st_xy, k=2)
        pitch = float(np.median(d[:, 1])) if len(st_xy) > 2 else 100.0
        bg = None
        if array_rows is not None and array_cols is not None:
            bg = _lattice_background(st_xy, np.asarray(array_rows, int), np.asarray(array_cols, int), box)
        if bg is None and len(st_xy) > 2:
            # no array coordinates (or not exact): spots detected on a jittered lattice
            # (legacy ST) still give their lattice, and its empty positions
            lattice = infer_lattice(st_xy, pitch)
            if lattice is not None:
                bg = _lattice_background(st_xy, lattice[0], lattice[1], box, tol_um=0.4 * pitch)
        if bg is None:
            # last resort, a square grid at the pitch; like empty lattice positions, a background
            # point is at least one pitch from every tissue spot. Closer ones (0.5–1 pitch) lie
            # where the tissue edge is expected (about half a pitch beyond the outermost tissue
            # spots, up to a pitch): as "no tissue" they pulled the MSI outline inwards.
            g = np.arange(box[0] + pitch / 2, box[2], pitch), np.arange(box[1] + pitch / 2, box[3], pitch)
            gx, gy = np.meshgrid(*g)
            bg = np.stack([gx.ravel(), gy.ravel()], 1)
            dd, _ = cKDTree(st_xy).query(bg)
            bg = bg[dd > pitch]
        xy = np.r_[st_xy, bg]
        tissue = np.r_[np.ones(len(st_xy)), np.zeros(len(bg))]
        feats = np.r_[st_features, np.zeros((len(bg), k))]
        has = np.r_[np.ones(len(st_xy), bool), np.zeros(len(bg), bool)]
        return StPoints(xy, tissue, feats, has, pitch, spot_um / 4)
    # square bins: pool into super-bins of side `cell` (a multiple of the bin size)
    area = (box[2] - box[0]) * (box[3] - box[1])
    cell = max(spot_um, float(np.sqrt(area / max_points)))
    cell = spot_um * max(1, int(np.ceil(cell / spot_um)))
    nx = int(np.ceil((box[2] - box[0]) / cell))
    ny = int(np.ceil((box[3] - box[1]) / cell))
    ix = np.clip(((st_xy[:, 0] - box[0]) // cell).astype(int), 0, nx - 1)
    iy = np.clip(((st_xy[:, 1] - box[1]) // cell).astype(int), 0, ny - 1)
    flat = iy * nx + ix
    cnt = np.bincount(flat, minlength=nx * ny).astype(float)
    tw = cnt if tissue_fraction is None else np.bincount(flat, np.asarray(tissue_fraction, float), nx * ny)
    fsum = np.stack([np.bincount(flat, st_features[:, j], nx * ny) for j in range(k)], 1)
    # the last row and column of super-bins may reach beyond the capture area: each super-bin
    # stands for its part inside it (centre and bin count), or a section cut at the capture
    # edge would show a false tissue edge there (a third of a super-bin inside reads as a
    # third tissue)
    lo_x = box[0] + np.arange(nx) * cell
    lo_y = box[1] + np.arange(ny) * cell
    hi_x, hi_y = np.minimum(lo_x + cell, box[2]), np.minimum(lo_y + cell, box[3])
    (cx, cy), (wx, wy) = ((lo_x + hi_x) / 2, (lo_y + hi_y) / 2), (hi_x - lo_x, hi_y - lo_y)
    gx, gy = np.meshgrid(np.arange(nx), np.arange(ny))
    gx, gy = gx.ravel(), gy.ravel()
    xy = np.stack([cx[gx], cy[gy]], 1)
    per_cell = np.maximum(wx[gx] * wy[gy], spot_um**2) / spot_um**2  # bins that fit inside
    tissue = np.clip(tw / per_cell, 0, 1)
    has = cnt >= 0.5 * per_cell
    feats = np.where(has[:, None], fsum / np.maximum(cnt, 1)[:, None], 0.0)
    if has.sum() > 2:  # re-standardise the pooled features
        mu, sd = feats[has].mean(0), feats[has].std(0) + 1e-9
        feats = np.where(has[:, None], (feats - mu) / sd, 0.0)
    return StPoints(xy, tissue, feats, has, cell, cell / np.sqrt(12),
                    tol_um=max(cell, VISIUM_SPOT_PITCH_UM))


@dataclass
class MsiLevel:
    """Blurred MSI images of one pyramid level; sample them at MSI-frame µm positions."""

    origin: np.ndarray  # µm of image index (0, 0)
    res: np.ndarray  # (x, y) µm per image pixel
    mask: np.ndarray  # tissue fraction, normalised by the raster footprint
    valid: np.ndarray  # raster footprint fraction (0 outside the acquired raster)
    feats: np.ndarray  # (k, ny, nx) feature × tissue fraction, blurred (0 off tissue)
    grads: np.ndarray  # (1 + k, 2, ny, nx) d/dx, d/dy (per µm) of mask and features

    def index(self, u: np.ndarray) -> np.ndarray:
        g = (np.asarray(u) - self.origin) / self.res
        return np.stack([g[:, 1], g[:, 0]], 0)

    def sample(self, u: np.ndarray, with_grad: bool = True):
        """Values (n, 1 + k) [mask, features...], validity (n,), gradients (n, 1 + k, 2)."""
        idx = self.index(u)

        def mc(img):
            return ndimage.map_coordinates(img, idx, order=1, mode="constant", cval=0.0)

        k = self.feats.shape[0]
        vals = np.empty((u.shape[0], 1 + k))
        vals[:, 0] = mc(self.mask)
        for j in range(k):
            vals[:, 1 + j] = mc(self.feats[j])
        valid = mc(self.valid)
        if not with_grad:
            return vals, valid, None
        g = np.empty((u.shape[0], 1 + k, 2))
        for c in range(1 + k):
            g[:, c, 0] = mc(self.grads[c, 0])
            g[:, c, 1] = mc(self.grads[c, 1])
        return vals, valid, g


class MsiRaster:
    """MSI pixels on their own lattice (own frame, µm) as images: tissue, footprint, features."""

    def __init__(self, native_xy: np.ndarray, on_tissue: np.ndarray, features: np.ndarray,
                 pixel_um: float, tissue_fraction: np.ndarray | None = None):
        """``on_tissue`` (bool) weights the features; ``tissue_fraction`` (default: the mask)
        is the tissue image that registration matches (see :func:`msi_tissue_fraction`)."""
        native_xy = np.asarray(native_xy, float)
        self.px = pixel_xy(pixel_um)  # (x, y) µm: rectangular pixels make a rectangular lattice
        lo = native_xy.min(0)
        ij = lattice_index(native_xy, self.px)
        nx, ny = ij.max(0) + 1
        if nx * ny > 5e7:
            raise ValueError(f"MSI raster of {nx}x{ny} lattice cells is too large; check the pixel size")
        self.origin = lo
        self.shape = (int(ny), int(nx))
        flat = ij[:, 1] * nx + ij[:, 0]
        n = nx * ny
        foot = np.bincount(flat, minlength=n).astype(float)
        tf = on_tissue.astype(float) if tissue_fraction is None else np.asarray(tissue_fraction, float)
        m = np.bincount(flat, tf, minlength=n)
        k = features.shape[1]
        f = np.zeros((k, n))
        w = on_tissue.astype(float)
        for j in range(k):
            f[j] = np.bincount(flat, np.where(on_tissue, features[:, j], 0.0) * w, minlength=n)
        nz = foot > 0
        m[nz] /= foot[nz]
        for j in range(k):
            f[j, nz] /= foot[nz]
        self.footprint = np.minimum(foot, 1.0).reshape(self.shape)
        self.tissue = m.reshape(self.shape)  # fraction of the cell's pixels on tissue
        self.feat_x_tissue = f.reshape((k,) + self.shape)  # feature × tissue
        self.k = k

    @property
    def tissue_xy(self) -> np.ndarray:
        iy, ix = np.nonzero(self.tissue > 0.5)
        return np.stack([ix, iy], 1) * self.px + self.origin

    def level(self, sigma_um: float, min_res_um: float | None = None) -> MsiLevel:
        """Images blurred by a Gaussian of ``sigma_um`` (MSI frame), binned when that is coarse."""
        # per axis (x, y): cells of b lattice steps, at most about σ/2 (and at least min_res_um)
        b = np.maximum(1, np.floor(max(sigma_um / 2.0, min_res_um or 0) / self.px)).astype(int)
        res = b * self.px
        bx, by = int(b[0]), int(b[1])

        def binned(img):
            if bx == 1 and by == 1:
                return img
            ny, nx = img.shape[-2:]
            pad = [(0, 0)] * (img.ndim - 2) + [(0, (-ny) % by), (0, (-nx) % bx)]
            im = np.pad(img, pad)
            sh = im.shape[:-2] + (im.shape[-2] // by, by, im.shape[-1] // bx, bx)
            return im.reshape(sh).mean(axis=(-3, -1))

        foot, tis, fx = binned(self.footprint), binned(self.tissue), binned(self.feat_x_tissue)
        # the binning's own blur (a box of b cells: variance (b·px)²/12) is part of σ
        s = np.sqrt(np.maximum(sigma_um**2 - res**2 / 12 * (b > 1), 0.0)) / res
        s_img = (float(s[1]), float(s[0]))  # image axes: rows (y), columns (x)

        def blur(img):
            return ndimage.gaussian_filter(img, s_img, mode="constant") if s.max() > 0.05 else img

        bf, bt = blur(foot), blur(tis)
        valid = bf
        inv = np.where(bf > 1e-3, 1.0 / np.maximum(bf, 1e-3), 0.0)
        mask = bt * inv
        feats = (np.stack([blur(fx[j]) * inv for j in range(self.k)]) if self.k
                 else np.zeros((0,) + bt.shape))
        chans = [mask] + list(feats)
        grads = np.stack([np.stack(np.gradient(c, res[1], res[0])[::-1]) for c in chans])
        origin = self.origin + (b - 1) / 2 * self.px
        return MsiLevel(origin, res, mask, valid, feats, grads)


def gaussian_smooth_points(xy: np.ndarray, values: np.ndarray, sigma_um: float,
                           weights: np.ndarray | None = None) -> np.ndarray:
    """Normalised Gaussian smoothing of point values: splatted on a grid (res σ/3), blurred,
    read back bilinearly; O(points + grid cells). ``values`` (n,) or (n, k)."""
    if sigma_um <= 0:
        return values
    v2 = values[:, None] if values.ndim == 1 else values
    w = np.ones(len(xy)) if weights is None else np.asarray(weights, float)
    res = sigma_um / 3
    lo = xy.min(0) - 4 * sigma_um
    g = (xy - lo) / res
    shape = tuple(int(v) for v in np.ceil(g.max(0) + 4 * sigma_um / res)[::-1] + 2)
    x0, y0 = np.floor(g[:, 0]).astype(int), np.floor(g[:, 1]).astype(int)
    fx, fy = g[:, 0] - x0, g[:, 1] - y0
    corners = [(0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)]

    size = shape[0] * shape[1]

    def splat_blur(val):
        img = sum(np.bincount((y0 + dy) * shape[1] + x0 + dx, c * val, size) for dx, dy, c in corners)
        return ndimage.gaussian_filter(img.reshape(shape), 3.0, mode="constant")

    def read(img):
        return sum(c * img[y0 + dy, x0 + dx] for dx, dy, c in corners)

    den = np.maximum(read(splat_blur(w)), 1e-12)
    out = np.stack([read(splat_blur(v2[:, j] * w)) / den for j in range(v2.shape[1])], 1)
    return out[:, 0] if values.ndim == 1 else out
