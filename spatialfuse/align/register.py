"""Registration of the MSI section onto the ST section (MSI µm → ST µm).

Automatic (no landmarks, no image): both sections are rasterised on a common µm grid as soft
tissue masks. A coarse search over reflection × rotation (full 360°) × scale finds the
translation of each candidate by FFT cross-correlation, so every candidate is scored at its best
shift; the winner is refined as an affine transform by maximising the normalised
cross-correlation of the blurred masks, evaluated only inside the ST capture area so that MSI
tissue beyond the capture edge (partial overlap) does not pull the fit.

Landmarks (optional): least-squares affine from matched points, with leave-one-out error.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from scipy import ndimage, optimize

from ..errors import AlignmentError
from .transform import Transform, fit_affine, similarity_matrix

log = logging.getLogger(__name__)


class Grid:
    """A regular raster over a box in µm."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray, res_um: float):
        self.lo = np.asarray(lo, float)
        self.res = float(res_um)
        self.shape = tuple(int(v) for v in np.ceil((np.asarray(hi) - self.lo) / self.res)[::-1] + 1)

    def index(self, pts: np.ndarray) -> np.ndarray:
        """(row, col) float indices of µm points."""
        g = (np.asarray(pts) - self.lo) / self.res
        return np.stack([g[:, 1], g[:, 0]], 0)

    def splat(self, pts: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        img = np.zeros(self.shape)
        rc = np.round(self.index(pts)).astype(int)
        ok = (rc[0] >= 0) & (rc[0] < self.shape[0]) & (rc[1] >= 0) & (rc[1] < self.shape[1])
        w = np.ones(len(pts)) if weights is None else np.asarray(weights, float)
        np.add.at(img, (rc[0, ok], rc[1, ok]), w[ok])
        return img

    def sample(self, img: np.ndarray, pts: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(img, self.index(pts), order=1, mode="constant", cval=0.0)


def _mask_image(grid: Grid, pts: np.ndarray, radius_um: float) -> np.ndarray:
    """Binary-ish tissue image: points splatted and dilated to ``radius_um``, then clipped."""
    img = grid.splat(pts)
    r = max(1, int(np.ceil(radius_um / grid.res)))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (xx**2 + yy**2) <= r * r
    return np.clip(ndimage.binary_dilation(img > 0, structure=disk).astype(float), 0, 1)


def box_mask(grid: Grid, box: np.ndarray) -> np.ndarray:
    """1 inside the axis-aligned box (xmin, ymin, xmax, ymax) in µm, 0 outside."""
    ys = grid.lo[1] + grid.res * np.arange(grid.shape[0])
    xs = grid.lo[0] + grid.res * np.arange(grid.shape[1])
    inx = (xs >= box[0]) & (xs <= box[2])
    iny = (ys >= box[1]) & (ys <= box[3])
    return (iny[:, None] & inx[None, :]).astype(float)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else 0.0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else 0.0


def register_masks(
    st_xy: np.ndarray,
    capture_box: np.ndarray,
    msi_xy: np.ndarray,
    msi_on_tissue: np.ndarray,
    *,
    msi_pixel_um: float,
    st_pitch_um: float = 100.0,
    res_um: float | None = None,
    rotation_step_deg: float = 4.0,
    scales: tuple[float, ...] = (0.9, 0.95, 1.0, 1.05, 1.1),
    allow_reflection: bool = True,
    refine: bool = True,
) -> tuple[Transform, dict]:
    """Automatic landmark-free affine registration from tissue masks.

    ``st_xy``: ST tissue spot centres (µm); ``capture_box``: (xmin, ymin, xmax, ymax) of the
    capture area in µm (where ST could see tissue); ``msi_xy``: all MSI pixel centres (own frame, µm);
    ``msi_on_tissue``: tissue mask of the pixels. Returns the transform and search diagnostics.
    """
    t0 = time.perf_counter()
    if msi_on_tissue.sum() < 3 or len(st_xy) < 3:
        raise AlignmentError("too few tissue spots/pixels to register")
    res = float(res_um or max(msi_pixel_um, st_pitch_um / 4, 15.0))
    # ST reference: soft mask on a grid covering the capture area (+ margin)
    box = np.asarray(capture_box, float)
    lo = box[:2] - 4 * st_pitch_um
    hi = box[2:] + 4 * st_pitch_um
    grid = Grid(lo, hi, res)
    st_mask = _mask_image(grid, st_xy, 0.6 * st_pitch_um)
    capture = box_mask(grid, box + np.array([-1, -1, 1, 1]) * st_pitch_um / 2)
    st_c = st_xy.mean(0)
    tis = msi_xy[msi_on_tissue]
    msi_c = tis.mean(0)
    sig = max(1.0, 60.0 / res)
    st_blur = ndimage.gaussian_filter(st_mask, sig)
    F_st = np.fft.rfft2(st_mask, s=tuple(2 * s for s in grid.shape))
    best = None
    cands = []
    for refl in ((False, True) if allow_reflection else (False,)):
        for rot in np.arange(0.0, 360.0, rotation_step_deg):
            for s in scales:
                A = similarity_matrix(rot, s, refl, np.zeros(2))
                q = (tis - msi_c) @ A[:2, :2].T + st_c
                m_img = _mask_image(grid, q, 0.6 * msi_pixel_um * s + res / 2)
                m_img *= 1.0  # tissue beyond the capture area is allowed; scored against ST only
                F_m = np.fft.rfft2(m_img, s=tuple(2 * s_ for s_ in grid.shape))
                cc = np.fft.irfft2(F_st * np.conj(F_m), s=tuple(2 * s_ for s_ in grid.shape))
                k = int(np.argmax(cc))
                dy, dx = np.unravel_index(k, cc.shape)
                dy = dy - cc.shape[0] if dy > cc.shape[0] // 2 else dy
                dx = dx - cc.shape[1] if dx > cc.shape[1] // 2 else dx
                overlap = cc.flat[k]
                score = overlap / np.sqrt(st_mask.sum() * max(m_img.sum(), 1))
                shift = np.array([dx, dy]) * res
                cands.append((score, rot, s, refl))
                if best is None or score > best[0]:
                    best = (score, rot, s, refl, shift)
    score, rot, s, refl, shift = best
    A0 = similarity_matrix(rot, s, refl, np.zeros(2))
    A0[:2, 2] = st_c + shift - A0[:2, :2] @ msi_c
    cands.sort(key=lambda c: -c[0])
    runner_up = next((c for c in cands if abs(((c[1] - rot + 180) % 360) - 180) > 20 or c[3] != refl), None)
    diag = {
        "coarse_score": float(score), "coarse_rotation_deg": float(rot), "coarse_scale": float(s),
        "coarse_reflect": bool(refl),
        "coarse_margin": float(score - runner_up[0]) if runner_up else None,
        "grid_um": res, "n_candidates": len(cands),
    }
    if score <= 0:
        raise AlignmentError("the MSI tissue and the ST tissue do not overlap for any rotation, "
                             "scale or shift tried")
    T = Transform(A0)
    if refine:
        # refine all 6 affine parameters: NCC between the ST blurred mask and the MSI mask value
        # carried by every MSI pixel, over pixels that land inside the capture area
        msi_val = msi_on_tissue.astype(float)
        cap_img = capture

        def cost(theta):
            A = A0.copy()
            A[:2, :2] = A0[:2, :2] @ (np.eye(2) + theta[:4].reshape(2, 2))
            A[:2, 2] = A0[:2, 2] + theta[4:] * res
            q = msi_xy @ A[:2, :2].T + A[:2, 2]
            inside = grid.sample(cap_img, q) > 0.5
            if inside.sum() < 10:
                return 1.0
            return -_ncc(grid.sample(st_blur, q[inside]), msi_val[inside])

        r = optimize.minimize(cost, np.zeros(6), method="Powell",
                              options={"xtol": 1e-3, "ftol": 1e-5, "maxfev": 3000})
        A = A0.copy()
        A[:2, :2] = A0[:2, :2] @ (np.eye(2) + r.x[:4].reshape(2, 2))
        A[:2, 2] = A0[:2, 2] + r.x[4:] * res
        # accept the refinement only if it improves the objective and stays near-similarity
        svals = np.linalg.svd(A[:2, :2], compute_uv=False)
        if r.fun < cost(np.zeros(6)) and svals.max() / svals.min() < 1.3:
            T = Transform(A)
        diag["refine_ncc"] = float(-r.fun)
    diag["seconds"] = time.perf_counter() - t0
    log.info("coarse: rot %.0f deg, scale %.2f, reflect %s, score %.3f (margin %s); %.1fs",
             rot, s, refl, score, diag["coarse_margin"], diag["seconds"])
    return T, diag


def register_landmarks(st_pts: np.ndarray, msi_pts: np.ndarray) -> tuple[Transform, dict]:
    """Least-squares affine from matched landmarks (MSI µm → ST µm) with leave-one-out error."""
    st_pts, msi_pts = np.asarray(st_pts, float), np.asarray(msi_pts, float)
    if len(st_pts) < 3:
        raise AlignmentError(f"need at least 3 landmarks, got {len(st_pts)}")
    A = fit_affine(msi_pts, st_pts)
    T = Transform(A)
    resid = np.linalg.norm(T(msi_pts) - st_pts, axis=1)
    loo = []
    if len(st_pts) >= 4:
        for i in range(len(st_pts)):
            keep = np.arange(len(st_pts)) != i
            Ti = Transform(fit_affine(msi_pts[keep], st_pts[keep]))
            loo.append(float(np.linalg.norm(Ti(msi_pts[i:i + 1])[0] - st_pts[i])))
    diag = {
        "n_landmarks": int(len(st_pts)),
        "landmark_residual_um_mean": float(resid.mean()),
        "landmark_loo_error_um_median": float(np.median(loo)) if loo else None,
        "landmark_loo_error_um_max": float(np.max(loo)) if loo else None,
    }
    return T, diag
