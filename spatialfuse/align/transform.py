"""Spatial transforms MSI µm → ST µm: an affine part plus an optional smooth displacement field.

``apply(points)`` maps MSI-frame points into the ST frame: ``p' = A p``, then, if a displacement
grid is present, ``p'' = p' + d(p')`` with ``d`` bilinearly interpolated on a regular grid in the
ST frame. ``inverse(points)`` maps back (exact for the affine part, fixed-point iteration for the
displacement, which converges because fitted fields are smooth and small relative to the grid).
Serialised as JSON (``transform.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class DisplacementGrid:
    """Displacement (dx, dy) in µm sampled on a regular grid in the target (ST) frame."""

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

    def to_dict(self) -> dict:
        return {"origin": self.origin.tolist(), "spacing": float(self.spacing),
                "values": np.round(self.values, 4).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "DisplacementGrid":
        return cls(np.asarray(d["origin"], float), float(d["spacing"]), np.asarray(d["values"], float))


@dataclass
class Transform:
    """MSI µm → ST µm. ``affine`` is 3×3 homogeneous; ``displacement`` optional (non-rigid)."""

    affine: np.ndarray = field(default_factory=lambda: np.eye(3))
    displacement: DisplacementGrid | None = None
    meta: dict = field(default_factory=dict)

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
        q = pts
        if self.displacement is not None:
            q = pts.copy()
            for _ in range(n_iter):
                q = pts - self.displacement(q)
        Ainv = np.linalg.inv(self.affine)
        return q @ Ainv[:2, :2].T + Ainv[:2, 2]

    @property
    def linear(self) -> np.ndarray:
        return self.affine[:2, :2]

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
        return {"rotation_deg": rot, "reflect": bool(reflect), "scale_x": float(s[0]),
                "scale_y": float(s[1]), "mean_scale": float(np.sqrt(abs(det))),
                "translation_um": self.affine[:2, 2].tolist()}

    def to_dict(self) -> dict:
        return {
            "direction": "MSI um -> ST um",
            "affine": np.asarray(self.affine).tolist(),
            "affine_inverse": np.linalg.inv(self.affine).tolist(),
            "decomposition": self.decompose(),
            "displacement": None if self.displacement is None else self.displacement.to_dict(),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Transform":
        disp = d.get("displacement")
        return cls(np.asarray(d["affine"], float),
                   DisplacementGrid.from_dict(disp) if disp else None, dict(d.get("meta", {})))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "Transform":
        return cls.from_dict(json.loads(Path(path).read_text()))


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
