"""imzML 1.1 writing: spec-conformant files (UUID and SHA-1 of the .ibd, pixel size in
scanSettings), streamed chunk by chunk so that a file of 10^6 spectra is written without holding
them in memory. Used by the demo simulator, the tests and the ingest benchmark.
"""

from __future__ import annotations

import hashlib
import uuid as uuidlib
from pathlib import Path
from typing import Sequence

import numpy as np

_DTYPES = {
    np.dtype("float32"): ("MS:1000521", "32-bit float"),
    np.dtype("float64"): ("MS:1000523", "64-bit float"),
    np.dtype("int32"): ("MS:1000519", "32-bit integer"),
    np.dtype("int64"): ("MS:1000522", "64-bit integer"),
}

_SPECTRUM = (
    '<spectrum id="Scan={n}" defaultArrayLength="0" index="{i}">\n'
    '<referenceableParamGroupRef ref="spectrum"/>\n'
    '<cvParam cvRef="MS" accession="MS:1000285" name="total ion current" value="{tic}"/>\n'
    '<scanList count="1">\n'
    '<cvParam cvRef="MS" accession="MS:1000795" name="no combination" value=""/>\n'
    '<scan instrumentConfigurationRef="IC1">\n'
    '<cvParam cvRef="IMS" accession="IMS:1000050" name="position x" value="{x}"/>\n'
    '<cvParam cvRef="IMS" accession="IMS:1000051" name="position y" value="{y}"/>\n'
    "</scan>\n</scanList>\n"
    '<binaryDataArrayList count="2">\n'
    '<binaryDataArray encodedLength="0">\n<referenceableParamGroupRef ref="mzArray"/>\n'
    '<cvParam cvRef="IMS" accession="IMS:1000102" name="external offset" value="{mo}"/>\n'
    '<cvParam cvRef="IMS" accession="IMS:1000103" name="external array length" value="{ml}"/>\n'
    '<cvParam cvRef="IMS" accession="IMS:1000104" name="external encoded length" value="{mb}"/>\n'
    "<binary/>\n</binaryDataArray>\n"
    '<binaryDataArray encodedLength="0">\n<referenceableParamGroupRef ref="intensityArray"/>\n'
    '<cvParam cvRef="IMS" accession="IMS:1000102" name="external offset" value="{io}"/>\n'
    '<cvParam cvRef="IMS" accession="IMS:1000103" name="external array length" value="{il}"/>\n'
    '<cvParam cvRef="IMS" accession="IMS:1000104" name="external encoded length" value="{ib}"/>\n'
    "<binary/>\n</binaryDataArray>\n</binaryDataArrayList>\n</spectrum>\n"
)


class ImzMLStreamWriter:
    """Write an imzML/ibd pair spectrum block by spectrum block.

    ``mode='continuous'`` needs ``shared_mz`` (one m/z axis written once); ``'processed'`` takes
    an m/z array per spectrum. Call :meth:`add` with blocks of spectra, then :meth:`close`, which
    writes the XML (it needs the .ibd's SHA-1, so it comes last). Per spectrum only seven numbers
    are kept in memory.
    """

    def __init__(self, path: str | Path, *, mode: str = "processed",
                 spectrum_type: str = "centroid",
                 pixel_size_um: float | tuple[float, float] | None = None,
                 polarity: str = "positive", mz_dtype=np.float64, intensity_dtype=np.float32,
                 shared_mz: np.ndarray | None = None, uuid: uuidlib.UUID | None = None):
        if mode not in ("continuous", "processed"):
            raise ValueError("mode must be 'continuous' or 'processed'")
        if spectrum_type not in ("centroid", "profile"):
            raise ValueError("spectrum_type must be 'centroid' or 'profile'")
        if (mode == "continuous") != (shared_mz is not None):
            raise ValueError("continuous mode needs shared_mz; processed mode must not have one")
        path = Path(path)
        self.imzml_path, self.ibd_path = path.with_suffix(".imzML"), path.with_suffix(".ibd")
        self.mode, self.spectrum_type, self.polarity = mode, spectrum_type, polarity
        self.pixel_size_um = pixel_size_um
        self.mz_dtype, self.int_dtype = np.dtype(mz_dtype), np.dtype(intensity_dtype)
        # a fresh random UUID unless the caller fixes one (simulated data: derived from content,
        # so the same seed writes byte-identical files)
        self.uuid = uuid if uuid is not None else uuidlib.uuid4()
        self._sha1 = hashlib.sha1()
        self._fh = open(self.ibd_path, "wb")
        self._write_bytes(self.uuid.bytes)
        self._records: list[np.ndarray] = []  # blocks of (x, y, mz_off, mz_len, int_off, int_len)
        self._tic: list[np.ndarray] = []
        self._shared = None
        if shared_mz is not None:
            axis = np.ascontiguousarray(shared_mz, dtype=self.mz_dtype)
            self._shared = (self._write_bytes(axis.tobytes()), axis.size)

    def _write_bytes(self, b: bytes) -> int:
        off = self._fh.tell()
        self._fh.write(b)
        self._sha1.update(b)
        return off

    def add(self, coords: np.ndarray, intensities: Sequence[np.ndarray] | np.ndarray,
            mzs: Sequence[np.ndarray] | None = None) -> None:
        """Append spectra: ``coords`` (k, 2) 1-based pixel indices, ``intensities`` k arrays
        (or a (k, n_mz) array in continuous mode), ``mzs`` k arrays (processed mode)."""
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        k = coords.shape[0]
        rec = np.zeros((k, 6), dtype=np.int64)
        rec[:, :2] = coords
        tic = np.zeros(k)
        for i in range(k):
            inten = np.ascontiguousarray(intensities[i], dtype=self.int_dtype)
            if self._shared is not None:
                if inten.size != self._shared[1]:
                    raise ValueError(f"spectrum {i}: {inten.size} intensities for an axis of "
                                     f"{self._shared[1]} m/z values")
                rec[i, 2:4] = self._shared
            else:
                mz = np.ascontiguousarray(mzs[i], dtype=self.mz_dtype)
                if mz.size != inten.size:
                    raise ValueError(f"spectrum {i}: m/z and intensity lengths differ")
                rec[i, 2:4] = self._write_bytes(mz.tobytes()), mz.size
            rec[i, 4:6] = self._write_bytes(inten.tobytes()), inten.size
            tic[i] = float(inten.sum(dtype=np.float64))
        self._records.append(rec)
        self._tic.append(tic)

    def close(self) -> tuple[Path, Path]:
        """Finish the .ibd and write the imzML; returns (imzML path, ibd path)."""
        self._fh.close()
        rec = np.concatenate(self._records) if self._records else np.zeros((0, 6), np.int64)
        tic = np.concatenate(self._tic) if self._tic else np.zeros(0)
        if rec.shape[0] == 0:
            raise ValueError("no spectra were added")
        mzb, inb = self.mz_dtype.itemsize, self.int_dtype.itemsize
        with open(self.imzml_path, "w", encoding="ISO-8859-1") as fh:
            fh.write(self._header(rec.shape[0], int(rec[:, 0].max()), int(rec[:, 1].max())))
            for start in range(0, rec.shape[0], 10000):
                fh.write("".join(
                    _SPECTRUM.format(n=i + 1, i=i, tic=float(tic[i]), x=r[0], y=r[1], mo=r[2],
                                     ml=r[3], mb=r[3] * mzb, io=r[4], il=r[5], ib=r[5] * inb)
                    for i, r in enumerate(rec[start:start + 10000].tolist(), start)))
            fh.write("</spectrumList>\n</run>\n</mzML>\n")
        return self.imzml_path, self.ibd_path

    def _header(self, n: int, max_x: int, max_y: int) -> str:
        mz_acc, mz_name = _DTYPES[self.mz_dtype]
        int_acc, int_name = _DTYPES[self.int_dtype]
        mode_acc = "IMS:1000030" if self.mode == "continuous" else "IMS:1000031"
        centroid = self.spectrum_type == "centroid"
        spec_acc, spec_name = (("MS:1000127", "centroid spectrum") if centroid
                               else ("MS:1000128", "profile spectrum"))
        pol = ('<cvParam cvRef="MS" accession="MS:1000130" name="positive scan" value=""/>'
               if self.polarity == "positive" else
               '<cvParam cvRef="MS" accession="MS:1000129" name="negative scan" value=""/>')
        px = ""
        if self.pixel_size_um is not None:
            # one number: square pixels (written as before, byte for byte); a pair: (x, y)
            ps = self.pixel_size_um
            psx, psy = (ps, ps) if np.ndim(ps) == 0 else (float(ps[0]), float(ps[1]))
            unit = 'unitCvRef="UO" unitAccession="UO:0000017" unitName="micrometer"'
            px = (f'<cvParam cvRef="IMS" accession="IMS:1000046" name="pixel size (x)" '
                  f'value="{psx}" {unit}/>\n'
                  f'<cvParam cvRef="IMS" accession="IMS:1000047" name="pixel size y" '
                  f'value="{psy}" {unit}/>\n'
                  f'<cvParam cvRef="IMS" accession="IMS:1000044" name="max dimension x" '
                  f'value="{max_x * psx}" {unit}/>\n'
                  f'<cvParam cvRef="IMS" accession="IMS:1000045" name="max dimension y" '
                  f'value="{max_y * psy}" {unit}/>\n')
        return (
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
            f'<cvParam cvRef="IMS" accession="{mode_acc}" name="{self.mode}" value=""/>\n'
            f'<cvParam cvRef="IMS" accession="IMS:1000080" name="universally unique identifier" '
            f'value="{{{self.uuid}}}"/>\n'
            f'<cvParam cvRef="IMS" accession="IMS:1000091" name="ibd SHA-1" '
            f'value="{self._sha1.hexdigest()}"/>\n'
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
        )


def write_imzml(
    path: str | Path,
    coords: np.ndarray,
    mzs: np.ndarray | Sequence[np.ndarray],
    intensities: Sequence[np.ndarray] | np.ndarray,
    *,
    mode: str = "processed",
    spectrum_type: str = "centroid",
    pixel_size_um: float | tuple[float, float] | None = None,
    polarity: str = "positive",
    mz_dtype=np.float64,
    intensity_dtype=np.float32,
    uuid: uuidlib.UUID | None = None,
) -> tuple[Path, Path]:
    """Write an imzML/ibd pair.

    ``coords``: (n, 2) 1-based pixel indices (x, y); ``pixel_size_um``: one number (square
    pixels) or (x, y). ``mode='continuous'``: ``mzs`` is one array
    shared by all spectra and ``intensities`` is (n, len(mzs)). ``mode='processed'``: ``mzs`` and
    ``intensities`` are sequences of per-pixel arrays. ``uuid``: the file pair's UUID (default:
    a fresh random one). Returns the two paths.
    """
    w = ImzMLStreamWriter(path, mode=mode, spectrum_type=spectrum_type,
                          pixel_size_um=pixel_size_um, polarity=polarity, mz_dtype=mz_dtype,
                          intensity_dtype=intensity_dtype,
                          shared_mz=np.asarray(mzs) if mode == "continuous" else None,
                          uuid=uuid)
    w.add(coords, intensities, None if mode == "continuous" else mzs)
    return w.close()
