"""Block matching: local displacement estimates by exhaustive search of a translation per window.

After the affine, the ST capture area is tiled by overlapping square windows; for each window
the registration's own data objective (tissue mask + feature channels, with the balanced
weights and the feature map β fitted once, globally, at the affine) restricted to the window's
observation points is evaluated for every local translation ``d`` on a grid (the inverse form
of :mod:`.refine`: a point ``x`` is read at ``u = P·(x + d) + q``). The minimum (refined by a
quadratic fit around it) is the window's local shift; the curvature of that quadratic (its
smaller eigenvalue, per point) and the drop of the objective from its mean over the grid to the
minimum say how well the window pins the shift down.

Not part of the registration: the benchmark's ``--block-diagnostic`` compares these local
shifts with the simulator's true displacement, and on the benchmark cases they do not track it
(benchmarks/RESULTS.md, "Block matching"), so no smooth field is fitted to them in :mod:`.register`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .features import MsiRaster, StPoints
from .refine import _affine_to_theta, _Objective


@dataclass
class LocalShifts:
    """Per window: centre (ST µm), shift ``d`` (µm, inverse form), confidence, point counts."""

    centre: np.ndarray  # (w, 2)
    shift: np.ndarray  # (w, 2)
    curvature: np.ndarray  # (w,) smaller eigenvalue of the quadratic fit's Hessian, per µm²
    stiff: np.ndarray  # (w, 2) unit direction of its larger eigenvalue (the best-pinned one)
    hessian: np.ndarray  # (w, 2, 2) the quadratic fit's Hessian (window sum), eigenvalues ≥ 0
    drop: np.ndarray  # (w,) mean objective over the search grid minus the minimum
    at_edge: np.ndarray  # (w,) bool: the grid minimum lies on the border of the search range
    n_tissue: np.ndarray  # (w,) tissue spots in the window
    members: sp.csr_matrix  # (w, n_points) window membership


def window_membership(xy: np.ndarray, box: np.ndarray, window_um: float, spacing_um: float,
                      tissue: np.ndarray, min_tissue: int) -> tuple[np.ndarray, sp.csr_matrix]:
    """Window centres on a ``spacing_um`` grid over ``box`` and the (w × n) membership of the
    points within ``window_um / 2`` (square); windows with fewer than ``min_tissue`` tissue
    points are dropped."""
    gx = np.arange(box[0] + spacing_um / 2, box[2], spacing_um)
    gy = np.arange(box[1] + spacing_um / 2, box[3], spacing_um)
    cx, cy = np.meshgrid(gx, gy)
    centres = np.stack([cx.ravel(), cy.ravel()], 1)
    rows, cols = [], []
    half = window_um / 2
    for w, c in enumerate(centres):
        inside = np.nonzero(np.all(np.abs(xy - c) <= half, 1))[0]
        rows.append(np.full(len(inside), w))
        cols.append(inside)
    Mb = sp.csr_matrix((np.ones(sum(len(r) for r in rows)), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(len(centres), len(xy)))
    keep = np.asarray(Mb @ (np.asarray(tissue) > 0.5).astype(float)).ravel() >= min_tissue
    return centres[keep], Mb[keep]


def point_energy(obj: _Objective, theta: np.ndarray, beta: np.ndarray | None,
                 shift: np.ndarray) -> np.ndarray:
    """Per-point data objective of ``obj`` at affine ``theta`` with every point translated by
    ``shift`` (µm, before the affine) and the feature map ``beta`` held fixed."""
    P, q = theta[:4].reshape(2, 2), theta[4:6]
    u = (obj.x + shift) @ P.T + q
    vals, valid, _ = obj.level.sample(u, with_grad=False)
    v = np.clip(valid, 0.0, 1.0)
    r0 = obj.t - vals[:, 0]
    e = v * r0**2 + (1 - v) * obj.pen_mask
    if obj.k and beta is not None:
        fi = obj.fi
        D = np.c_[np.ones(len(fi)), vals[fi]]
        rf = obj.Y - D @ beta
        vf = v[fi]
        e[fi] += (vf[:, None] * rf**2) @ obj.wfc + (1 - vf) * float(obj.wfc @ obj.pen_feat_c)
    return e


def _quadratic_min(E: np.ndarray, grid: np.ndarray, i: int, j: int, radius: int = 2):
    """Least-squares quadratic over the (2·radius+1)² grid cells around (i, j): the minimiser
    (clipped to that neighbourhood) and the Hessian."""
    n = len(grid)
    ii = np.arange(max(i - radius, 0), min(i + radius + 1, n))
    jj = np.arange(max(j - radius, 0), min(j + radius + 1, n))
    yy, xx = np.meshgrid(grid[ii], grid[jj], indexing="ij")
    z = E[np.ix_(ii, jj)].ravel()
    x0, y0 = grid[j], grid[i]
    dx, dy = xx.ravel() - x0, yy.ravel() - y0
    G = np.c_[np.ones_like(dx), dx, dy, dx**2, dy**2, dx * dy]
    coef = np.linalg.lstsq(G, z, rcond=None)[0]
    H = np.array([[2 * coef[3], coef[5]], [coef[5], 2 * coef[4]]])
    b = coef[1:3]
    step = np.zeros(2)
    ev = np.linalg.eigvalsh(H)
    if ev[0] > 0:
        step = -np.linalg.solve(H, b)
        lim = radius * (grid[1] - grid[0])
        step = np.clip(step, -lim, lim)
    return np.array([x0, y0]) + step, H


def local_shifts(pts: StPoints, raster: MsiRaster, A: np.ndarray, box: np.ndarray, *,
                 window_um: float = 600.0, spacing_um: float = 350.0, max_shift_um: float = 60.0,
                 step_um: float = 5.0, sigma_um: float = 0.0, feature_weight: float = 1.0,
                 balance: bool = True, min_tissue: int = 8) -> LocalShifts:
    """Local shifts of the MSI → ST affine ``A`` by exhaustive search per window (module doc)."""
    scale = float(np.sqrt(abs(np.linalg.det(A[:2, :2]))))
    level = raster.level(np.sqrt(sigma_um**2 + pts.footprint_sigma_um**2) / scale)
    obj = _Objective(pts, level, sigma_um, feature_weight, None, balance)
    theta = _affine_to_theta(A)
    obj.calibrate(theta)
    beta = obj.evaluate(theta).get("beta")
    centres, Mb = window_membership(pts.xy, np.asarray(box, float), window_um, spacing_um,
                                    pts.tissue, min_tissue)
    grid = np.arange(-max_shift_um, max_shift_um + 1e-9, step_um)
    n = len(grid)
    E = np.empty((len(centres), n, n))  # [window, dy index, dx index]
    for i, dy in enumerate(grid):
        for j, dx in enumerate(grid):
            E[:, i, j] = Mb @ point_energy(obj, theta, beta, np.array([dx, dy]))
    npts = np.maximum(np.asarray(Mb.sum(1)).ravel(), 1)
    shift = np.zeros((len(centres), 2))
    curv = np.zeros(len(centres))
    stiff = np.zeros((len(centres), 2))
    hess = np.zeros((len(centres), 2, 2))
    edge = np.zeros(len(centres), bool)
    for w in range(len(centres)):
        i, j = np.unravel_index(np.argmin(E[w]), E[w].shape)
        edge[w] = i in (0, n - 1) or j in (0, n - 1)
        shift[w], H = _quadratic_min(E[w], grid, i, j)
        lam, vec = np.linalg.eigh(H)
        curv[w], stiff[w] = lam[0] / npts[w], vec[:, 1]
        hess[w] = (vec * np.maximum(lam, 0.0)) @ vec.T
        if edge[w]:  # the minimum is not inside the searched range: no information
            hess[w] = 0.0
    drop = (E.mean((1, 2)) - E.min((1, 2))) / npts
    n_tis = np.asarray(Mb @ (pts.tissue > 0.5).astype(float)).ravel().astype(int)
    return LocalShifts(centres, shift, curv, stiff, hess, drop, edge, n_tis, Mb)


def smooth_shifts(ls: LocalShifts, at: np.ndarray, sigma_um: float, ridge: float = 1e-3) -> np.ndarray:
    """The local shifts combined at the points ``at`` by a Gaussian kernel (``sigma_um``), each
    window weighted by its Hessian (a 2 × 2 confidence: an outline pins only its normal):
    ``d(x) = (Σ k H)⁻¹ Σ k H d`` (with a small ridge relative to the mean Hessian)."""
    at = np.asarray(at, float)
    d2 = ((at[:, None, :] - ls.centre[None, :, :]) ** 2).sum(-1)
    K = np.exp(-0.5 * d2 / sigma_um**2)
    Hs = np.einsum("aw,wij->aij", K, ls.hessian)
    bs = np.einsum("aw,wij,wj->ai", K, ls.hessian, ls.shift)
    eps = ridge * float(np.trace(ls.hessian.mean(0))) / 2 + 1e-12
    return np.linalg.solve(Hs + eps * np.eye(2), bs[..., None])[..., 0]
