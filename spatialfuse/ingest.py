"""Stage 1 as one function: read both modalities (any supported format), QC, normalise, annotate."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .constants import Key
from .errors import InputError
from .io import read_imzml, read_msi_h5ad, read_spaceranger, read_st_h5ad
from .io.h5ad import msi_h5ad_pixel_size
from .io.imzml import imzml_pixel_sizes, resolve_pixel_size
from .pixels import parse_size, pixel_side
from .msi import annotate_mz, load_metabolite_table, preprocess_msi
from .st import pool_visium_hd, preprocess_st, truth_for_squares

log = logging.getLogger(__name__)


def load_st(path: str | Path, sample: str | None = None, visium_hd_bin_um: int = 8) -> ad.AnnData:
    """Space Ranger folder (Visium, a Visium HD ``outs/`` with ``binned_outputs/`` — the
    ``square_XXXum`` folder of ``visium_hd_bin_um`` is read — or one ``square_XXXum`` folder)
    or ``.h5ad``."""
    p = Path(path)
    if not p.exists():
        raise InputError("transcriptomics input does not exist", sample, p)
    if p.is_dir():
        if (p / "outs").is_dir() and not (p / "spatial").is_dir():
            p = p / "outs"
        if (p / "binned_outputs").is_dir() and not (p / "spatial").is_dir():
            bins = sorted((p / "binned_outputs").glob("square_*um"))
            if not bins:
                raise InputError("binned_outputs/ has no square_XXXum folder", sample, p)
            want = f"square_{int(visium_hd_bin_um):03d}um"
            chosen = [b for b in bins if b.name == want]
            if not chosen:
                raise InputError(f"binned_outputs/ has no {want} folder (ingest.st.visium_hd_bin_um"
                                 f" = {visium_hd_bin_um}); found {[b.name for b in bins]}",
                                 sample, p / "binned_outputs")
            p = chosen[0]
            log.info("Visium HD: using %s", p.name)
        if not (p / "spatial").is_dir() and not any(p.glob("*feature_bc_matrix*")):
            raise InputError(
                "not a Space Ranger output folder (no spatial/ and no *_feature_bc_matrix.h5): "
                "give Space Ranger's outs/ folder, a Visium HD binned_outputs/square_XXXum/ "
                "folder, or an .h5ad", sample, p)
        return read_spaceranger(p, sample=sample)
    if p.suffix == ".h5ad":
        return read_st_h5ad(p, sample=sample)
    raise InputError("transcriptomics input must be a Space Ranger folder or an .h5ad file",
                     sample, p)


def load_msi(path: str | Path, sample: str | None = None,
             pixel_size_um: float | tuple[float, float] | None = None,
             mz_tolerance_ppm: float = 10.0, min_pixel_fraction: float = 0.01,
             peak_snr: float = 6.0) -> ad.AnnData:
    """``.imzML`` (continuous or processed, centroid or profile) or ``.h5ad``."""
    p = Path(path)
    if _msi_format(p, sample) == "imzml":
        return read_imzml(p, sample=sample, pixel_size_um=pixel_size_um,
                          mz_tolerance_ppm=mz_tolerance_ppm, min_pixel_fraction=min_pixel_fraction,
                          peak_snr=peak_snr)
    return read_msi_h5ad(p, sample=sample, pixel_size_um=pixel_size_um)


def _msi_format(p: Path, sample: str | None) -> str:
    """``imzml`` or ``h5ad``: the MSI input's format, or an :class:`InputError` that names it."""
    if not p.exists():
        raise InputError("MSI input does not exist", sample, p)
    if p.suffix.lower() == ".imzml":
        return "imzml"
    if p.suffix == ".h5ad":
        return "h5ad"
    raise InputError("MSI input must be an .imzML (with its .ibd) or an .h5ad file", sample, p)


#: more Visium HD bins than this, unpooled, get a warning that pooling them would save time
HD_BINS_HINT = 50_000

#: defaults of the ``ingest`` config section (the schema documents the same values; tested)
ST_DEFAULTS = {"min_counts": 10, "min_genes": 5, "max_pct_mt": 50.0, "min_spots_per_gene": 3,
               "target_sum": 10000.0, "n_top_genes": 2000, "visium_hd_bin_um": 8,
               "visium_hd_pool_um": "msi_pixel"}
MSI_DEFAULTS = {"normalisation": "tic", "reference_mz": None, "transform": "log1p",
                "mz_tolerance_ppm": 10.0, "peak_snr": 6.0, "min_pixel_fraction": 0.01,
                "tissue_mask": "otsu", "matrix_ratio": 1.5, "remove_matrix_peaks": True,
                "annotation_table": None, "adducts": ["[M+H]+", "[M+Na]+", "[M+K]+"],
                "annotation_ppm": 5.0}


def run_ingest(st_path, msi_path, params: dict, *, sample: str,
               pixel_size_um: float | tuple[float, float] | None = None) -> dict:
    """Read, QC and normalise both modalities; annotate m/z. ``params`` = the ``ingest`` section
    (missing keys take :data:`ST_DEFAULTS` / :data:`MSI_DEFAULTS`)."""
    pst = {**ST_DEFAULTS, **params.get("st", {})}
    pmsi = {**MSI_DEFAULTS, **params.get("msi", {})}
    st_raw = load_st(st_path, sample, pst["visium_hd_bin_um"])
    pool_um = hd_pool_side(pst["visium_hd_pool_um"], st_raw, sample,
                           lambda: msi_pixel_size(msi_path, sample, pixel_size_um))
    if pool_um:
        st_raw = pool_visium_hd(st_raw, pool_um, sample=sample)
    meta = st_raw.uns.get(Key.uns.spatialfuse, {})
    if meta.get("platform") == "visium_hd" and "pool_factor" not in meta and st_raw.n_obs > HD_BINS_HINT:
        why = ("ingest.st.visium_hd_pool_um is null" if not pool_um else
               f"the pooling side, {pool_um:g} µm, holds about one bin")
        log.warning("sample '%s': %d Visium HD bins of %g µm, kept as bins (%s); every later "
                    "stage works per bin, and the impute job grows faster than the bins (README, "
                    "Cluster). A larger side in µm (ingest.st.visium_hd_pool_um) sums them into "
                    "squares first.", sample, st_raw.n_obs, meta["spot_diameter_um"], why)
    st, qc_st = preprocess_st(
        st_raw, min_counts=pst["min_counts"], min_genes=pst["min_genes"],
        max_pct_mt=pst["max_pct_mt"], min_spots_per_gene=pst["min_spots_per_gene"],
        target_sum=pst["target_sum"], n_top_genes=pst["n_top_genes"], sample=sample)
    del st_raw  # one raw reading at a time: the MSI is read only now
    tol = float(pmsi["mz_tolerance_ppm"])
    msi_raw = load_msi(msi_path, sample, pixel_size_um, tol, pmsi["min_pixel_fraction"],
                       float(pmsi["peak_snr"]))
    msi, qc_msi = preprocess_msi(
        msi_raw, normalisation=pmsi["normalisation"], reference_mz=pmsi["reference_mz"],
        reference_ppm=max(2 * tol, 20.0), transform=pmsi["transform"],
        tissue_mask_method=pmsi["tissue_mask"], matrix_ratio=pmsi["matrix_ratio"],
        remove_matrix_peaks=pmsi["remove_matrix_peaks"],
        min_pixel_fraction=pmsi["min_pixel_fraction"], sample=sample)
    del msi_raw  # the raw reading is in msi.layers['intensity'] (only the kept peaks)
    table = load_metabolite_table(pmsi["annotation_table"])
    ann = annotate_mz(msi, table, list(pmsi["adducts"]), float(pmsi["annotation_ppm"]))
    qc_msi["peaks_annotated"] = int((msi.var["n_candidates"] > 0).sum())
    qc_msi["peaks_ambiguous"] = int((msi.var["n_candidates"] > 1).sum())
    qc = {"sample": sample, "st": qc_st, "msi": qc_msi,
          "st_meta": {k: v for k, v in st.uns["spatialfuse"].items()},
          "msi_meta": {k: v for k, v in msi.uns["spatialfuse"].items()}}
    return {"st": st, "msi": msi, "qc": qc, "annotations": ann}


def msi_pixel_size(path: str | Path, sample: str | None = None,
                   pixel_size_um: float | tuple[float, float] | None = None) -> float:
    """The MSI pixel size (µm; for rectangular pixels the side of the square of the same area,
    :func:`spatialfuse.pixels.pixel_side`) :func:`load_msi` will use, without reading the
    spectra or the intensities: the samples sheet's value, else the imzML's head (``pixel size
    x`` and ``y``) or the .h5ad's metadata or coordinates. Used to pool Visium HD bins to the pixel before the ST QC,
    so the two raw readings are never held at once."""
    p = Path(path)
    if _msi_format(p, sample) == "h5ad":
        return msi_h5ad_pixel_size(p, sample=sample, pixel_size_um=pixel_size_um)
    return pixel_side(resolve_pixel_size(pixel_size_um, imzml_pixel_sizes(p, sample), sample, p, quiet=True))


def hd_pool_side(setting, st_raw: ad.AnnData, sample: str,
                 msi_pixel: Callable[[], float]) -> float | None:
    """The side (µm) ``ingest.st.visium_hd_pool_um`` pools Visium HD bins to, or None to keep
    them. ``msi_pixel``: this sample's MSI pixel (each square then pairs with about one pixel, so
    samples of one study with different pixels pool differently), asked of ``msi_pixel()`` only
    then; it leaves Visium spots and AnnData input as they are, where a number in µm is an error
    for them (:func:`pool_visium_hd`)."""
    if setting is None:
        return None
    if setting != "msi_pixel":
        return float(setting)
    if st_raw.uns.get(Key.uns.spatialfuse, {}).get("platform") != "visium_hd":
        return None
    px = float(msi_pixel())
    log.info("sample '%s': Visium HD bins pooled to the MSI pixel, %g µm", sample, px)
    return px


def parse_pixel_size(value, sample: str | None = None) -> float | tuple[float, float] | None:
    """The samples sheet's ``msi_pixel_size_um`` cell: empty → None, one positive number (both
    axes) or an x×y pair such as ``40x80`` (:func:`spatialfuse.pixels.parse_size`)."""
    try:
        return parse_size(value)
    except ValueError as exc:
        raise InputError(f"msi_pixel_size_um {exc}", sample) from None


def truth_domains(truth_dir: str | Path | None, barcodes) -> pd.Series | None:
    """True domain of each barcode from a truth folder (``spots.tsv``; None without one). Pooled
    Visium HD squares take their tissue bins' most common domain; unknown barcodes are NaN."""
    if not truth_dir or not (Path(truth_dir) / "spots.tsv").exists():
        return None
    t = pd.read_csv(Path(truth_dir) / "spots.tsv", sep="\t", index_col=0)
    if "domain" not in t:
        return None
    t = (t[t["in_tissue"] > 0] if "in_tissue" in t else t)["domain"]
    return truth_for_squares(t, barcodes)


def read_truth_domains(truth_dir: str | Path | None, barcodes) -> np.ndarray | None:
    """True domain per barcode from a truth folder (``spots.tsv``), or None; every barcode must
    be there (or be a pooled square of bins that are)."""
    out = truth_domains(truth_dir, barcodes)
    if out is None:
        return None
    if out.isna().any():
        raise KeyError(f"{int(out.isna().sum())} barcodes (e.g. '{out.index[out.isna()][0]}') "
                       f"are not in {Path(truth_dir) / 'spots.tsv'}")
    return out.astype(int).to_numpy()
