"""Peaks on the m/z axis: ppm binning of centroids onto a common axis, peak picking and
centroiding of profile spectra. Pure numpy/scipy functions on 1-D arrays."""

from __future__ import annotations

import numpy as np


def ppm_bins(mz: np.ndarray, tol_ppm: float, groups: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Group m/z values whose sorted neighbours lie within ``tol_ppm`` of each other.

    Returns the bin centres (mean m/z of the members, ascending) and, per bin, the number of
    distinct ``groups`` (e.g. spectra) with a member — the number of members when ``groups`` is
    None.
    """
    mz = np.asarray(mz, dtype=np.float64)
    if mz.size == 0:
        return mz, np.zeros(0, dtype=np.int64)
    order = np.argsort(mz, kind="stable")
    s = mz[order]
    gaps = np.diff(s) > s[:-1] * tol_ppm * 1e-6
    starts = np.r_[0, np.nonzero(gaps)[0] + 1]
    counts = np.diff(np.r_[starts, s.size])
    centres = np.add.reduceat(s, starts) / counts
    if groups is not None:
        bin_of = np.repeat(np.arange(starts.size), counts)
        pairs = np.unique(bin_of * (int(np.max(groups)) + 1) + np.asarray(groups)[order])
        counts = np.bincount(pairs // (int(np.max(groups)) + 1), minlength=starts.size)
    return centres, counts


def assign_to_axis(mz: np.ndarray, centres: np.ndarray, tol_ppm: float) -> np.ndarray:
    """Index of the nearest centre within ``tol_ppm`` for each m/z, -1 if none."""
    mz = np.asarray(mz, dtype=np.float64)
    if centres.size == 0:
        return np.full(mz.shape, -1, dtype=np.int64)
    idx = np.searchsorted(centres, mz)
    right = np.clip(idx, 0, centres.size - 1)
    left = np.clip(idx - 1, 0, centres.size - 1)
    best = np.where(np.abs(mz - centres[left]) <= np.abs(mz - centres[right]), left, right)
    ok = np.abs(mz - centres[best]) <= centres[best] * tol_ppm * 1e-6
    return np.where(ok, best, -1)


def _noise(intensity: np.ndarray) -> float:
    """Robust noise level: median absolute deviation (scaled) of the intensities."""
    med = np.median(intensity)
    return float(np.median(np.abs(intensity - med)) * 1.4826) + 1e-12


def pick_profile_peaks(axis: np.ndarray, mean: np.ndarray, tol_ppm: float, snr: float = 3.0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of a mean profile spectrum (prominence above ``snr`` × noise) and their integration
    windows as index ranges [lo, hi) on ``axis`` (± ``tol_ppm``, at least one sample step)."""
    from scipy.signal import find_peaks

    peaks, _ = find_peaks(mean, prominence=snr * _noise(mean))
    if peaks.size == 0:
        peaks = np.array([int(np.argmax(mean))])
    centres = axis[peaks]
    half = np.maximum(centres * tol_ppm * 1e-6, np.median(np.diff(axis)) if axis.size > 1 else 0)
    lo = np.searchsorted(axis, centres - half, side="left")
    hi = np.searchsorted(axis, centres + half, side="right")
    return centres, np.stack([lo, hi], axis=1)


def centroid_profile(mz: np.ndarray, intensity: np.ndarray, snr: float = 3.0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Centroid one profile spectrum: local maxima with a prominence above ``snr`` × noise;
    each peak's m/z is the intensity-weighted mean of the apex and its two neighbours, its
    intensity the sum of those three samples (a discrete peak area)."""
    from scipy.signal import find_peaks

    v = np.asarray(intensity, dtype=np.float64)
    if v.size < 3 or not np.any(v > 0):
        return np.zeros(0), np.zeros(0)
    peaks, _ = find_peaks(v, prominence=snr * _noise(v))
    if peaks.size == 0:
        return np.zeros(0), np.zeros(0)
    nb = np.clip(peaks[:, None] + np.array([-1, 0, 1]), 0, v.size - 1)
    w = v[nb]
    area = w.sum(1)
    cmz = (np.asarray(mz, dtype=np.float64)[nb] * w).sum(1) / np.where(area > 0, area, 1)
    return cmz, area
