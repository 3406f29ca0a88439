"""imzML (+ .ibd) reading, streamed: memory grows with the peaks kept, never with the raw file.

pyimzML parses the XML metadata (offsets, coordinates, pixel size), which is turned into numpy
arrays at once; the binary ``.ibd`` is read through a memory map in blocks of spectra
(``chunk_spectra``), each block binned and appended to a preallocated sparse (CSR) matrix, so no
step ever holds all spectra densely. Layouts:

* continuous centroid: the shared m/z axis is the feature list;
* continuous profile: peaks are picked on the mean spectrum (one streaming pass) and integrated
  within a ppm window (a second pass);
* processed centroid: a common m/z axis is built by ppm binning of the peaks of up to
  ``axis_spectra`` evenly spaced spectra, then every spectrum is binned onto it;
* processed profile: up to ``axis_spectra`` spectra are interpolated onto one sampling and
  averaged, peaks are picked on that mean (prominence above ``peak_snr`` × noise), and every
  spectrum is integrated within a ppm window around each peak — the same features and values as
  the continuous layout gives for the same spectra.

Writing lives in :mod:`spatialfuse.io.imzml_writer` (re-exported here).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..constants import Key
from ..errors import InputError
from ..pixels import SQUARE_PIXEL_RTOL, describe, is_rectangular, pixel_xy, uns_entries
from ..msi.peaks import assign_to_axis, integrate_windows, pick_profile_peaks, ppm_bins
from .imzml_writer import ImzMLStreamWriter, write_imzml

__all__ = ["ImzMLStreamWriter", "check_imzml_pair", "imzml_pixel_sizes", "read_imzml",
           "resolve_pixel_size", "write_imzml"]

log = logging.getLogger(__name__)

_UUID_RE = re.compile(r'accession="IMS:1000080"[^>]*value="\{?([0-9A-Fa-f-]{32,36})\}?"')


def _declared_uuid(imzml_path: Path) -> str | None:
    with open(imzml_path, "rb") as fh:
        head = fh.read(1 << 16).decode("latin-1", errors="replace")
    m = _UUID_RE.search(head)
    if m is None:  # value may come before accession
        m2 = re.search(r'value="\{?([0-9A-Fa-f-]{32,36})\}?"[^>]*accession="IMS:1000080"', head)
        return m2.group(1).replace("-", "").lower() if m2 else None
    return m.group(1).replace("-", "").lower()


def imzml_pixel_sizes(imzml_path: str | Path,
                      sample: str | None = None) -> tuple[float | None, float | None]:
    """The imzML's ``pixel size x`` and ``pixel size y`` (IMS:1000046 / IMS:1000047, in its scan
    settings), read from the XML head alone: the parse stops where the spectrum list begins, so
    neither the per-spectrum metadata nor the .ibd is read. None for a size the file does not
    give (the same as :func:`read_imzml` finds)."""
    import xml.etree.ElementTree as ET

    imzml_path = Path(imzml_path)
    if not imzml_path.exists():
        raise InputError("imzML file does not exist", sample, imzml_path)
    found: dict[str, float | None] = {"IMS:1000046": None, "IMS:1000047": None}
    depth = 0  # inside scanSettingsList
    try:
        for event, el in ET.iterparse(imzml_path, events=("start", "end")):
            tag = el.tag.rsplit("}", 1)[-1]
            if tag == "scanSettingsList":
                depth += 1 if event == "start" else -1
            elif tag in ("run", "spectrumList") and event == "start":
                break
            elif (event == "end" and depth and tag == "cvParam"
                  and found.get(el.get("accession"), 0.0) is None):  # the first value, as pyimzML
                try:
                    found[el.get("accession")] = float(el.get("value"))
                except (TypeError, ValueError):
                    pass  # a malformed value: as pyimzML, which skips it
    except ET.ParseError as exc:
        raise InputError(f"not a readable imzML file (ParseError: {exc})", sample, imzml_path) from None
    return found["IMS:1000046"], found["IMS:1000047"]


def resolve_pixel_size(given, found: tuple[float | None, float | None], sample: str | None,
                       imzml_path: Path, *, quiet: bool = False) -> tuple[float, float]:
    """The pixel size (x, y) in µm an imzML is read with: ``given`` (the samples sheet's: one
    number for both axes, or an (x, y) pair) when set, else ``found``, the file's (``pixel size
    x``, ``pixel size y``; one of them alone serves both axes; two within
    :data:`~spatialfuse.pixels.SQUARE_PIXEL_RTOL` make a square of the x size). Neither, or a
    size that is not positive: :class:`InputError`. Pixels may be rectangular
    (:mod:`spatialfuse.pixels`). ``quiet``: say nothing (a look ahead at the size the reading
    will state itself)."""
    fx, fy = found
    if given is None or (isinstance(given, float) and np.isnan(given)):
        if fx is None and fy is None:
            raise InputError(
                "no pixel size: the imzML has no 'pixel size x' and the samples sheet gives no "
                "msi_pixel_size_um", sample, imzml_path)
        size = (fx if fx is not None else fy, fy if fy is not None else fx)
        if min(size) > 0 and is_rectangular(size):
            if not quiet:
                log.info("sample %r, file '%s': rectangular pixels, %s", sample, imzml_path.name,
                         describe(size))
        else:  # a rounding difference (12.5 and 12.51 µm) is a square pixel, of the x size
            size = (size[0], size[0])
    else:
        size = tuple(float(v) for v in pixel_xy(given))
        if (not quiet and fx is not None and fy is not None and fx > 0 and fy > 0
                and not np.allclose(size, (fx, fy), rtol=SQUARE_PIXEL_RTOL)):
            log.warning("sample %r, file '%s': the samples sheet's msi_pixel_size_um (%s) is used, "
                        "although the imzML gives pixel size x %g um and y %g um",
                        sample, imzml_path, describe(size), fx, fy)
    px = (float(size[0]), float(size[1]))
    if not (px[0] > 0 and px[1] > 0):
        raise InputError(f"pixel size must be positive, got x {px[0]:g} um, y {px[1]:g} um",
                         sample, imzml_path)
    return px


def _open_parser(imzml_path: Path, ibd_path: Path, sample: str | None):
    from pyimzml.ImzMLParser import ImzMLParser

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ImzMLParser(str(imzml_path), parse_lib="ElementTree", ibd_file=None)
    except Exception as exc:  # malformed XML and friends: one clear line
        raise InputError(f"not a readable imzML file ({type(exc).__name__}: {exc})",
                         sample, imzml_path) from None


def check_imzml_pair(imzml_path: str | Path, sample: str | None = None) -> Path:
    """Check an imzML/ibd pair before reading: the .ibd exists and its UUID matches."""
    imzml_path = Path(imzml_path)
    if not imzml_path.exists():
        raise InputError("imzML file does not exist", sample, imzml_path)
    ibd_path = imzml_path.with_suffix(".ibd")
    if not ibd_path.exists():
        alt = [p for p in imzml_path.parent.glob(imzml_path.stem + ".*") if p.suffix.lower() == ".ibd"]
        if not alt:
            raise InputError(f"the binary file '{ibd_path.name}' is missing beside the imzML",
                             sample, imzml_path)
        ibd_path = alt[0]
    declared = _declared_uuid(imzml_path)
    with open(ibd_path, "rb") as fh:
        head = fh.read(16)
    if len(head) < 16:
        raise InputError("the .ibd file is empty or truncated (no 16-byte UUID header)",
                         sample, ibd_path)
    if declared is not None and head.hex() != declared:
        raise InputError(
            f"the .ibd UUID ({head.hex()}) does not match the imzML's ({declared}): the two files "
            "do not belong together", sample, ibd_path)
    return ibd_path


class _Spectra:
    """The spectra of one imzML/ibd pair: metadata as numpy arrays, data through a memory map."""

    def __init__(self, imzml_path: Path, ibd_path: Path, sample: str | None):
        p = _open_parser(imzml_path, ibd_path, sample)
        self.n = len(p.coordinates)
        if self.n == 0:
            raise InputError("the imzML lists no spectra", sample, imzml_path)
        self.pixel_sizes = (p.imzmldict.get("pixel size x"), p.imzmldict.get("pixel size y"))
        self.spectrum_type = (getattr(p, "spectrum_mode", None) or "centroid").lower()
        self.polarity = str(getattr(p, "polarity", None) or "unknown")
        self.coords = np.asarray(p.coordinates, dtype=np.int64)[:, :2]
        self.mz_off = np.asarray(p.mzOffsets, dtype=np.int64)
        self.mz_len = np.asarray(p.mzLengths, dtype=np.int64)
        self.in_off = np.asarray(p.intensityOffsets, dtype=np.int64)
        self.in_len = np.asarray(p.intensityLengths, dtype=np.int64)
        self.mz_dt, self.in_dt = np.dtype(p.mzPrecision), np.dtype(p.intensityPrecision)
        del p  # the parser's per-spectrum Python lists are the largest metadata; free them
        if np.any(self.mz_len != self.in_len):
            i = int(np.nonzero(self.mz_len != self.in_len)[0][0])
            raise InputError(f"spectrum {i} has {self.mz_len[i]} m/z values but "
                             f"{self.in_len[i]} intensities", sample, imzml_path)
        size = ibd_path.stat().st_size
        need = max(int((self.mz_off + self.mz_len * self.mz_dt.itemsize).max()),
                   int((self.in_off + self.in_len * self.in_dt.itemsize).max()))
        if need > size:
            raise InputError(
                f"the .ibd file is truncated: the imzML needs {need} bytes, the file has {size}",
                sample, ibd_path)
        self.continuous = bool(np.all(self.mz_off == self.mz_off[0])
                               and np.all(self.mz_len == self.mz_len[0]))
        self._fd = os.open(ibd_path, os.O_RDONLY)
        self.sample, self.ibd_path = sample, ibd_path

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            self.close()

    def _gather(self, offs, lens, dt, idx: np.ndarray) -> np.ndarray:
        """The arrays of spectra ``idx``, concatenated. Explicit reads (not a memory map), so the
        process holds one block of the file at a time; spectra stored next to each other (the
        usual layout) are read with one call, others one by one."""
        o, c = offs[idx], lens[idx] * dt.itemsize
        if idx.size == 0:
            return np.zeros(0, dt)
        lo, hi = int(o.min()), int((o + c).max())
        if hi - lo <= 4 * int(c.sum()) + 4096:
            buf = np.frombuffer(os.pread(self._fd, hi - lo, lo), dtype=np.uint8)
            parts = [buf[a - lo:a - lo + b] for a, b in zip(o.tolist(), c.tolist())]
        else:
            parts = [np.frombuffer(os.pread(self._fd, b, a), dtype=np.uint8)
                     for a, b in zip(o.tolist(), c.tolist())]
        return np.concatenate(parts).view(dt)

    def first_mz(self) -> np.ndarray:
        """The m/z array of the first spectrum (the shared axis of continuous data)."""
        return self._gather(self.mz_off, self.mz_len, self.mz_dt, np.array([0]))

    def block(self, start: int, stop: int, with_mz: bool = True):
        """Spectra ``start:stop`` flattened: (local row of each value, m/z, intensity float64).
        Checks the intensities (finite, non-negative)."""
        idx = np.arange(start, stop)
        lens = self.in_len[idx]
        rows = np.repeat(np.arange(idx.size), lens)
        v = self._gather(self.in_off, self.in_len, self.in_dt, idx).astype(np.float64)
        bad = ~np.isfinite(v) | (v < 0)
        if bad.any():
            k = int(np.argmax(bad))
            i = start + int(rows[k])
            what = "NaN or infinite" if not np.isfinite(v[k]) else "negative"
            raise InputError(f"spectrum {i} (pixel x={self.coords[i, 0]}, y={self.coords[i, 1]}) "
                             f"has {what} intensities", self.sample, self.ibd_path)
        mz = self._gather(self.mz_off, self.mz_len, self.mz_dt, idx).astype(np.float64) \
            if with_mz else None
        return rows, mz, v

    def dense_block(self, start: int, stop: int) -> np.ndarray:
        """Continuous data: spectra ``start:stop`` as a dense (k, n_mz) float64 block."""
        _, _, v = self.block(start, stop, with_mz=False)
        return v.reshape(stop - start, int(self.in_len[0]))


class _CSRBuilder:
    """Rows appended block by block into preallocated arrays (grown by half when full)."""

    def __init__(self, n_rows: int, capacity: int):
        self.data = np.empty(max(capacity, 1), np.float32)
        self.indices = np.empty(max(capacity, 1), np.int32)
        self.counts = np.zeros(n_rows, np.int64)
        self.nnz = 0

    def add(self, row0: int, n_block: int, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray):
        """Append entries of rows ``row0 + rows`` (``rows`` ascending, cols ascending within)."""
        k = cols.size
        if self.nnz + k > self.data.size:
            new = max(self.nnz + k, int(self.data.size * 1.5))
            self.data = np.resize(self.data, new)
            self.indices = np.resize(self.indices, new)
        self.data[self.nnz:self.nnz + k] = vals
        self.indices[self.nnz:self.nnz + k] = cols
        self.counts[row0:row0 + n_block] += np.bincount(rows, minlength=n_block)
        self.nnz += k

    def matrix(self, n_cols: int) -> sp.csr_matrix:
        data, indices = self.data[:self.nnz], self.indices[:self.nnz]
        if self.nnz < 0.9 * self.data.size:  # do not keep a mostly empty buffer alive
            data, indices = data.copy(), indices.copy()
        self.data = self.indices = None
        idx_t = np.int32 if self.nnz < 2**31 else np.int64
        indptr = np.zeros(self.counts.size + 1, idx_t)
        np.cumsum(self.counts, out=indptr[1:])
        return sp.csr_matrix((data, indices.astype(idx_t, copy=False), indptr),
                             shape=(self.counts.size, n_cols))


def _sum_duplicates(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_cols: int):
    """Sum the values that fall on the same (row, col); returns them sorted by row, then col."""
    key = rows.astype(np.int64) * n_cols + cols
    if key.size > 1 and np.any(key[1:] < key[:-1]):
        order = np.argsort(key, kind="stable")
        key, vals = key[order], vals[order]
    if key.size == 0:
        return rows[:0], cols[:0], vals[:0]
    first = np.r_[True, key[1:] != key[:-1]]
    starts = np.nonzero(first)[0]
    sums = np.add.reduceat(vals, starts)
    uk = key[starts]
    return uk // n_cols, uk % n_cols, sums


def _in_range(mz: np.ndarray, mz_range) -> np.ndarray:
    if mz_range is None:
        return np.ones(mz.shape, dtype=bool)
    return (mz >= mz_range[0]) & (mz <= mz_range[1])


def _processed_centroid_axis(s: _Spectra, pick: np.ndarray, tol_ppm: float,
                             min_pixel_fraction: float, mz_range) -> np.ndarray:
    """Common axis of processed centroid data: ppm bins of the peaks of the ``pick`` spectra,
    kept when found in at least ``min_pixel_fraction`` of them."""
    mz_s, grp = [], []
    for i in pick.tolist():
        _, mz, v = s.block(i, i + 1)
        mz = mz[(v > 0) & _in_range(mz, mz_range)]
        mz_s.append(mz)
        grp.append(np.full(mz.size, i, dtype=np.int64))
    pooled = np.concatenate(mz_s) if mz_s else np.zeros(0)
    centres, n_spectra = ppm_bins(pooled, tol_ppm, np.concatenate(grp) if grp else None)
    return centres[n_spectra >= max(1.0, min_pixel_fraction * pick.size)]


def _processed_profile_axis(s: _Spectra, pick: np.ndarray, tol_ppm: float, snr: float,
                            mz_range) -> np.ndarray:
    """Common axis of processed profile data: the ``pick`` spectra interpolated onto the
    sampling of the longest of them, averaged, and peak-picked like continuous profile data."""
    lens = s.mz_len[pick]
    _, grid, _ = s.block(int(pick[np.argmax(lens)]), int(pick[np.argmax(lens)]) + 1)
    total = np.zeros(grid.size)
    for i in pick.tolist():
        _, mz, v = s.block(i, i + 1)
        if mz.size:
            total += np.interp(grid, mz, v, left=0.0, right=0.0)
    centres, _ = pick_profile_peaks(grid, total / pick.size, tol_ppm, snr)
    return centres[_in_range(centres, mz_range)]


def read_imzml(
    path: str | Path,
    *,
    sample: str | None = None,
    pixel_size_um: float | tuple[float, float] | None = None,
    mz_tolerance_ppm: float = 10.0,
    min_pixel_fraction: float = 0.01,
    mz_range: tuple[float, float] | None = None,
    peak_snr: float = 6.0,
    chunk_spectra: int = 4096,
    axis_spectra: int = 5000,
) -> ad.AnnData:
    """Read an imzML/ibd pair into an AnnData (pixels × m/z features), coordinates in µm.

    ``X`` holds raw intensities (float32 CSR). ``obs`` has ``x``/``y`` (1-based pixel indices)
    and ``tic`` (of the whole raw spectrum); ``obsm['spatial']`` is (x, y) × pixel size in µm, per
    axis (the MSI's own frame); ``var['mz']`` is the feature m/z. Pixel size comes from
    ``pixel_size_um`` if given (one number, or an (x, y) pair), else the imzML metadata; neither
    → :class:`InputError` (:func:`resolve_pixel_size`).
    ``min_pixel_fraction``: processed data keep the axis peaks found in at least this fraction
    of the spectra used to build the axis (up to ``axis_spectra`` evenly spaced spectra holding
    about 2×10^6 peaks in all). ``peak_snr``: peak-picking threshold for profile
    spectra (prominence over the MAD noise). ``chunk_spectra``: most spectra read per block
    (blocks also hold at most ~10^6 values).
    """
    imzml_path = Path(path)
    ibd_path = check_imzml_pair(imzml_path, sample)
    s = _Spectra(imzml_path, ibd_path, sample)
    n = s.n
    pixel_size_um = resolve_pixel_size(pixel_size_um, s.pixel_sizes, sample, imzml_path)
    coords = s.coords
    obs_index = pd.Index([f"px_{x}_{y}" for x, y in coords.tolist()])
    if obs_index.has_duplicates:
        dup = obs_index[obs_index.duplicated()][0]
        raise InputError(f"two spectra share the pixel position {dup}", sample, imzml_path)

    tic = np.zeros(n)
    profile = s.spectrum_type == "profile"
    if s.continuous:
        axis = s.first_mz().astype(np.float64)
        chunk = max(1, min(chunk_spectra, (1 << 22) // max(axis.size, 1)))  # ~32 MB blocks
        if profile:  # pass 1: mean spectrum; pass 2: integrate each spectrum around its peaks
            total = np.zeros(axis.size)
            for a in range(0, n, chunk):
                total += s.dense_block(a, min(n, a + chunk)).sum(0)
            centres, windows = pick_profile_peaks(axis, total / n, mz_tolerance_ppm, peak_snr)
            keep = _in_range(centres, mz_range)
            centres, windows = centres[keep], windows[keep]
        else:
            keep_cols = np.nonzero(_in_range(axis, mz_range))[0]
            centres = axis[keep_cols]
        b = _CSRBuilder(n, n * min(centres.size, 64))
        for a in range(0, n, chunk):
            e = min(n, a + chunk)
            block = s.dense_block(a, e)
            tic[a:e] = block.sum(1)
            if profile:
                cs = np.zeros((block.shape[0], axis.size + 1))
                np.cumsum(block, axis=1, out=cs[:, 1:])
                block = cs[:, windows[:, 1]] - cs[:, windows[:, 0]]
            else:
                block = block[:, keep_cols]
            r, c = np.nonzero(block > 0)
            b.add(a, e - a, r, c, block[r, c])
        X = b.matrix(centres.size)
    else:
        # at most ``axis_spectra`` spectra, and about 2×10^6 peaks, for the axis
        per = max(float(s.mz_len.mean()), 1.0)
        n_pick = min(n, axis_spectra, max(200, int(2e6 / per)))
        pick = np.unique(np.linspace(0, n - 1, n_pick).round().astype(np.int64))
        if profile:
            centres = _processed_profile_axis(s, pick, mz_tolerance_ppm, peak_snr, mz_range)
        else:
            centres = _processed_centroid_axis(s, pick, mz_tolerance_ppm, min_pixel_fraction,
                                               mz_range)
        if centres.size == 0:
            raise InputError("no m/z peak is present in enough pixels to build a common axis",
                             sample, imzml_path)
        # pass 2: every spectrum onto the axis, block by block, into a sparse matrix
        b = _CSRBuilder(n, n * min(centres.size, 64) if profile else int(s.mz_len.sum()))
        step = max(1, min(chunk_spectra, int(2**20 / per)))  # blocks of ~10^6 values
        for a in range(0, n, step):
            e = min(n, a + step)
            rows, mz, v = s.block(a, e)
            tic[a:e] = np.bincount(rows, weights=v, minlength=e - a)
            if profile:  # integrate each spectrum within each peak's window
                bounds = np.r_[0, np.cumsum(s.in_len[a:e])]
                vals = np.stack([integrate_windows(mz[bounds[k]:bounds[k + 1]],
                                                   v[bounds[k]:bounds[k + 1]], centres,
                                                   mz_tolerance_ppm) for k in range(e - a)])
                r, c = np.nonzero(vals > 0)
                b.add(a, e - a, r, c, vals[r, c])
                continue
            j = assign_to_axis(mz, centres, mz_tolerance_ppm)
            ok = (j >= 0) & (v > 0)
            r, c, val = _sum_duplicates(rows[ok], j[ok], v[ok], centres.size)
            b.add(a, e - a, r, c, val)
        X = b.matrix(centres.size)
    s.close()

    obs = pd.DataFrame({Key.obs.x: coords[:, 0], Key.obs.y: coords[:, 1], Key.obs.tic: tic},
                       index=obs_index)
    var = pd.DataFrame({Key.var.mz: centres}, index=[f"mz_{m:.4f}" for m in centres])
    var.index = pd.Index(_dedupe(var.index.tolist()))
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.obsm[Key.obsm.spatial] = coords.astype(np.float64) * np.asarray(pixel_size_um)
    layout = "continuous" if s.continuous else "processed"
    adata.uns[Key.uns.spatialfuse] = {
        "modality": "msi",
        "source": str(imzml_path),
        **uns_entries(pixel_size_um),
        "imzml_layout": layout,
        "spectrum_type": s.spectrum_type,
        "mz_tolerance_ppm": float(mz_tolerance_ppm),
        "polarity": s.polarity,
    }
    log.info("read %s: %d pixels x %d m/z features (%s, %s), pixel %s, %d non-zeros",
             imzml_path.name, n, centres.size, layout, s.spectrum_type, describe(pixel_size_um),
             X.nnz)
    return adata


def _dedupe(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for nm in names:
        if nm in seen:
            seen[nm] += 1
            out.append(f"{nm}-{seen[nm]}")
        else:
            seen[nm] = 0
            out.append(nm)
    return out
