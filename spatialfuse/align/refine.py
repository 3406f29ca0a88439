"""Refinement: affine, then a regularised cubic B-spline deformation, by Gauss–Newton.

The registration is fitted in its inverse form, the one an image registration evaluates:
every ST observation point ``x`` (tissue spots and empty capture positions, see
:func:`~spatialfuse.align.features.st_points`) is pulled into the MSI frame by

    u(x) = P · (x + e(x)) + q,        e(x) = Σₖ φₖ(x) cₖ  (cubic B-spline, control spacing h)

and the blurred MSI images are read there. The objective, summed over points, is

    Σ v·(t − M(u))²  +  (w_f / k) Σ_c v·(y_c − [1, M, H₁..H_m](u) β_c)²  +  λ ‖D² c‖² + ε ‖c‖²

with ``t`` the ST tissue target, ``M`` the MSI tissue fraction, ``y`` the ST principal
components, ``H`` the MSI principal components (× tissue), ``β`` a linear map between the two
feature sets refitted at every evaluation (so signs and order of components do not matter),
``v`` the MSI raster footprint (points the MSI never imaged count as a fixed penalty, not as a
match), ``D²`` second differences of the control grid (bending energy) weighted by the
configurable ``smoothness`` relative to the data curvature. Levels go coarse to fine (both sides
blurred by the same σ in µm); the non-rigid part joins from the level given by
``nonrigid_from_um``. Every step is a Levenberg–Marquardt step on the sparse normal equations
(memory linear in the number of points and control points).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .features import MsiLevel, MsiRaster, StPoints, gaussian_smooth_points

log = logging.getLogger(__name__)

#: penalty per point outside the MSI raster before calibration (mask channel, each feature
#: channel); :meth:`_Objective.calibrate` replaces them by the mean residual of the points inside
_INVALID_MASK, _INVALID_FEAT = 0.25, 1.0
#: ridge on the B-spline coefficients relative to the data curvature: keeps the field free of
#: the global (affine) part, which the affine parameters carry, and zero where there is no data
_RIDGE = 0.05


@dataclass
class BSplineField:
    """A 2-D displacement field ``e(x) = Σ φₖ(x) cₖ`` on a cubic B-spline control grid (µm).

    Control points outside the grid count as zero, so the field falls to exactly zero within
    two spacings beyond the grid.
    """

    origin: np.ndarray
    spacing: float
    shape: tuple[int, int]  # (ny, nx) control points
    coef: np.ndarray  # (ny·nx, 2) µm

    @classmethod
    def covering(cls, lo: np.ndarray, hi: np.ndarray, spacing: float) -> "BSplineField":
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        n = np.ceil((hi - lo) / spacing).astype(int) + 3
        origin = lo - spacing
        return cls(origin, float(spacing), (int(n[1]), int(n[0])), np.zeros((int(n[0] * n[1]), 2)))

    @property
    def n(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        ny, nx = self.shape
        return self.origin - 2 * self.spacing, self.origin + (np.array([nx, ny]) + 1) * self.spacing

    def basis(self, xy: np.ndarray) -> sp.csr_matrix:
        """Sparse (n_points × n_control) matrix of cubic B-spline weights."""
        xy = np.asarray(xy, float)
        ny, nx = self.shape
        g = (xy - self.origin) / self.spacing
        i0 = np.floor(g).astype(int)
        t = g - i0
        B = [(1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6,
             t**3 / 6]  # each (n, 2): weights for offsets -1..2 per axis
        rows, cols, vals = [], [], []
        ar = np.arange(len(xy))
        for a in range(4):
            for b in range(4):
                ix, iy = i0[:, 0] + a - 1, i0[:, 1] + b - 1
                ok = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
                rows.append(ar[ok])
                cols.append(iy[ok] * nx + ix[ok])
                vals.append(B[a][ok, 0] * B[b][ok, 1])
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(len(xy), self.n))

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        out = np.zeros((len(xy), 2))
        for s in range(0, len(xy), 200000):
            out[s:s + 200000] = self.basis(xy[s:s + 200000]) @ self.coef
        return out

    def bending(self, active: np.ndarray | None = None) -> sp.csr_matrix:
        """Σ of squared second differences (xx, yy, 2·xy) of the control values, as a matrix;
        with ``active`` (bool per control point) only the differences among active points."""
        ny, nx = self.shape

        def d2(n):
            return sp.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(max(n - 2, 0), n))

        def d1(n):
            return sp.diags([-1.0, 1.0], [0, 1], shape=(max(n - 1, 0), n))

        Iy, Ix = sp.identity(ny), sp.identity(nx)
        Dxx = sp.kron(Iy, d2(nx))
        Dyy = sp.kron(d2(ny), Ix)
        Dxy = sp.kron(d1(ny), d1(nx))
        if active is not None:
            off = (~np.asarray(active, bool)).astype(float)

            def keep(D):
                D = D.tocsr()
                return D[np.asarray(abs(D) @ off).ravel() == 0]

            Dxx, Dyy, Dxy = keep(Dxx), keep(Dyy), keep(Dxy)
        return (Dxx.T @ Dxx + Dyy.T @ Dyy + 2 * Dxy.T @ Dxy).tocsr()

    def touching(self, xy: np.ndarray) -> np.ndarray:
        """Bool per control point: its support (± 2 spacings) holds at least one of ``xy``."""
        ny, nx = self.shape
        g = np.floor((np.asarray(xy, float) - self.origin) / self.spacing).astype(int)
        hit = np.zeros((ny, nx), bool)
        for a in range(-1, 3):
            for b in range(-1, 3):
                ix, iy = g[:, 0] + a, g[:, 1] + b
                ok = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
                hit[iy[ok], ix[ok]] = True
        return hit.ravel()


def group_mean(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each channel's value replaced by the mean over its group (``groups``: one id per
    channel): the residual a group of channels is balanced by, in the fit and its check."""
    values, groups = np.asarray(values, float), np.asarray(groups, int)
    return np.array([values[groups == g].mean() for g in groups])


class _Objective:
    """Data term of one pyramid level, for parameters θ = [P (4), q (2), cₓ (n), c_y (n)]."""

    def __init__(self, pts: StPoints, level: MsiLevel, sigma_um: float, feature_weight: float,
                 field: BSplineField | None, balance: bool = False):
        self.x = pts.xy
        self.n = len(self.x)
        self.level = level
        self.t = np.clip(gaussian_smooth_points(self.x, pts.tissue, sigma_um), 0, 1)
        self.fi = np.nonzero(pts.has_features)[0]
        k = pts.features.shape[1]
        self.k = k
        if k and len(self.fi) > k + 3:
            Y = gaussian_smooth_points(self.x[self.fi], pts.features[self.fi], sigma_um)
            self.Y = (Y - Y.mean(0)) / (Y.std(0) + 1e-9)
            self.wf = feature_weight / k
        else:
            self.Y, self.wf, self.k = np.zeros((len(self.fi), 0)), 0.0, 0
        groups = getattr(pts, "groups", None)
        self.groups = (np.zeros(self.k, int) if groups is None or self.k == 0
                       else np.asarray(groups, int)[: self.k])
        self.field = field
        self.Phi = field.basis(self.x) if field is not None else None
        self.pen_mask, self.pen_feat = _INVALID_MASK, _INVALID_FEAT
        self.pen_feat_c = np.full(self.k, _INVALID_FEAT)
        self._wfc: np.ndarray | None = None  # per-channel weights when groups are balanced
        self.balance, self.feature_weight = balance, feature_weight

    @property
    def wfc(self) -> np.ndarray:
        """Weight of each feature channel (``wf`` for all of them unless balanced by group)."""
        return self._wfc if self._wfc is not None else np.full(self.k, self.wf)

    def calibrate(self, theta: np.ndarray) -> None:
        """Set the penalty of a point outside the MSI raster to the mean residual of the points
        inside it at ``theta`` (fixed for the level). Points the MSI never imaged then count as
        an average match: covering more of the capture area is neither rewarded nor penalised,
        so partial overlap (a cropped raster, tissue cut at the capture edge) does not pull the
        registration towards larger scales or wrong placements."""
        ev = self.evaluate(theta)
        v = np.clip(ev["v"], 0, 1)
        if v.sum() > 10:
            self.pen_mask = float((v * ev["r0"] ** 2).sum() / v.sum())
        if self.k:
            vf = v[self.fi]
            if vf.sum() > 10:
                self.pen_feat = float((vf[:, None] * ev["rf"] ** 2).sum() / vf.sum() / self.k)
                per_c = (vf[:, None] * ev["rf"] ** 2).sum(0) / vf.sum()
                self.pen_feat_c = group_mean(per_c, self.groups)
            if self.balance:
                # each channel weighted by the inverse of its residual variance (as a likelihood
                # would): the feature maps are mostly noise at the spot scale, the tissue mask
                # is not, so the mask carries the fine fit and the features break its symmetries
                self.wf = self.feature_weight * self.pen_mask / max(self.pen_feat, 1e-12)
                if len(np.unique(self.groups)) > 1:  # each group by its own residual variance
                    self._wfc = self.feature_weight * self.pen_mask / np.maximum(self.pen_feat_c, 1e-12)

    def u(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        P, q = theta[:4].reshape(2, 2), theta[4:6]
        z = self.x
        if self.Phi is not None and theta.size > 6:
            c = theta[6:].reshape(2, -1).T
            z = z + self.Phi @ c
        return z @ P.T + q, z

    def evaluate(self, theta: np.ndarray, jac: bool = False):
        """Data objective (sum); with ``jac``: also per-row gradients for the normal equations."""
        u, z = self.u(theta)
        vals, valid, grads = self.level.sample(u, with_grad=jac)
        v = np.clip(valid, 0.0, 1.0)
        M = vals[:, 0]
        r0 = self.t - M
        E = float((v * r0**2).sum() + ((1 - v) * self.pen_mask).sum())
        out = {"u": u, "z": z, "v": v, "r0": r0}
        if self.k:
            fi = self.fi
            D = np.c_[np.ones(len(fi)), vals[fi]]  # [1, M, H...]
            vf = v[fi]
            DtW = D.T * vf
            beta = np.linalg.solve(DtW @ D + 1e-6 * np.eye(D.shape[1]), DtW @ self.Y)
            rf = self.Y - D @ beta
            if self._wfc is None:
                E += float(self.wf * ((vf[:, None] * rf**2).sum() + ((1 - vf) * self.pen_feat * self.k).sum()))
            else:
                wfc = self._wfc
                E += float((wfc * (vf[:, None] * rf**2).sum(0)).sum()
                           + ((1 - vf).sum() * (wfc * self.pen_feat_c).sum()))
            out.update(beta=beta, rf=rf)
            ss_tot = float((vf[:, None] * self.Y**2).sum())
            out["r2"] = 1 - float((vf[:, None] * rf**2).sum()) / max(ss_tot, 1e-12)
        out["E"] = E
        if jac:
            out["grads"] = grads
        return out

    def normal_equations(self, theta: np.ndarray, ev: dict, nonrigid: bool):
        """H = JᵀJ and g = Jᵀr (sparse, per-point aggregation; r the weighted residuals)."""
        grads, v, z = ev["grads"], ev["v"], ev["z"]
        n = self.n
        # rows: the mask channel at every point, then each feature channel at feature points
        sw0 = np.sqrt(v)
        G = [-(sw0[:, None] * grads[:, 0, :])]
        R = [sw0 * ev["r0"]]
        idx = [np.arange(n)]
        if self.k:
            fi = self.fi
            beta = ev["beta"]  # rows: 1, M, H_1..H_m
            wfc = self.wfc
            gm = grads[fi]  # (n_f, 1 + m, 2)
            for c in range(self.k):
                swf = np.sqrt(wfc[c] * v[fi])
                dpred = np.einsum("j,njd->nd", beta[1:, c], gm)
                G.append(-(swf[:, None] * dpred))
                R.append(swf * ev["rf"][:, c])
                idx.append(fi)
        G, R, idx = np.concatenate(G), np.concatenate(R), np.concatenate(idx)
        Z = z[idx]
        Ja = np.stack([G[:, 0] * Z[:, 0], G[:, 0] * Z[:, 1], G[:, 1] * Z[:, 0], G[:, 1] * Z[:, 1],
                       G[:, 0], G[:, 1]], 1)
        Haa, ga = Ja.T @ Ja, Ja.T @ R
        if not nonrigid or self.Phi is None:
            return Haa, ga
        P = theta[:4].reshape(2, 2)
        h = G @ P  # d r / d (c_k, b) = h_b φ_k
        nb = n

        def per_point(w):
            return np.bincount(idx, w, minlength=nb)

        Phi = self.Phi
        Hnn = [[None, None], [None, None]]
        for a in range(2):
            for b in range(a, 2):
                blk = (Phi.T @ sp.diags(per_point(h[:, a] * h[:, b])) @ Phi)
                Hnn[a][b] = blk
                if a != b:
                    Hnn[b][a] = blk.T
        Han = np.hstack([(Phi.T @ np.stack([per_point(Ja[:, j] * h[:, b]) for j in range(6)], 1)).T
                         for b in range(2)])
        gn = np.concatenate([Phi.T @ per_point(h[:, b] * R) for b in range(2)])
        H = sp.bmat([[sp.csr_matrix(Haa), sp.csr_matrix(Han)],
                     [sp.csr_matrix(Han.T), sp.bmat(Hnn)]]).tocsc()
        return H, np.concatenate([ga, gn])


def _scales(theta: np.ndarray) -> np.ndarray:
    """Singular values of the MSI → ST affine's linear part (θ holds its inverse)."""
    return 1.0 / np.linalg.svd(theta[:4].reshape(2, 2), compute_uv=False)


def similarity_basis(theta: np.ndarray) -> np.ndarray:
    """6 × 4 basis of the similarity transforms (rotation, one scale, shift) among the affine
    parameters θ, with the reflection of ``theta``: the inverse's linear part is
    ``[[a, −b], [b, a]]``, or ``[[a, b], [b, −a]]`` when it mirrors. Both are linear in (a, b),
    so a similarity fit is the affine fit restricted to this subspace."""
    mirror = np.linalg.det(theta[:4].reshape(2, 2)) < 0
    B = np.zeros((6, 4))
    B[:4, 0] = [1.0, 0.0, 0.0, -1.0] if mirror else [1.0, 0.0, 0.0, 1.0]
    B[:4, 1] = [0.0, 1.0, 1.0, 0.0] if mirror else [0.0, -1.0, 1.0, 0.0]
    B[4, 2] = B[5, 3] = 1.0
    return B


def nearest_similarity(theta: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """The similarity nearest to the affine θ (orthogonal projection of its linear part onto
    :func:`similarity_basis`), shifted so that it pulls ``anchor`` (ST µm, e.g. the tissue
    centroid) to the same MSI position as θ does."""
    B = similarity_basis(theta)
    L = B[:4, :2]
    P = theta[:4]
    P_s = L @ (L.T @ P / (L**2).sum(0))
    a = np.asarray(anchor, float)
    u = P.reshape(2, 2) @ a + theta[4:6]
    return np.r_[P_s, u - P_s.reshape(2, 2) @ a]


def _lm(obj: _Objective, theta: np.ndarray, *, nonrigid: bool, reg: sp.spmatrix | None,
        max_iter: int, tol: float = 1e-5,
        scale_bounds: tuple[float, float] | None = None,
        basis: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Levenberg–Marquardt on the objective (+ cᵀ R c for the non-rigid coefficients).
    ``scale_bounds``: a step that takes either scale of the affine outside (lo, hi) is refused
    like one that raises the objective (shorter steps are tried), unless the start is outside.
    ``basis`` (6 × m, affine only): steps are taken within its span (θ must start in it)."""
    n6 = 6
    if scale_bounds is not None:
        s0 = _scales(theta)
        if s0.min() < scale_bounds[0] or s0.max() > scale_bounds[1]:
            scale_bounds = None

    def total(th, ev):
        E = ev["E"]
        if nonrigid and reg is not None:
            c = th[n6:]
            E += float(c @ (reg @ c))
        return E

    ev = obj.evaluate(theta, jac=True)
    E = total(theta, ev)
    mu = 1e-3
    it = 0
    for it in range(max_iter):
        H, g = obj.normal_equations(theta, ev, nonrigid)
        if basis is not None:
            H, g = basis.T @ H @ basis, basis.T @ g
        if nonrigid and reg is not None:
            Rfull = sp.block_diag([sp.csr_matrix((n6, n6)), reg]).tocsc()
            g = g + Rfull @ theta
            H = H + Rfull
        accepted = False
        for _ in range(8):
            if sp.issparse(H):
                d = H.diagonal()
                step = -spla.spsolve((H + sp.diags(mu * (d + 1e-9))).tocsc(), g)
            else:
                step = -np.linalg.solve(H + np.diag(mu * (np.diag(H) + 1e-9)), g)
            th_new = theta + (step if basis is None else basis @ step)
            if scale_bounds is not None:
                s_new = _scales(th_new)
                if not np.all(np.isfinite(s_new)) or s_new.min() < scale_bounds[0] \
                        or s_new.max() > scale_bounds[1]:
                    mu *= 6
                    continue
            ev_new = obj.evaluate(th_new, jac=False)
            E_new = total(th_new, ev_new)
            if np.isfinite(E_new) and E_new < E:
                accepted = True
                break
            mu *= 6
        if not accepted:
            break
        rel = (E - E_new) / max(E, 1e-12)
        theta, E = th_new, E_new
        mu = max(mu / 4, 1e-7)
        ev = obj.evaluate(theta, jac=True)
        if rel < tol:
            break
    return theta, {"E": E, "iterations": it + 1, "r2": ev.get("r2")}


def _affine_to_theta(A_msi_to_st: np.ndarray) -> np.ndarray:
    Ainv = np.linalg.inv(A_msi_to_st)
    return np.r_[Ainv[:2, :2].ravel(), Ainv[:2, 2]]


def _theta_to_affine(theta: np.ndarray) -> np.ndarray:
    Ainv = np.eye(3)
    Ainv[:2, :2] = theta[:4].reshape(2, 2)
    Ainv[:2, 2] = theta[4:6]
    return np.linalg.inv(Ainv)


def refine(
    pts: StPoints,
    raster: MsiRaster,
    A0: np.ndarray,
    *,
    levels_um: tuple[float, ...],
    feature_weight: float = 1.0,
    nonrigid: bool = True,
    nonrigid_from_um: float = 200.0,
    spacing_um: float = 400.0,
    smoothness: float = 1.0,
    max_iter: int = 30,
    box: np.ndarray | None = None,
    balance: bool = False,
    scale_bounds: tuple[float, float] | None = None,
    similarity: bool = False,
) -> tuple[np.ndarray, BSplineField | None, dict]:
    """Refine an MSI → ST affine ``A0`` coarse to fine; optionally add a B-spline deformation.
    ``scale_bounds``: the affine's scales (singular values) are kept within (lo, hi) when they
    start there (a prior on the section's size: a blurred partial outline otherwise lets the
    affine grow along its missing side). ``similarity``: fit a similarity (rotation, one scale,
    shift) instead, from the similarity nearest ``A0`` (:func:`nearest_similarity`, anchored
    at the ST tissue centroid); no B-spline.

    Returns the affine (MSI µm → ST µm), the fitted inverse field ``e`` (``u = A⁻¹(x + e(x))``)
    or None, and diagnostics per level (objective, feature R², iterations, seconds).
    """
    t0 = time.perf_counter()
    theta = _affine_to_theta(A0)
    basis = None
    if similarity:
        nonrigid = False
        anchor = pts.xy[pts.tissue > 0.5].mean(0) if (pts.tissue > 0.5).any() else pts.xy.mean(0)
        theta = nearest_similarity(theta, anchor)
        basis = similarity_basis(theta)
    field = None
    if nonrigid:
        lo, hi = (pts.xy.min(0), pts.xy.max(0)) if box is None else (box[:2], box[2:])
        field = BSplineField.covering(lo, hi, spacing_um)
    diag: dict = {"levels": []}
    for sigma in levels_um:
        scale = float(np.sqrt(abs(np.linalg.det(_theta_to_affine(theta)[:2, :2]))))
        msi_sigma = np.sqrt(sigma**2 + pts.footprint_sigma_um**2) / scale
        level = raster.level(msi_sigma)
        use_nr = nonrigid and sigma <= nonrigid_from_um
        obj = _Objective(pts, level, sigma, feature_weight, field if use_nr else None, balance)
        obj.calibrate(theta if use_nr and theta.size > 6 else theta[:6])
        reg = None
        if use_nr:
            if theta.size == 6:
                theta = np.r_[theta, np.zeros(2 * field.n)]
            # regularisation relative to the data curvature of this level (dimensionless strength)
            ev = obj.evaluate(theta, jac=True)
            H, _ = obj.normal_equations(theta, ev, True)
            dn = H.diagonal()[6:]
            scale_h = float(dn[dn > 0].mean()) if (dn > 0).any() else 1.0
            B = field.bending()
            Rc = smoothness * scale_h * B + _RIDGE * scale_h * sp.identity(field.n)
            reg = sp.block_diag([Rc, Rc]).tocsr()
            th, info = _lm(obj, theta, nonrigid=True, reg=reg, max_iter=max_iter,
                           scale_bounds=scale_bounds)
        else:
            th, info = _lm(obj, theta[:6], nonrigid=False, reg=None, max_iter=max_iter,
                           scale_bounds=scale_bounds, basis=basis)
            th = np.r_[th, theta[6:]]
        theta = th
        info.update(sigma_um=float(sigma), nonrigid=bool(use_nr), n_points=obj.n,
                    E_per_point=info["E"] / obj.n)
        diag["levels"].append(info)
        log.info("refine sigma %.0f um%s: E/pt %.4f, feature R2 %s, %d it", sigma,
                 " (+non-rigid)" if use_nr else "", info["E_per_point"],
                 "n/a" if info["r2"] is None else f"{info['r2']:.3f}", info["iterations"])
    A = _theta_to_affine(theta)
    if field is not None and theta.size > 6:
        field.coef = theta[6:].reshape(2, -1).T.copy()
    else:
        field = None
    diag["seconds"] = time.perf_counter() - t0
    diag["final_E_per_point"] = diag["levels"][-1]["E_per_point"] if diag["levels"] else None
    diag["final_feature_r2"] = diag["levels"][-1]["r2"] if diag["levels"] else None
    return A, field, diag


def objective_at(pts: StPoints, raster: MsiRaster, A: np.ndarray, sigma_um: float,
                 feature_weight: float) -> dict:
    """The data objective of an affine at one level (for ranking coarse candidates)."""
    scale = float(np.sqrt(abs(np.linalg.det(A[:2, :2]))))
    level = raster.level(np.sqrt(sigma_um**2 + pts.footprint_sigma_um**2) / scale)
    obj = _Objective(pts, level, sigma_um, feature_weight, None)
    obj.calibrate(_affine_to_theta(A))
    ev = obj.evaluate(_affine_to_theta(A))
    return {"E_per_point": ev["E"] / obj.n, "r2": ev.get("r2")}


def heldout_residuals(pts: StPoints, raster: MsiRaster, A: np.ndarray, field: BSplineField | None,
                      sigma_um: float) -> tuple[float, np.ndarray]:
    """Mean squared residual per imaged point of the tissue mask and of each feature channel
    (points outside the MSI raster left out) of ``A`` (+ the inverse ``field``) on ``pts``: the
    criterion on which a deformation fitted to other points is judged."""
    scale = float(np.sqrt(abs(np.linalg.det(A[:2, :2]))))
    level = raster.level(np.sqrt(sigma_um**2 + pts.footprint_sigma_um**2) / scale)
    obj = _Objective(pts, level, sigma_um, 1.0, field)
    theta = _affine_to_theta(A)
    if field is not None:
        theta = np.r_[theta, field.coef.T.ravel()]
    ev = obj.evaluate(theta)
    v = ev["v"]
    mask = float((v * ev["r0"] ** 2).sum() / max(v.sum(), 1e-9))
    feat = np.zeros(obj.k)
    if obj.k:
        vf = v[obj.fi]
        feat = (vf[:, None] * ev["rf"] ** 2).sum(0) / max(vf.sum(), 1e-9)
    return mask, feat
