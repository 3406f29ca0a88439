"""imzML (+ .ibd) reading and writing.

Reading uses pyimzML for the XML metadata (offsets, coordinates, pixel size) and reads the binary
``.ibd`` through a memory map, spectrum by spectrum, so memory stays proportional to the number of
peaks kept, not to the raw file. Both layouts are supported:

* continuous: one m/z axis shared by all pixels (centroid: the axis is the feature list; profile:
  peaks are picked on the mean spectrum and integrated within a ppm window);
* processed: an m/z array per pixel, binned onto a common axis with a ppm tolerance.

The writer produces spec-conformant imzML 1.1 (UUID and SHA-1 of the .ibd, pixel size in
scanSettings) and is used by the demo simulator and by tests.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid as uuidlib
import warnings
from pathlib import Path
from typing import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..constants import Key
from ..errors import InputError

log = logging.getLogger(__name__)

_DTYPES = {
    np.dtype("float32"): ("MS:1000521", "32-bit float"),
    np.dtype("float64"): ("MS:1000523", "64-bit float"),
    np.dtype("int32"): ("MS:1000519", "32-bit integer"),
    np.dtype("int64"): ("MS:1000522", "64-bit integer"),
}


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def write_imzml(
    path: str | Path,
    coords: np.ndarray,
    mzs: np.ndarray | Sequence[np.ndarray],
    intensities: Sequence[np.ndarray] | np.ndarray,
    *,
    mode: str = "processed",
    spectrum_type: str = "centroid",
    pixel_size_um: float | None = None,
    polarity: str = "positive",
    mz_dtype=np.float64,
    intensity_dtype=np.float32,
) -> tuple[Path, Path]:
    """Write an imzML/ibd pair.

    ``coords``: (n, 2) 1-based pixel indices (x, y). ``mode='continuous'``: ``mzs`` is one array
    shared by all spectra and ``intensities`` is (n, len(mzs)). ``mode='processed'``: ``mzs`` and
    ``intensities`` are sequences of per-pixel arrays. Returns the two paths.
    """
    if mode not in ("continuous", "processed"):
        raise ValueError("mode must be 'continuous' or 'processed'")
    if spectrum_type not in ("centroid", "profile"):
        raise ValueError("spectrum_type must be 'centroid' or 'profile'")
    path = Path(path)
    imzml_path = path.with_suffix(".imzML")
    ibd_path = path.with_suffix(".ibd")
    coords = np.asarray(coords, dtype=np.int64)
    n = coords.shape[0]
    mz_dtype, intensity_dtype = np.dtype(mz_dtype), np.dtype(intensity_dtype)
    file_uuid = uuidlib.uuid4()
    sha1 = hashlib.sha1()
    records = []  # per spectrum: (mz_off, mz_len, int_off, int_len, tic, mzmin, mzmax)

    def _write(fh, arr) -> int:
        off = fh.tell()
        b = np.ascontiguousarray(arr).tobytes()
        fh.write(b)
        sha1.update(b)
        return off

    with open(ibd_path, "wb") as fh:
        fh.write(file_uuid.bytes)
        sha1.update(file_uuid.bytes)
        shared = None
        if mode == "continuous":
            axis = np.asarray(mzs, dtype=mz_dtype)
            shared = (_write(fh, axis), axis.size, float(axis.min()), float(axis.max()))
        for i in range(n):
            inten = np.asarray(intensities[i], dtype=intensity_dtype)
            if mode == "continuous":
                mz_off, mz_len, lo, hi = shared
            else:
                mz = np.asarray(mzs[i], dtype=mz_dtype)
                if mz.size != inten.size:
                    raise ValueError(f"spectrum {i}: m/z and intensity lengths differ")
                mz_off, mz_len = _write(fh, mz), mz.size
                lo, hi = (float(mz.min()), float(mz.max())) if mz.size else (0.0, 0.0)
            int_off = _write(fh, inten)
            records.append((mz_off, mz_len, int_off, inten.size, float(inten.sum()), lo, hi))

    mz_acc, mz_name = _DTYPES[mz_dtype]
    int_acc, int_name = _DTYPES[intensity_dtype]
    mode_acc = "IMS:1000030" if mode == "continuous" else "IMS:1000031"
    spec_acc, spec_name = (
        ("MS:1000127", "centroid spectrum")
        if spectrum_type == "centroid"
        else ("MS:1000128", "profile spectrum")
    )
    pol = (
        '<cvParam cvRef="MS" accession="MS:1000130" name="positive scan" value=""/>'
        if polarity == "positive"
        else '<cvParam cvRef="MS" accession="MS:1000129" name="negative scan" value=""/>'
    )
    max_x, max_y = int(coords[:, 0].max()), int(coords[:, 1].max())
    px = ""
    if pixel_size_um is not None:
        px = (
            f'<cvParam cvRef="IMS" accession="IMS:1000046" name="pixel size x" '
            f'value="{pixel_size_um}" unitCvRef="UO" unitAccession="UO:0000017" '
            f'unitName="micrometer"/>\n'
            f'<cvParam cvRef="IMS" accession="IMS:1000047" name="pixel size y" '
            f'value="{pixel_size_um}" unitCvRef="UO" unitAccession="UO:0000017" '
            f'unitName="micrometer"/>\n'
            f'<cvParam cvRef="IMS" accession="IMS:1000044" name="max dimension x" '
            f'value="{max_x * pixel_size_um}" unitCvRef="UO" unitAccession="UO:0000017" '
            f'unitName="micrometer"/>\n'
            f'<cvParam cvRef="IMS" accession="IMS:1000045" name="max dimension y" '
            f'value="{max_y * pixel_size_um}" unitCvRef="UO" unitAccession="UO:0000017" '
            f'unitName="micrometer"/>\n'
        )
    parts = [
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n'
        '<mzML xmlns="http://psi.hupo.org/ms/mzml" version="1.1">\n'
        '<cvList count="3">\n'
        '<cv id="MS" fullName="Proteomics Standards Initiative Mass Spectrometry Ontology" '
        'version="4.1.0" URI="http://purl.obolibrary.org/obo/ms.obo"/>\n'
        '<cv id="UO" fullName="Unit Ontology" version="2020-03-10" '
        'URI="http://purl.obolibrary.org/obo/uo.obo"/>\n'
        '<cv id="IMS" fullName="Imaging MS Ontology" version="1.1.0" '
        'URI="https://raw.githubusercontent.com/imzML/imzML/master/imagingMS.obo"/>\n'
        "</cvList>\n<fileDescription>\n<fileContent>\n"
        '<cvParam cvRef="MS" accession="MS:1000579" name="MS1 spectrum" value=""/>\n'
        f'<cvParam cvRef="MS" accession="{spec_acc}" name="{spec_name}" value=""/>\n'
        f'<cvParam cvRef="IMS" accession="{mode_acc}" name="{mode}" value=""/>\n'
        f'<cvParam cvRef="IMS" accession="IMS:1000080" name="universally unique identifier" '
        f'value="{{{file_uuid}}}"/>\n'
        f'<cvParam cvRef="IMS" accession="IMS:1000091" name="ibd SHA-1" '
        f'value="{sha1.hexdigest()}"/>\n'
        "</fileContent>\n</fileDescription>\n"
        '<referenceableParamGroupList count="3">\n'
        '<referenceableParamGroup id="mzArray">\n'
        '<cvParam cvRef="MS" accession="MS:1000576" name="no compression" value=""/>\n'
        '<cvParam cvRef="MS" accession="MS:1000514" name="m/z array" value="" '
        'unitCvRef="MS" unitAccession="MS:1000040" unitName="m/z"/>\n'
        f'<cvParam cvRef="MS" accession="{mz_acc}" name="{mz_name}" value=""/>\n'
        '<cvParam cvRef="IMS" accession="IMS:1000101" name="external data" value="true"/>\n'
        "</referenceableParamGroup>\n"
        '<referenceableParamGroup id="intensityArray">\n'
        '<cvParam cvRef="MS" accession="MS:1000576" name="no compression" value=""/>\n'
        '<cvParam cvRef="MS" accession="MS:1000515" name="intensity array" value="" '
        'unitCvRef="MS" unitAccession="MS:1000131" unitName="number of detector counts"/>\n'
        f'<cvParam cvRef="MS" accession="{int_acc}" name="{int_name}" value=""/>\n'
        '<cvParam cvRef="IMS" accession="IMS:1000101" name="external data" value="true"/>\n'
        "</referenceableParamGroup>\n"
        '<referenceableParamGroup id="spectrum">\n'
        '<cvParam cvRef="MS" accession="MS:1000579" name="MS1 spectrum" value=""/>\n'
        '<cvParam cvRef="MS" accession="MS:1000511" name="ms level" value="1"/>\n'
        f'<cvParam cvRef="MS" accession="{spec_acc}" name="{spec_name}" value=""/>\n'
        f"{pol}\n"
        "</referenceableParamGroup>\n</referenceableParamGroupList>\n"
        '<softwareList count="1">\n<software id="spatialfuse" version="0.1.0">\n'
        '<cvParam cvRef="MS" accession="MS:1000799" name="custom unreleased software tool" '
        'value="spatialfuse"/>\n</software>\n</softwareList>\n'
        '<scanSettingsList count="1">\n<scanSettings id="scansettings1">\n'
        '<cvParam cvRef="IMS" accession="IMS:1000401" name="top down" value=""/>\n'
        '<cvParam cvRef="IMS" accession="IMS:1000413" name="flyback" value=""/>\n'
        '<cvParam cvRef="IMS" accession="IMS:1000480" name="horizontal line scan" value=""/>\n'
        '<cvParam cvRef="IMS" accession="IMS:1000491" name="linescan left right" value=""/>\n'
        f'<cvParam cvRef="IMS" accession="IMS:1000042" name="max count of pixels x" '
        f'value="{max_x}"/>\n'
        f'<cvParam cvRef="IMS" accession="IMS:1000043" name="max count of pixels y" '
        f'value="{max_y}"/>\n'
        f"{px}"
        "</scanSettings>\n</scanSettingsList>\n"
        '<instrumentConfigurationList count="1">\n<instrumentConfiguration id="IC1"/>\n'
        "</instrumentConfigurationList>\n"
        '<dataProcessingList count="1">\n<dataProcessing id="spatialfuse_export">\n'
        '<processingMethod order="1" softwareRef="spatialfuse">\n'
        '<cvParam cvRef="MS" accession="MS:1000544" name="Conversion to mzML" value=""/>\n'
        "</processingMethod>\n</dataProcessing>\n</dataProcessingList>\n"
        '<run id="run1" defaultInstrumentConfigurationRef="IC1">\n'
        f'<spectrumList count="{n}" defaultDataProcessingRef="spatialfuse_export">\n'
    ]
    for i, (mz_off, mz_len, int_off, int_len, tic, lo, hi) in enumerate(records):
        x, y = int(coords[i, 0]), int(coords[i, 1])
        parts.append(
            f'<spectrum id="Scan={i + 1}" defaultArrayLength="0" index="{i}">\n'
            '<referenceableParamGroupRef ref="spectrum"/>\n'
            f'<cvParam cvRef="MS" accession="MS:1000285" name="total ion current" value="{tic}"/>\n'
            '<scanList count="1">\n'
            '<cvParam cvRef="MS" accession="MS:1000795" name="no combination" value=""/>\n'
            '<scan instrumentConfigurationRef="IC1">\n'
            f'<cvParam cvRef="IMS" accession="IMS:1000050" name="position x" value="{x}"/>\n'
            f'<cvParam cvRef="IMS" accession="IMS:1000051" name="position y" value="{y}"/>\n'
            "</scan>\n</scanList>\n"
            '<binaryDataArrayList count="2">\n'
            '<binaryDataArray encodedLength="0">\n<referenceableParamGroupRef ref="mzArray"/>\n'
            f'<cvParam cvRef="IMS" accession="IMS:1000102" name="external offset" '
            f'value="{mz_off}"/>\n'
            f'<cvParam cvRef="IMS" accession="IMS:1000103" name="external array length" '
            f'value="{mz_len}"/>\n'
            f'<cvParam cvRef="IMS" accession="IMS:1000104" name="external encoded length" '
            f'value="{mz_len * mz_dtype.itemsize}"/>\n'
            "<binary/>\n</binaryDataArray>\n"
            '<binaryDataArray encodedLength="0">\n'
            '<referenceableParamGroupRef ref="intensityArray"/>\n'
            f'<cvParam cvRef="IMS" accession="IMS:1000102" name="external offset" '
            f'value="{int_off}"/>\n'
            f'<cvParam cvRef="IMS" accession="IMS:1000103" name="external array length" '
            f'value="{int_len}"/>\n'
            f'<cvParam cvRef="IMS" accession="IMS:1000104" name="external encoded length" '
            f'value="{int_len * intensity_dtype.itemsize}"/>\n'
            "<binary/>\n</binaryDataArray>\n</binaryDataArrayList>\n</spectrum>\n"
        )
    parts.append("</spectrumList>\n</run>\n</mzML>\n")
    imzml_path.write_text("".join(parts), encoding="ISO-8859-1")
    return imzml_path, ibd_path


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
_UUID_RE = re.compile(r'accession="IMS:1000080"[^>]*value="\{?([0-9A-Fa-f-]{32,36})\}?"')


def _declared_uuid(imzml_path: Path) -> str | None:
    with open(imzml_path, "rb") as fh:
        head = fh.read(1 << 16).decode("latin-1", errors="replace")
    m = _UUID_RE.search(head)
    if m is None:  # value may come before accession
        m2 = re.search(r'value="\{?([0-9A-Fa-f-]{32,36})\}?"[^>]*accession="IMS:1000080"', head)
        return m2.group(1).replace("-", "").lower() if m2 else None
    return m.group(1).replace("-", "").lower()


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


def _ppm_bins(all_mz: np.ndarray, tol_ppm: float) -> np.ndarray:
    """Group sorted m/z values whose neighbours lie within ``tol_ppm``; return bin centres."""
    mz = np.sort(all_mz)
    if mz.size == 0:
        return mz, np.zeros(0, dtype=np.int64)
    gaps = np.diff(mz) > mz[:-1] * tol_ppm * 1e-6
    starts = np.r_[0, np.nonzero(gaps)[0] + 1]
    sums = np.add.reduceat(mz, starts)
    counts = np.diff(np.r_[starts, mz.size])
    return sums / counts, counts


def _assign(mz: np.ndarray, centres: np.ndarray, tol_ppm: float) -> np.ndarray:
    """Index of the nearest centre within ``tol_ppm`` for each m/z, -1 if none."""
    idx = np.searchsorted(centres, mz)
    idx = np.clip(idx, 1, len(centres) - 1) if len(centres) > 1 else np.zeros_like(idx)
    left = np.clip(idx - 1, 0, len(centres) - 1)
    choose_left = np.abs(mz - centres[left]) <= np.abs(mz - centres[idx])
    best = np.where(choose_left, left, idx)
    ok = np.abs(mz - centres[best]) <= centres[best] * tol_ppm * 1e-6
    return np.where(ok, best, -1)


def read_imzml(
    path: str | Path,
    *,
    sample: str | None = None,
    pixel_size_um: float | None = None,
    mz_tolerance_ppm: float = 10.0,
    min_pixel_fraction: float = 0.01,
    mz_range: tuple[float, float] | None = None,
) -> ad.AnnData:
    """Read an imzML/ibd pair into an AnnData (pixels × m/z features), coordinates in µm.

    ``X`` holds raw intensities (float32, CSR sparse for processed/centroid data). ``obs`` has
    ``x``/``y`` (1-based pixel indices) and ``tic``; ``obsm['spatial']`` is (x, y) × pixel size in
    µm (the MSI's own frame); ``var['mz']`` is the feature m/z. Pixel size comes from
    ``pixel_size_um`` if given, else the imzML metadata; neither → :class:`InputError`.
    """
    imzml_path = Path(path)
    ibd_path = check_imzml_pair(imzml_path, sample)
    p = _open_parser(imzml_path, ibd_path, sample)
    n = len(p.coordinates)
    if n == 0:
        raise InputError("the imzML lists no spectra", sample, imzml_path)
    meta_px = p.imzmldict.get("pixel size x")
    if pixel_size_um is None or (isinstance(pixel_size_um, float) and np.isnan(pixel_size_um)):
        if meta_px is None:
            raise InputError(
                "no pixel size: the imzML has no 'pixel size x' and the samples sheet gives no "
                "msi_pixel_size_um", sample, imzml_path)
        pixel_size_um = float(meta_px)
    pixel_size_um = float(pixel_size_um)
    if not pixel_size_um > 0:
        raise InputError(f"pixel size must be positive, got {pixel_size_um}", sample, imzml_path)

    # offsets and sizes straight from the parsed metadata; check the .ibd is long enough
    mz_off = np.asarray(p.mzOffsets, dtype=np.int64)
    mz_len = np.asarray(p.mzLengths, dtype=np.int64)
    in_off = np.asarray(p.intensityOffsets, dtype=np.int64)
    in_len = np.asarray(p.intensityLengths, dtype=np.int64)
    mz_dt = np.dtype(p.mzPrecision)
    in_dt = np.dtype(p.intensityPrecision)
    size = ibd_path.stat().st_size
    need = max(int((mz_off + mz_len * mz_dt.itemsize).max()), int((in_off + in_len * in_dt.itemsize).max()))
    if need > size:
        raise InputError(
            f"the .ibd file is truncated: the imzML needs {need} bytes, the file has {size}",
            sample, ibd_path)
    raw = np.memmap(ibd_path, dtype=np.uint8, mode="r")

    def mz_of(i):
        return np.frombuffer(raw, dtype=mz_dt, count=int(mz_len[i]), offset=int(mz_off[i]))

    def int_of(i):
        return np.frombuffer(raw, dtype=in_dt, count=int(in_len[i]), offset=int(in_off[i]))

    continuous = bool(np.all(mz_off == mz_off[0]) and np.all(mz_len == mz_len[0]))
    spectrum_mode = (getattr(p, "spectrum_mode", None) or "centroid").lower()
    coords = np.asarray(p.coordinates)[:, :2].astype(np.int64)

    def _check(vals, i):
        if not np.all(np.isfinite(vals)):
            raise InputError(f"spectrum {i} (pixel x={coords[i, 0]}, y={coords[i, 1]}) has "
                             "NaN or infinite intensities", sample, ibd_path)
        if vals.size and vals.min() < 0:
            raise InputError(f"spectrum {i} (pixel x={coords[i, 0]}, y={coords[i, 1]}) has "
                             "negative intensities", sample, ibd_path)

    tic = np.zeros(n)
    if continuous:
        axis = np.asarray(mz_of(0), dtype=np.float64)
        if spectrum_mode == "profile":
            mean = np.zeros(axis.size)
            for i in range(n):
                v = int_of(i)
                _check(v, i)
                mean += v
            centres, windows = _pick_profile_peaks(axis, mean / n, mz_tolerance_ppm)
            X = np.zeros((n, centres.size), dtype=np.float32)
            for i in range(n):
                v = np.asarray(int_of(i), dtype=np.float64)
                tic[i] = v.sum()
                cs = np.r_[0.0, np.cumsum(v)]
                X[i] = cs[windows[:, 1]] - cs[windows[:, 0]]
            X = sp.csr_matrix(X)
        else:
            centres = axis
            blocks, chunk = [], 4096
            for start in range(0, n, chunk):
                block = np.zeros((min(chunk, n - start), axis.size), dtype=np.float32)
                for k in range(block.shape[0]):
                    v = int_of(start + k)
                    _check(v, start + k)
                    tic[start + k] = float(v.sum())
                    block[k] = v
                blocks.append(sp.csr_matrix(block))
            X = sp.vstack(blocks, format="csr")
    else:
        # pass 1: collect m/z values to define a common axis (subsample for large files)
        step = max(1, n // 5000)
        sample_mz = np.concatenate([np.asarray(mz_of(i), dtype=np.float64) for i in range(0, n, step)])
        if mz_range is not None:
            sample_mz = sample_mz[(sample_mz >= mz_range[0]) & (sample_mz <= mz_range[1])]
        centres, counts = _ppm_bins(sample_mz, mz_tolerance_ppm)
        n_seen = len(range(0, n, step))
        keep = counts >= max(1, min_pixel_fraction * n_seen)
        centres = centres[keep]
        if centres.size == 0:
            raise InputError("no m/z peak is present in enough pixels to build a common axis",
                             sample, imzml_path)
        # pass 2: bin every spectrum onto the axis (sparse)
        indptr = [0]
        indices, data = [], []
        for i in range(n):
            mz = np.asarray(mz_of(i), dtype=np.float64)
            v = np.asarray(int_of(i), dtype=np.float64)
            _check(v, i)
            tic[i] = v.sum()
            j = _assign(mz, centres, mz_tolerance_ppm)
            ok = j >= 0
            if ok.any():
                jj, vv = j[ok], v[ok]
                uj, inv = np.unique(jj, return_inverse=True)
                acc = np.bincount(inv, weights=vv)
                indices.append(uj)
                data.append(acc.astype(np.float32))
                indptr.append(indptr[-1] + uj.size)
            else:
                indptr.append(indptr[-1])
        X = sp.csr_matrix(
            (np.concatenate(data) if data else np.zeros(0, np.float32),
             np.concatenate(indices) if indices else np.zeros(0, np.int64), np.asarray(indptr)),
            shape=(n, centres.size),
        )
    del raw
    if mz_range is not None and continuous:
        sel = (centres >= mz_range[0]) & (centres <= mz_range[1])
        centres, X = centres[sel], X[:, sel]

    obs = pd.DataFrame(
        {Key.obs.x: coords[:, 0], Key.obs.y: coords[:, 1], Key.obs.tic: tic},
        index=[f"px_{x}_{y}" for x, y in coords],
    )
    if obs.index.has_duplicates:
        dup = obs.index[obs.index.duplicated()][0]
        raise InputError(f"two spectra share the pixel position {dup}", sample, imzml_path)
    var = pd.DataFrame({Key.var.mz: centres}, index=[f"mz_{m:.4f}" for m in centres])
    var.index = pd.Index(_dedupe(var.index.tolist()))
    adata = ad.AnnData(X=X.astype(np.float32), obs=obs, var=var)
    adata.obsm[Key.obsm.spatial] = coords.astype(np.float64) * pixel_size_um
    adata.uns[Key.uns.spatialfuse] = {
        "modality": "msi",
        "source": str(imzml_path),
        "pixel_size_um": pixel_size_um,
        "imzml_layout": "continuous" if continuous else "processed",
        "spectrum_type": spectrum_mode,
        "mz_tolerance_ppm": float(mz_tolerance_ppm),
        "polarity": str(getattr(p, "polarity", "unknown")),
    }
    log.info("read %s: %d pixels x %d m/z features (%s, %s), pixel %.1f um", imzml_path.name,
             n, centres.size, "continuous" if continuous else "processed", spectrum_mode, pixel_size_um)
    return adata


def _pick_profile_peaks(axis: np.ndarray, mean: np.ndarray, tol_ppm: float):
    """Peaks of a mean profile spectrum and their integration windows (index ranges)."""
    from scipy.signal import find_peaks

    noise = np.median(np.abs(mean - np.median(mean))) * 1.4826 + 1e-12
    peaks, _ = find_peaks(mean, prominence=3 * noise)
    if peaks.size == 0:
        peaks = np.array([int(np.argmax(mean))])
    centres = axis[peaks]
    half = np.maximum(centres * tol_ppm * 1e-6, np.median(np.diff(axis)) if axis.size > 1 else 0)
    lo = np.searchsorted(axis, centres - half, side="left")
    hi = np.searchsorted(axis, centres + half, side="right")
    return centres, np.stack([lo, hi], axis=1)


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
