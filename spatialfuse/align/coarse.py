"""Coarse search: reflection × rotation (full 360°) × scale, translation by FFT, on a coarse grid.

Both sections are rasterised on a grid of ``res`` µm (independent of the MSI pixel size, so a
10 µm raster costs the same as a 50 µm one). The ST reference image is +1 on tissue, −1 on
empty capture area and 0 outside the capture area; for every (reflection, rotation, scale) the
MSI tissue image is rendered and cross-correlated with it by FFT, which scores every
translation at once: MSI tissue over ST tissue counts for, MSI tissue over empty capture area
against, MSI tissue beyond the capture area (a larger MSI raster, tissue cut at the capture
edge) not at all. At the best translations the feature maps are compared too: the canonical
correlations between the ST and the MSI principal components over the overlap (invariant to the
sign, order and mixing of components), which breaks the tie when the outline is nearly
symmetric. Candidates are ranked by ``mask score + feature_weight × mean canonical correlation``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy import ndimage
from scipy.spatial import cKDTree

from .features import MsiRaster, StPoints, gaussian_smooth_points
from .transform import similarity_matrix

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    affine: np.ndarray  # MSI µm -> ST µm
    score: float
    mask_score: float
    feature_score: float
    rotation_deg: float
    scale: float
    reflect: bool


def canonical_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Canonical correlations between column sets ``a`` (n×p) and ``b`` (n×q), descending."""
    if len(a) < max(a.shape[1], b.shape[1]) + 3 or a.shape[1] == 0 or b.shape[1] == 0:
        return np.zeros(0)
    a = a - a.mean(0)
    b = b - b.mean(0)
    try:
        la = np.linalg.cholesky(a.T @ a + 1e-9 * np.eye(a.shape[1]) * max(np.trace(a.T @ a), 1e-12))
        lb = np.linalg.cholesky(b.T @ b + 1e-9 * np.eye(b.shape[1]) * max(np.trace(b.T @ b), 1e-12))
    except np.linalg.LinAlgError:
        return np.zeros(0)
    K = np.linalg.solve(la, np.linalg.solve(lb, (a.T @ b).T).T)
    return np.clip(np.linalg.svd(K, compute_uv=False), 0, 1)


def _shifted(img: np.ndarray, sy: int, sx: int) -> np.ndarray:
    """``img`` moved by (sy, sx) pixels along its last two axes, zero-filled (no wrap-around)."""
    out = np.zeros_like(img)
    ny, nx = img.shape[-2:]
    ys, yd = (slice(0, ny - sy), slice(sy, ny)) if sy >= 0 else (slice(-sy, ny), slice(0, ny + sy))
    xs, xd = (slice(0, nx - sx), slice(sx, nx)) if sx >= 0 else (slice(-sx, nx), slice(0, nx + sx))
    out[..., yd, xd] = img[..., ys, xs]
    return out


def _st_images(pts: StPoints, box: np.ndarray, res: float, L: int):
    """ST reference (+1 tissue / −1 empty capture / 0 outside), tissue and feature canvases."""
    ny, nx = (int(np.ceil((box[3] - box[1]) / res)), int(np.ceil((box[2] - box[0]) / res)))
    gx = box[0] + (np.arange(nx) + 0.5) * res
    gy = box[1] + (np.arange(ny) + 0.5) * res
    X, Y = np.meshgrid(gx, gy)
    nodes = np.stack([X.ravel(), Y.ravel()], 1)
    d, j = cKDTree(pts.xy).query(nodes)
    near = d <= pts.pitch_um
    S = np.where(near, pts.tissue[j], 0.0).reshape(ny, nx)
    k = pts.features.shape[1]
    F = np.zeros((k, ny, nx))
    if k:
        fi = np.nonzero(pts.has_features)[0]
        # features at the nodes: normalised Gaussian smoothing of the tissue spots' values
        both = np.r_[pts.xy[fi], nodes]
        vals = np.r_[pts.features[fi], np.zeros((len(nodes), k))]
        w = np.r_[np.ones(len(fi)), np.zeros(len(nodes))]
        sm = gaussian_smooth_points(both, vals, max(res, pts.pitch_um / 2), w)[len(fi):]
        F = sm.T.reshape(k, ny, nx) * (S > 0.5)
    oy, ox = (L - ny) // 2, (L - nx) // 2
    R = np.zeros((L, L))
    R[oy:oy + ny, ox:ox + nx] = 2 * S - 1
    Sc = np.zeros((L, L))
    Sc[oy:oy + ny, ox:ox + nx] = S
    Fc = np.zeros((k, L, L))
    Fc[:, oy:oy + ny, ox:ox + nx] = F
    # µm position of the canvas centre (pixel (L/2, L/2))
    centre = np.array([box[0] + (L / 2 - ox) * res, box[1] + (L / 2 - oy) * res])
    return R, Sc, Fc, centre, float(S.sum())


#: scale factors (MSI µm → ST µm) the coarse search tries by default
DEFAULT_SCALES = (0.9, 0.95, 1.0, 1.05, 1.1)


def coarse_grid_um(extent_um: float) -> float:
    """Coarse grid step: ~64 cells across the capture area, 40–150 µm."""
    return float(np.clip(extent_um / 64, 40.0, 150.0))


def coarse_search(
    pts: StPoints,
    raster: MsiRaster,
    capture_box: np.ndarray,
    *,
    rotation_step_deg: float = 4.0,
    scales: tuple[float, ...] = DEFAULT_SCALES,
    allow_reflection: bool = True,
    feature_weight: float = 1.0,
    res_um: float | None = None,
    n_best: int = 4,
) -> tuple[list[Candidate], dict]:
    """Best (reflection, rotation, scale, translation) candidates, highest score first."""
    t0 = time.perf_counter()
    box = np.asarray(capture_box, float)
    extent = float(max(box[2] - box[0], box[3] - box[1]))
    res = float(res_um or coarse_grid_um(extent))
    tis = raster.tissue_xy
    if len(tis) < 3:
        return [], {"grid_um": res, "n_candidates": 0}
    ubar = tis.mean(0)
    r_msi = float(np.percentile(np.linalg.norm(tis - ubar, axis=1), 99.5)) + 2 * float(raster.px.max())
    L = int(max(np.ceil(extent / res), np.ceil(2 * r_msi * max(scales) / res)) + 6)
    L += L % 2
    R, Sst, Fst, centre, s_sum = _st_images(pts, box, res, L)
    if s_sum <= 0:
        return [], {"grid_um": res, "n_candidates": 0}
    N = sfft.next_fast_len(2 * L)
    FR = sfft.rfft2(R, s=(N, N))
    lev = raster.level(res * 0.6, min_res_um=res / 2)
    chans = np.concatenate([lev.mask[None], lev.feats], 0)
    k_st, k_msi = Fst.shape[0], lev.feats.shape[0]
    st_on = Sst > 0.5
    h = L / 2
    refls = (False, True) if allow_reflection else (False,)
    rots = np.arange(0.0, 360.0, rotation_step_deg)
    f = (res / lev.res)[::-1, None]  # rows of the map to the level's image axes (y, x)
    off0 = np.array([(ubar[1] - lev.origin[1]) / lev.res[1], (ubar[0] - lev.origin[0]) / lev.res[0]])

    def render(c_img, rot, s, refl):
        Q = np.linalg.inv(similarity_matrix(rot, s, refl, np.zeros(2))[:2, :2])
        mat = f * np.array([[Q[1, 1], Q[1, 0]], [Q[0, 1], Q[0, 0]]])
        off = off0 - mat @ np.array([h, h])
        if c_img.ndim == 2:
            return ndimage.affine_transform(c_img, mat, off, output_shape=(L, L), order=1, cval=0.0)
        m3, o3 = np.eye(3), np.r_[0.0, off]
        m3[1:, 1:] = mat
        return ndimage.affine_transform(c_img, m3, o3, output_shape=(c_img.shape[0], L, L), order=1,
                                        cval=0.0)

    # pass 1: tissue masks, every (reflection, rotation, scale), translation by FFT
    shifts = []  # (mask score, sy, sx, rot, s, refl)
    for refl in refls:
        for rot in rots:
            for s in scales:
                M = render(lev.mask, rot, s, refl)
                if M.sum() <= 0:
                    continue
                cc = sfft.irfft2(FR * np.conj(sfft.rfft2(M, s=(N, N))), s=(N, N))
                for _ in range(2):  # the global maximum and the best translation away from it
                    kmax = int(np.argmax(cc))
                    dy, dx = np.unravel_index(kmax, cc.shape)
                    sy = dy - N if dy > N // 2 else dy
                    sx = dx - N if dx > N // 2 else dx
                    shifts.append((float(cc[dy, dx]) / s_sum, sy, sx, float(rot), float(s), refl))
                    cc[max(dy - 3, 0):dy + 4, max(dx - 3, 0):dx + 4] = -np.inf
    # pass 2: feature maps at those translations, best mask scores first; a candidate whose
    # mask score plus the largest possible feature score cannot beat the best so far is skipped
    shifts.sort(key=lambda t: -t[0])
    cands: list[Candidate] = []
    best_total = -np.inf
    n_feat = 0
    for mask_score, sy, sx, rot, s, refl in shifts:
        fs = 0.0
        if k_st and k_msi and mask_score + feature_weight > best_total and abs(sy) < L and abs(sx) < L:
            img = render(chans, rot, s, refl)
            Ms = _shifted(img[0], sy, sx)
            ov = st_on & (Ms > 0.5)
            n_feat += 1
            if ov.sum() > 3 * (k_st + k_msi):
                Gs = _shifted(img[1:], sy, sx)[:, ov] / Ms[ov]
                rho = canonical_correlations(Fst[:, ov].T, Gs.T)
                fs = float(rho[: min(k_st, k_msi)].mean()) if rho.size else 0.0
        A = similarity_matrix(rot, s, refl, np.zeros(2))
        A[:2, 2] = centre + np.array([sx, sy]) * res - A[:2, :2] @ ubar
        total = mask_score + feature_weight * fs
        best_total = max(best_total, total)
        cands.append(Candidate(A, total, mask_score, fs, rot, s, refl))
    cands.sort(key=lambda c: -c.score)
    best: list[Candidate] = []
    for c in cands:
        distinct = all(
            c.reflect != b.reflect or abs(((c.rotation_deg - b.rotation_deg + 180) % 360) - 180)
            > 2 * rotation_step_deg
            or np.linalg.norm(c.affine[:2, :2] @ ubar - b.affine[:2, :2] @ ubar
                              + c.affine[:2, 2] - b.affine[:2, 2]) > 4 * res
            for b in best)
        if distinct:
            best.append(c)
        if len(best) >= n_best:
            break
    diag = {"grid_um": res, "n_candidates": len(cands), "n_feature_scored": n_feat,
            "seconds": time.perf_counter() - t0}
    if best:
        b = best[0]
        other = next((c for c in cands if c.reflect != b.reflect or abs(
            ((c.rotation_deg - b.rotation_deg + 180) % 360) - 180) > 20), None)
        diag.update(coarse_score=b.score, coarse_mask_score=b.mask_score,
                    coarse_feature_score=b.feature_score, coarse_rotation_deg=b.rotation_deg,
                    coarse_scale=b.scale, coarse_reflect=b.reflect,
                    coarse_margin=(b.score - other.score) if other else None)
        log.info("coarse search: %d candidates on a %.0f um grid in %.1fs; best rot %.0f deg, "
                 "scale %.2f, reflect %s, mask %.3f, features %.3f", len(cands), res,
                 diag["seconds"], b.rotation_deg, b.scale, b.reflect, b.mask_score, b.feature_score)
    return best, diag
