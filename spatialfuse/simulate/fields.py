"""Smooth random fields, tissue outlines and domain maps on the plane (µm)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SmoothField:
    """A stationary smooth random field: a sum of random cosines (random Fourier features).

    ``wavelength_um`` bounds the spatial scale; values have mean ≈ 0 and variance ≈ 1.
    """

    omega: np.ndarray  # (K, 2) angular frequencies, rad/µm
    phase: np.ndarray  # (K,)

    @classmethod
    def random(cls, rng: np.random.Generator, wavelength_um=(600.0, 2000.0), n_waves: int = 12):
        lam = rng.uniform(*wavelength_um, size=n_waves)
        ang = rng.uniform(0, 2 * np.pi, size=n_waves)
        omega = (2 * np.pi / lam)[:, None] * np.stack([np.cos(ang), np.sin(ang)], 1)
        return cls(omega=omega, phase=rng.uniform(0, 2 * np.pi, size=n_waves))

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64)
        return np.sqrt(2.0 / len(self.phase)) * np.cos(xy @ self.omega.T + self.phase).sum(1)


def tissue_mask_fn(rng: np.random.Generator, centre: np.ndarray, radius_um: float,
                   irregularity: float = 1.0):
    """An irregular, asymmetric blob (so rotation and reflection are identifiable).

    ``irregularity`` scales the outline's harmonics and notch: 0 gives a disc (a symmetric
    outline, where only the tissue's inner structure can tell rotation and reflection).
    Returns ``inside(xy) -> bool array`` and the polygon outline (for plotting).
    """
    harmonics = np.arange(2, 7)
    amp = irregularity * rng.uniform(0.04, 0.12, size=harmonics.size) / np.sqrt(harmonics - 1)
    ph = rng.uniform(0, 2 * np.pi, size=harmonics.size)
    notch_angle = rng.uniform(0, 2 * np.pi)

    def r_of(theta):
        r = 1 + (amp[None, :] * np.cos(harmonics[None, :] * theta[:, None] + ph[None, :])).sum(1)
        d = np.angle(np.exp(1j * (theta - notch_angle)))
        r = r - irregularity * 0.25 * np.exp(-(d / 0.18) ** 2)  # a notch breaks any symmetry
        return radius_um * r

    def inside(xy):
        v = np.asarray(xy, dtype=np.float64) - centre
        th = np.arctan2(v[:, 1], v[:, 0])
        return np.hypot(v[:, 0], v[:, 1]) <= r_of(th)

    t = np.linspace(0, 2 * np.pi, 400)
    outline = centre + r_of(t)[:, None] * np.stack([np.cos(t), np.sin(t)], 1)
    return inside, outline


def warped_voronoi_domains(rng: np.random.Generator, centre: np.ndarray, radius_um: float,
                           n_domains: int, warp_um: float = 180.0):
    """Domains as Voronoi cells of ~2 seeds per domain, with curved (warped) boundaries.

    Every domain gets at least one seed; seeds sharing a label make non-convex, split domains,
    which is harder than stripes or rings. Returns ``domain(xy) -> int array``.
    """
    n_seeds = 2 * n_domains
    r = radius_um * np.sqrt(rng.uniform(0, 1, n_seeds))
    a = rng.uniform(0, 2 * np.pi, n_seeds)
    seeds = centre + np.stack([r * np.cos(a), r * np.sin(a)], 1)
    labels = np.r_[np.arange(n_domains), rng.integers(0, n_domains, n_seeds - n_domains)]
    fx = SmoothField.random(rng, wavelength_um=(400.0, 1200.0))
    fy = SmoothField.random(rng, wavelength_um=(400.0, 1200.0))

    def domain(xy):
        xy = np.asarray(xy, dtype=np.float64)
        w = xy + warp_um * np.stack([fx(xy), fy(xy)], 1)
        d2 = ((w[:, None, :] - seeds[None, :, :]) ** 2).sum(-1)
        return labels[np.argmin(d2, 1)]

    return domain
