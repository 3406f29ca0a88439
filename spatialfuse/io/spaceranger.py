"""10x Space Ranger ``outs/`` folders: Visium (tissue_positions[_list].csv) and Visium HD bins
(``binned_outputs/square_XXXum`` with ``tissue_positions.parquet``).

Coordinates: full-resolution image pixels × µm-per-pixel, where µm-per-pixel is
``microns_per_pixel`` from ``scalefactors_json.json`` when present (Visium HD); for Visium it is
fitted from the spot lattice itself (array_row/array_col → pixels; spots are 100 µm apart
centre to centre), which uses every spot of the array and is exact to a fraction of a pixel.
Only when the lattice cannot be fitted does it fall back to 65 µm / ``spot_diameter_fullres``:
Space Ranger defines that diameter for a *theoretical 65 µm spot* (the capture spot itself is
55 µm), so dividing 55 µm by it — a common mistake — shrinks every distance by 15 %. Images, when present, are kept in ``uns['spatial']``
with scale factors re-expressed per µm, so scanpy's plotting works on µm coordinates.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..constants import VISIUM_SPOT_DIAMETER_UM, VISIUM_SPOT_PITCH_UM, Key
from ..errors import InputError

log = logging.getLogger(__name__)

POSITION_COLUMNS = [
    "barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres",
]


def _find_matrix(outs: Path, sample) -> Path:
    for name in ("filtered_feature_bc_matrix.h5", "raw_feature_bc_matrix.h5"):
        if (outs / name).exists():
            return outs / name
    raise InputError("no filtered_feature_bc_matrix.h5 in the Space Ranger folder", sample, outs)


def _read_positions(spatial: Path, sample) -> pd.DataFrame:
    cands = [spatial / "tissue_positions.parquet", spatial / "tissue_positions.csv",
             spatial / "tissue_positions_list.csv"]
    found = [c for c in cands if c.exists()]
    if not found:
        raise InputError(
            "no spot positions: expected spatial/tissue_positions.parquet, tissue_positions.csv "
            "or tissue_positions_list.csv", sample, spatial)
    path = found[0]
    try:
        if path.suffix == ".parquet":
            pos = pd.read_parquet(path)
        else:
            with open(path) as fh:
                first = fh.readline()
            header = 0 if first.lower().startswith("barcode") else None
            pos = pd.read_csv(path, header=header)
            if header is None:
                pos.columns = POSITION_COLUMNS[: pos.shape[1]]
    except Exception as exc:
        raise InputError(f"cannot read spot positions ({exc})", sample, path) from None
    missing = [c for c in POSITION_COLUMNS if c not in pos.columns]
    if missing:
        raise InputError(f"spot positions lack columns {missing}", sample, path)
    if pos["barcode"].duplicated().any():
        dup = pos.loc[pos["barcode"].duplicated(), "barcode"].iloc[0]
        raise InputError(f"duplicate barcode '{dup}' in spot positions", sample, path)
    return pos.set_index("barcode")


#: Space Ranger's spot_diameter_fullres spans a theoretical 65 µm spot (10x documentation)
SPACERANGER_FULLRES_SPOT_UM = 65.0
#: µm per full-resolution pixel of a typical Visium HD image (written by :func:`write_visium_hd_bins`)
VISIUM_HD_UM_PER_PX = 0.2738


def lattice_um_per_px(pos: pd.DataFrame) -> float | None:
    """µm per full-res pixel from the Visium hexagonal lattice (None if it cannot be fitted).

    Array coordinates map to µm as x = array_col × 50, y = array_row × 50·√3 (100 µm pitch);
    a least-squares affine from those to the pixel coordinates gives the pixel size as
    1/√|det|, independent of image rotation or flips.
    """
    if len(pos) < 10:
        return None
    lat = np.stack([pos["array_col"].to_numpy(float) * VISIUM_SPOT_PITCH_UM / 2,
                    pos["array_row"].to_numpy(float) * VISIUM_SPOT_PITCH_UM / 2 * np.sqrt(3)], 1)
    px = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)
    ok = np.all(np.isfinite(px), 1)
    if ok.sum() < 10 or np.linalg.matrix_rank(lat[ok] - lat[ok].mean(0)) < 2:
        return None
    S = np.c_[lat[ok], np.ones(ok.sum())]
    sol, *_ = np.linalg.lstsq(S, px[ok], rcond=None)
    resid = px[ok] - S @ sol
    det = abs(np.linalg.det(sol[:2].T))
    if det <= 0:
        return None
    um_per_px = 1.0 / np.sqrt(det)
    # a lattice that does not fit (e.g. not Visium) is not trusted
    if np.median(np.linalg.norm(resid, axis=1)) * um_per_px > 10.0:
        return None
    return float(um_per_px)


def _read_10x_h5(path: Path, sample) -> ad.AnnData:
    """Read a 10x HDF5 feature-barcode matrix (v3 'matrix/features' or v2 genome groups)."""
    try:
        with h5py.File(path, "r") as f:
            if "matrix" in f:
                g = f["matrix"]
                feat = g["features"]
                gene_ids = feat["id"][:].astype(str)
                names = feat["name"][:].astype(str)
                ftype = feat["feature_type"][:].astype(str) if "feature_type" in feat else None
            else:
                g = f[list(f.keys())[0]]
                gene_ids = g["genes"][:].astype(str)
                names = g["gene_names"][:].astype(str)
                ftype = None
            shape = tuple(int(v) for v in g["shape"][:])
            data = g["data"][:]
            indices = g["indices"][:]
            indptr = g["indptr"][:]
            barcodes = g["barcodes"][:].astype(str)
    except (OSError, KeyError) as exc:
        raise InputError(f"not a readable 10x HDF5 matrix ({exc})", sample, path) from None
    # stored as features x barcodes in CSC == barcodes x features in CSR
    X = sp.csr_matrix((data.astype(np.float32), indices, indptr), shape=(shape[1], shape[0]))
    var = pd.DataFrame({Key.var.gene_ids: gene_ids}, index=names)
    if ftype is not None:
        var["feature_types"] = ftype
    if pd.Index(barcodes).has_duplicates:
        dup = pd.Index(barcodes)[pd.Index(barcodes).duplicated()][0]
        raise InputError(f"duplicate barcode '{dup}' in the count matrix", sample, path)
    a = ad.AnnData(X=X, obs=pd.DataFrame(index=barcodes), var=var)
    a.var_names_make_unique()
    if ftype is not None:
        a = a[:, a.var["feature_types"] == "Gene Expression"].copy()
    return a


def read_spaceranger(outs: str | Path, *, sample: str | None = None,
                     load_images: bool = True) -> ad.AnnData:
    """Read a Space Ranger ``outs/`` (or a Visium HD ``square_XXXum`` bin) folder.

    Returns spots × genes with raw counts in ``X`` and ``layers['counts']``,
    ``obsm['spatial']`` in µm, ``obs`` with in_tissue/array_row/array_col, and
    ``uns['spatialfuse']`` recording platform, µm per pixel and spot/bin size in µm.
    """
    outs = Path(outs)
    if not outs.is_dir():
        raise InputError("Space Ranger folder does not exist", sample, outs)
    spatial = outs / "spatial"
    sf_path = spatial / "scalefactors_json.json"
    if not sf_path.exists():
        raise InputError("spatial/scalefactors_json.json is missing from the Space Ranger folder",
                         sample, outs)
    try:
        scalef = json.loads(sf_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"scalefactors_json.json is not valid JSON ({exc})", sample, sf_path) from None
    adata = _read_10x_h5(_find_matrix(outs, sample), sample)
    pos = _read_positions(spatial, sample)
    missing = adata.obs_names.difference(pos.index)
    if len(missing):
        raise InputError(f"{len(missing)} barcodes of the matrix (e.g. '{missing[0]}') have no "
                         "spot position", sample, spatial)
    pos_all = pos
    all_xy = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=np.float64)
    pos = pos.loc[adata.obs_names]

    m = re.search(r"square_(\d+)um", str(outs))
    bin_size = scalef.get("bin_size_um") or (float(m.group(1)) if m else None)
    scale_source = "microns_per_pixel"
    if "microns_per_pixel" in scalef:
        um_per_px = float(scalef["microns_per_pixel"])
    elif bin_size is None and (um := lattice_um_per_px(pos_all)) is not None:
        um_per_px, scale_source = um, "visium_lattice"
    elif "spot_diameter_fullres" in scalef and scalef["spot_diameter_fullres"] > 0:
        um_per_px = SPACERANGER_FULLRES_SPOT_UM / float(scalef["spot_diameter_fullres"])
        scale_source = "spot_diameter_fullres"
    else:
        raise InputError("cannot tell the pixel size: scalefactors_json.json has neither "
                         "microns_per_pixel nor spot_diameter_fullres", sample, sf_path)
    platform = "visium_hd" if bin_size is not None else "visium"
    spot_um = float(bin_size) if bin_size is not None else VISIUM_SPOT_DIAMETER_UM

    for c in ("in_tissue", "array_row", "array_col"):
        adata.obs[c] = pos[c].to_numpy().astype(int)
    xy_px = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(xy_px)):
        raise InputError("spot positions contain NaN", sample, spatial)
    adata.obsm[Key.obsm.spatial] = xy_px * um_per_px
    adata.layers[Key.layers.counts] = adata.X.copy()
    adata.uns[Key.uns.spatialfuse] = {
        "modality": "rna",
        "source": str(outs),
        "platform": platform,
        "um_per_fullres_px": um_per_px,
        "um_per_px_source": scale_source,
        "spot_diameter_um": spot_um,
        "spot_shape": "square" if platform == "visium_hd" else "disk",
        # the capture area (all array positions, in tissue or not), xmin, ymin, xmax, ymax in µm
        "capture_box_um": [float(v) for v in np.r_[np.nanmin(all_xy, 0), np.nanmax(all_xy, 0)]
                           * um_per_px + np.r_[-1, -1, 1, 1] * spot_um / 2],
    }
    if platform == "visium_hd":  # every bin's array index, tissue or not: pooling needs it
        adata.uns[Key.uns.spatialfuse]["array_extent"] = hd_array_extent(pos_all)
    if load_images:
        _attach_images(adata, spatial, scalef, um_per_px, sample or "sample")
    log.info("read %s: %d spots x %d genes (%s, %.3f um/px)", outs, adata.n_obs, adata.n_vars,
             platform, um_per_px)
    return adata


def _attach_images(adata, spatial: Path, scalef: dict, um_per_px: float, library: str) -> None:
    import matplotlib.image as mpimg

    images = {}
    for res in ("hires", "lowres"):
        f = spatial / f"tissue_{res}_image.png"
        if f.exists():
            try:
                images[res] = mpimg.imread(f)
            except Exception:  # an unreadable thumbnail is not worth failing over
                log.warning("could not read %s; continuing without it", f)
    if not images:
        return
    sf = {"spot_diameter_fullres": adata.uns[Key.uns.spatialfuse]["spot_diameter_um"]}
    for res in images:
        key = f"tissue_{res}_scalef"
        if key in scalef:
            sf[key] = float(scalef[key]) / um_per_px  # image px per µm
    adata.uns[Key.uns.spatial] = {library: {"images": images, "scalefactors": sf}}


def write_spaceranger(
    outs: str | Path,
    counts: sp.spmatrix | np.ndarray,
    barcodes: list[str],
    genes: list[str],
    positions: pd.DataFrame,
    *,
    um_per_px: float = 0.65,
    lowres_image: np.ndarray | None = None,
    lowres_scalef: float | None = None,
    positions_layout: str = "csv",
) -> Path:
    """Write a Space Ranger-like ``outs/`` folder (10x HDF5 v3 + spatial/).

    ``positions`` indexed by barcode with in_tissue, array_row, array_col and x_um/y_um; it may
    list more spots than ``barcodes`` (the whole array). ``positions_layout``: 'csv' (Space
    Ranger ≥ 2, with header), 'list' (tissue_positions_list.csv, no header) or 'parquet'.
    """
    outs = Path(outs)
    (outs / "spatial").mkdir(parents=True, exist_ok=True)
    X = sp.csc_matrix(counts.T if sp.issparse(counts) else np.asarray(counts).T)  # genes x spots
    with h5py.File(outs / "filtered_feature_bc_matrix.h5", "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        g.create_dataset("data", data=X.data.astype(np.int32))
        g.create_dataset("indices", data=X.indices.astype(np.int64))
        g.create_dataset("indptr", data=X.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array(X.shape, dtype=np.int32))
        ft = g.create_group("features")
        ft.create_dataset("id", data=np.array([f"SIMG{i:05d}" for i in range(len(genes))], dtype="S"))
        ft.create_dataset("name", data=np.array(genes, dtype="S"))
        ft.create_dataset("feature_type", data=np.array(["Gene Expression"] * len(genes), dtype="S"))
        ft.create_dataset("genome", data=np.array(["SIM"] * len(genes), dtype="S"))
        ft.create_dataset("_all_tag_keys", data=np.array(["genome"], dtype="S"))
    pos = pd.DataFrame({
        "barcode": positions.index,
        "in_tissue": positions["in_tissue"].astype(int).to_numpy(),
        "array_row": positions["array_row"].astype(int).to_numpy(),
        "array_col": positions["array_col"].astype(int).to_numpy(),
        "pxl_row_in_fullres": np.round(positions["y_um"].to_numpy() / um_per_px).astype(int),
        "pxl_col_in_fullres": np.round(positions["x_um"].to_numpy() / um_per_px).astype(int),
    })
    if positions_layout == "csv":
        pos.to_csv(outs / "spatial" / "tissue_positions.csv", index=False)
    elif positions_layout == "list":
        pos.to_csv(outs / "spatial" / "tissue_positions_list.csv", index=False, header=False)
    elif positions_layout == "parquet":
        pos.to_parquet(outs / "spatial" / "tissue_positions.parquet", index=False)
    else:
        raise ValueError(f"unknown positions_layout {positions_layout!r}")
    scalef = {
        "spot_diameter_fullres": SPACERANGER_FULLRES_SPOT_UM / um_per_px,
        "fiducial_diameter_fullres": 1.6154 * SPACERANGER_FULLRES_SPOT_UM / um_per_px,
        "tissue_hires_scalef": (lowres_scalef or 0.05) * 3.333,
        "tissue_lowres_scalef": lowres_scalef or 0.05,
    }
    (outs / "spatial" / "scalefactors_json.json").write_text(json.dumps(scalef, indent=2))
    if lowres_image is not None:
        import matplotlib.image as mpimg

        mpimg.imsave(outs / "spatial" / "tissue_lowres_image.png", np.clip(lowres_image, 0, 1))
    return outs


def hd_array_extent(positions: pd.DataFrame) -> list[int]:
    """First and last row, first and last column of every bin listed (``array_row``,
    ``array_col``): the extent of a Visium HD array, tissue or not."""
    r, c = positions["array_row"], positions["array_col"]
    return [int(r.min()), int(r.max()), int(c.min()), int(c.max())]


def visium_hd_barcodes(bin_um: int, bin_rows, bin_cols) -> list[str]:
    """Space Ranger HD's bin barcodes, ``s_XXXum_RRRRR_CCCCC-1``."""
    return [f"s_{int(bin_um):03d}um_{r:05d}_{c:05d}-1" for r, c in zip(bin_rows, bin_cols)]


def write_visium_hd_bins(outs: str | Path, counts: sp.spmatrix | np.ndarray, bin_rows: np.ndarray,
                         bin_cols: np.ndarray, genes: list[str], *, bin_um: int = 8,
                         um_per_px: float = VISIUM_HD_UM_PER_PX, in_tissue: np.ndarray | None = None,
                         lowres_image: np.ndarray | None = None,
                         lowres_scalef: float | None = None) -> Path:
    """Write one Visium HD bin size the way Space Ranger lays it out:
    ``outs/binned_outputs/square_XXXum/`` with the 10x HDF5 matrix,
    ``spatial/tissue_positions.parquet`` (barcodes ``s_XXXum_RRRRR_CCCCC-1``) and
    ``spatial/scalefactors_json.json`` carrying ``microns_per_pixel`` and ``bin_size_um``.
    Bin (row, col) sits at (col + 0.5, row + 0.5) × ``bin_um`` µm. ``counts`` has a row per
    listed bin, or, with ``in_tissue`` given, may have one per tissue bin only (Space Ranger's
    filtered matrix; the positions still list every bin). Returns the bin folder."""
    bin_rows, bin_cols = np.asarray(bin_rows, int), np.asarray(bin_cols, int)
    folder = Path(outs) / "binned_outputs" / f"square_{bin_um:03d}um"
    barcodes = visium_hd_barcodes(bin_um, bin_rows, bin_cols)
    tissue = np.ones(len(barcodes), int) if in_tissue is None else np.asarray(in_tissue, int)
    positions = pd.DataFrame({
        "in_tissue": tissue, "array_row": bin_rows, "array_col": bin_cols,
        "x_um": (bin_cols + 0.5) * bin_um, "y_um": (bin_rows + 0.5) * bin_um,
    }, index=barcodes)
    in_matrix = barcodes
    if counts.shape[0] != len(barcodes):
        in_matrix = [b for b, t in zip(barcodes, tissue) if t]
        if counts.shape[0] != len(in_matrix):
            raise ValueError(f"counts has {counts.shape[0]} rows: neither every bin ({len(barcodes)}) "
                             f"nor the tissue bins ({len(in_matrix)})")
    write_spaceranger(folder, counts, in_matrix, genes, positions, um_per_px=um_per_px,
                      positions_layout="parquet", lowres_image=lowres_image,
                      lowres_scalef=lowres_scalef)
    sf_path = folder / "spatial" / "scalefactors_json.json"
    sf = json.loads(sf_path.read_text())
    sf.update(microns_per_pixel=um_per_px, bin_size_um=float(bin_um),
              spot_diameter_fullres=bin_um / um_per_px)
    sf_path.write_text(json.dumps(sf, indent=2))
    return folder
