"""Spatial transforms MSI µm → ST µm: an affine part plus an optional smooth displacement field.

``apply(points)`` maps MSI-frame points into the ST frame: ``y = A u``, then, if a displacement
grid is present, ``x = y + d(y)`` with ``d`` bilinearly interpolated on a regular grid in the
ST frame. ``inverse(points)`` maps ST points back. When the registration fitted the inverse
field explicitly (``inverse_displacement`` ``e``: ``u = A⁻¹ (x + e(x))``, the form the image
registration optimises) the inverse is that closed form; otherwise it is a fixed-point iteration
on ``d``, which converges because fitted fields are smooth (|∇d| < 1). Serialised as JSON
(``transform.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class DisplacementGrid:
    """Displacement (dx, dy) in µm sampled on a regular grid in the target (ST) frame.

    Bilinear inside the grid; beyond its edge the border value is kept (fitted fields decay to
    zero there).
    """

    origin: np.ndarray  # (2,) µm, the grid's (0, 0) node
    spacing: float  # µm between nodes
    values: np.ndarray  # (ny, nx, 2)

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float64)
        ny, nx, _ = self.values.shape
        g = (pts - self.origin) / self.spacing
        gx = np.clip(g[:, 0], 0, nx - 1.000001)
        gy = np.clip(g[:, 1], 0, ny - 1.000001)
        x0, y0 = np.floor(gx).astype(int), np.floor(gy).astype(int)
        fx, fy = (gx - x0)[:, None], (gy - y0)[:, None]
        v = self.values
        return ((1 - fx) * (1 - fy) * v[y0, x0] + fx * (1 - fy) * v[y0, x0 + 1]
                + (1 - fx) * fy * v[y0 + 1, x0] + fx * fy * v[y0 + 1, x0 + 1])

    def nodes(self) -> np.ndarray:
        """(ny·nx, 2) µm positions of the grid nodes (row-major)."""
        ny, nx, _ = self.values.shape
        gx, gy = np.meshgrid(np.arange(nx), np.arange(ny))
        return np.stack([gx.ravel(), gy.ravel()], 1) * self.spacing + self.origin

    def max_abs_um(self) -> float:
        return float(np.abs(self.values).max()) if self.values.size else 0.0

    def to_dict(self) -> dict:
        return {"origin": self.origin.tolist(), "spacing": float(self.spacing),
                "shape": list(self.values.shape[:2]), "values": np.round(self.values, 3).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "DisplacementGrid":
        return cls(np.asarray(d["origin"], float), float(d["spacing"]), np.asarray(d["values"], float))

    @classmethod
    def from_function(cls, fn, lo: np.ndarray, hi: np.ndarray, spacing: float) -> "DisplacementGrid":
        """Sample a displacement function ``fn(points) -> (n, 2)`` on a grid over [lo, hi]."""
        lo = np.asarray(lo, float)
        n = np.ceil((np.asarray(hi, float) - lo) / spacing).astype(int) + 1
        g = cls(lo, float(spacing), np.zeros((n[1], n[0], 2)))
        g.values = np.asarray(fn(g.nodes()), float).reshape(n[1], n[0], 2)
        return g


@dataclass
class Transform:
    """MSI µm → ST µm. ``affine`` 3×3 homogeneous; ``displacement`` optional (non-rigid, forward);
    ``inverse_displacement`` optional (the fitted inverse field, see the module docstring)."""

    affine: np.ndarray = field(default_factory=lambda: np.eye(3))
    displacement: DisplacementGrid | None = None
    meta: dict = field(default_factory=dict)
    inverse_displacement: DisplacementGrid | None = None

    def apply_affine(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float64)
        return pts @ self.affine[:2, :2].T + self.affine[:2, 2]

    def apply(self, pts: np.ndarray) -> np.ndarray:
        q = self.apply_affine(pts)
        if self.displacement is not None:
            q = q + self.displacement(q)
        return q

    __call__ = apply

    def inverse(self, pts: np.ndarray, n_iter: int = 30) -> np.ndarray:
        """ST µm → MSI µm."""
        pts = np.asarray(pts, dtype=np.float64)
        if self.inverse_displacement is not None:
            q = pts + self.inverse_displacement(pts)
        elif self.displacement is not None:
            q = pts.copy()
            for _ in range(n_iter):
                q = pts - self.displacement(q)
        else:
            q = pts
        Ainv = np.linalg.inv(self.affine)
        return q @ Ainv[:2, :2].T + Ainv[:2, 2]

    @property
    def linear(self) -> np.ndarray:
        return self.affine[:2, :2]

    @property
    def is_nonrigid(self) -> bool:
        return self.displacement is not None

    def inverse_consistency_um(self, pts: np.ndarray) -> float:
        """Largest |T⁻¹(T(u)) − u| over ``pts`` (µm): how well forward and inverse agree."""
        pts = np.asarray(pts, float)
        return float(np.abs(self.inverse(self.apply(pts)) - pts).max()) if len(pts) else 0.0

    def decompose(self) -> dict:
        """Rotation (deg), reflection, scales and shear of the affine part (for QC/reporting)."""
        L = self.linear
        det = float(np.linalg.det(L))
        reflect = det < 0
        Lr = L @ np.diag([-1.0, 1.0]) if reflect else L
        # polar decomposition: Lr = R S
        U, s, Vt = np.linalg.svd(Lr)
        R = U @ Vt
        rot = float(np.degrees(np.arctan2(R[1, 0], R[0, 0])) % 360)
        out = {"rotation_deg": rot, "reflect": bool(reflect), "scale_x": float(s[0]),
               "scale_y": float(s[1]), "mean_scale": float(np.sqrt(abs(det))),
               "translation_um": self.affine[:2, 2].tolist()}
        if self.displacement is not None:
            out["nonrigid_max_um"] = self.displacement.max_abs_um()
        return out

    def to_dict(self) -> dict:
        return {
            "direction": "MSI um -> ST um",
            "model": "x = A u + d(A u); inverse u = A^-1 (x + e(x)); d, e bilinear grids in ST um",
            "affine": np.asarray(self.affine).tolist(),
            "affine_inverse": np.linalg.inv(self.affine).tolist(),
            "decomposition": self.decompose(),
            "displacement": None if self.displacement is None else self.displacement.to_dict(),
            "inverse_displacement": (None if self.inverse_displacement is None
                                     else self.inverse_displacement.to_dict()),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Transform":
        disp, inv = d.get("displacement"), d.get("inverse_displacement")
        return cls(np.asarray(d["affine"], float),
                   DisplacementGrid.from_dict(disp) if disp else None, dict(d.get("meta", {})),
                   DisplacementGrid.from_dict(inv) if inv else None)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "Transform":
        return cls.from_dict(json.loads(Path(path).read_text()))


def from_inverse_field(affine: np.ndarray, inverse_field, lo: np.ndarray, hi: np.ndarray,
                       spacing: float, meta: dict | None = None, n_iter: int = 40) -> Transform:
    """Build a non-rigid :class:`Transform` from the form the registration fits.

    ``inverse_field(x) -> e(x)`` (ST µm → µm) defines ``u = A⁻¹ (x + e(x))``. The forward field
    ``d`` (``x = y + d(y)`` with ``y = A u``) solves ``d(y) = −e(y + d(y))``, found by fixed-point
    iteration at every node of a grid over [lo, hi]; both fields are stored.
    """

    def forward(y):
        d = np.zeros_like(y)
        for _ in range(n_iter):
            d = -inverse_field(y + d)
        return d

    return Transform(np.asarray(affine, float), DisplacementGrid.from_function(forward, lo, hi, spacing),
                     dict(meta or {}), DisplacementGrid.from_function(inverse_field, lo, hi, spacing))


def similarity_matrix(rotation_deg: float, scale: float, reflect: bool,
                      translation: np.ndarray) -> np.ndarray:
    """3×3 homogeneous matrix of x ↦ s·R·F·x + t (F = reflection about the y axis if ``reflect``)."""
    t = np.deg2rad(rotation_deg)
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    F = np.diag([-1.0, 1.0]) if reflect else np.eye(2)
    A = np.eye(3)
    A[:2, :2] = scale * R @ F
    A[:2, 2] = translation
    return A


def fit_affine(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares affine (3×3) with ``dst ≈ A src``; needs ≥ 3 non-collinear points."""
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, float)
    S = np.c_[src, np.ones(len(src))] * np.sqrt(w)[:, None]
    sol, *_ = np.linalg.lstsq(S, dst * np.sqrt(w)[:, None], rcond=None)
    A = np.eye(3)
    A[:2, :] = sol.T
    return A


class ThinPlateSpline:
    """2-D thin-plate spline ``f(u) = A u + Σ wᵢ φ(|u − uᵢ|)``, φ(r) = r² log r, with optional
    smoothing ``regularization`` (µm², added to the kernel diagonal)."""

    def __init__(self, src: np.ndarray, dst: np.ndarray, regularization: float = 0.0):
        src, dst = np.asarray(src, float), np.asarray(dst, float)
        n = len(src)
        self.src = src
        K = self._kernel(src, src) + regularization * np.eye(n)
        P = np.c_[np.ones(n), src]
        L = np.zeros((n + 3, n + 3))
        L[:n, :n], L[:n, n:], L[n:, :n] = K, P, P.T
        rhs = np.zeros((n + 3, 2))
        rhs[:n] = dst
        sol = np.linalg.lstsq(L, rhs, rcond=None)[0]
        self.w, self.a = sol[:n], sol[n:]  # a: rows (1, x, y)

    @staticmethod
    def _kernel(a, b):
        r2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = 0.5 * r2 * np.log(r2)
        return np.nan_to_num(k)

    @property
    def affine(self) -> np.ndarray:
        A = np.eye(3)
        A[:2, 2] = self.a[0]
        A[:2, :2] = self.a[1:].T
        return A

    def nonlinear(self, pts: np.ndarray) -> np.ndarray:
        out = np.zeros((len(pts), 2))
        for s in range(0, len(pts), 20000):
            out[s:s + 20000] = self._kernel(np.asarray(pts[s:s + 20000], float), self.src) @ self.w
        return out

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, float)
        return pts @ self.a[1:] + self.a[0] + self.nonlinear(pts)
