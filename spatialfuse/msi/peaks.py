"""Peaks on the m/z axis: ppm binning of centroids onto a common axis, peak picking on a mean
profile spectrum and window integration of profile spectra. Pure numpy/scipy functions."""

from __future__ import annotations

import numpy as np


def _split_wide(s: np.ndarray, tol_ppm: float) -> np.ndarray:
    """Split points (indices into sorted ``s``) of one over-wide chain: boundaries at the
    minima of the smoothed density of the values between its maxima (maxima at least one
    tolerance apart)."""
    from scipy.signal import find_peaks

    u = (np.log(s) - np.log(s[0])) / (tol_ppm * 1e-6)  # position in tolerance units
    hist = np.bincount((u * 4).astype(np.int64))  # quarter-tolerance bins
    dens = np.convolve(hist, np.ones(5) / 5, mode="same")  # ± half a tolerance
    peaks, _ = find_peaks(np.r_[0.0, dens, 0.0], distance=4)
    peaks = peaks - 1
    if peaks.size < 2:
        return np.zeros(0, dtype=np.int64)
    cuts = [a + int(np.argmin(dens[a:b + 1])) for a, b in zip(peaks[:-1], peaks[1:])]
    return np.searchsorted(u * 4, np.asarray(cuts) + 0.5)


def ppm_bins(mz: np.ndarray, tol_ppm: float, groups: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Group m/z values whose sorted neighbours lie within ``tol_ppm`` of each other.

    A chain of neighbours can bridge distinct peaks (dense noise centroids between them); a
    chain wider than 3 × ``tol_ppm`` is therefore split at the minima of its value density.
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
    ends = np.r_[starts[1:], s.size]
    wide = np.nonzero((s[ends - 1] - s[starts]) > 3 * tol_ppm * 1e-6 * s[starts])[0]
    if wide.size:
        extra = [starts[k] + _split_wide(s[starts[k]:ends[k]], tol_ppm) for k in wide]
        starts = np.unique(np.concatenate([starts, *extra]))
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


def pick_profile_peaks(axis: np.ndarray, mean: np.ndarray, tol_ppm: float, snr: float = 6.0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of a mean profile spectrum (centres refined between samples) and their integration
    windows as index ranges [lo, hi) on ``axis`` (± ``tol_ppm``, at least one sample step).

    A peak is a local maximum whose height above the median baseline and whose prominence both
    exceed ``snr`` × noise (the scaled median absolute deviation); spectra have 10^4–10^6
    samples, so a threshold of a few noise units would let through noise maxima by the dozen."""
    from scipy.signal import find_peaks

    noise = _noise(mean)
    peaks, _ = find_peaks(mean, prominence=snr * noise, height=np.median(mean) + snr * noise)
    if peaks.size == 0:
        peaks = np.array([int(np.argmax(mean))])
    # sub-sample centre: intensity-weighted mean m/z of the apex and its two neighbours
    nb = np.clip(peaks[:, None] + np.array([-1, 0, 1]), 0, axis.size - 1)
    w = np.clip(mean[nb], 0, None)
    centres = (axis[nb] * w).sum(1) / np.maximum(w.sum(1), 1e-300)
    centres = np.where(w.sum(1) > 0, centres, axis[peaks])
    half = np.maximum(centres * tol_ppm * 1e-6, np.median(np.diff(axis)) if axis.size > 1 else 0)
    lo = np.searchsorted(axis, centres - half, side="left")
    hi = np.searchsorted(axis, centres + half, side="right")
    return centres, np.stack([lo, hi], axis=1)


def integrate_windows(mz: np.ndarray, intensity: np.ndarray, centres: np.ndarray,
                      tol_ppm: float) -> np.ndarray:
    """Sum of a profile spectrum's intensities within ± ``tol_ppm`` (at least one sampling step
    of this spectrum) of each centre — the windows of :func:`pick_profile_peaks`."""
    if mz.size == 0:
        return np.zeros(centres.size)
    step = np.median(np.diff(mz)) if mz.size > 1 else 0.0
    half = np.maximum(centres * tol_ppm * 1e-6, step)
    cs = np.r_[0.0, np.cumsum(intensity, dtype=np.float64)]
    lo = np.searchsorted(mz, centres - half, side="left")
    hi = np.searchsorted(mz, centres + half, side="right")
    return cs[hi] - cs[lo]
