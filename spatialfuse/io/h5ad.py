"""AnnData inputs: ST or MSI already in ``.h5ad`` with ``obsm['spatial']``."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ..constants import VISIUM_SPOT_DIAMETER_UM, Key
from ..errors import InputError
from ..pixels import describe, is_rectangular, lattice_index, pixel_side, pixel_xy, uns_entries

log = logging.getLogger(__name__)


def _read(path: Path, sample, backed: bool = False) -> ad.AnnData:
    """Read and check an .h5ad; ``backed``: leave X and the layers on disk (obs, obsm and uns
    are read)."""
    if not path.exists():
        raise InputError("file does not exist", sample, path)
    try:
        a = ad.read_h5ad(path, backed="r") if backed else ad.read_h5ad(path)
    except Exception as exc:
        raise InputError(f"not a readable .h5ad file ({type(exc).__name__}: {exc})", sample,
                         path) from None
    if Key.obsm.spatial not in a.obsm:
        raise InputError("the AnnData has no obsm['spatial'] (spot/pixel coordinates)", sample, path)
    xy = np.asarray(a.obsm[Key.obsm.spatial], dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] < 2 or not np.all(np.isfinite(xy[:, :2])):
        raise InputError("obsm['spatial'] must be an (n, 2) array of finite coordinates", sample, path)
    a.obsm[Key.obsm.spatial] = xy[:, :2]
    if a.obs_names.has_duplicates:
        dup = a.obs_names[a.obs_names.duplicated()][0]
        raise InputError(f"duplicate observation name '{dup}'", sample, path)
    return a


def _scanpy_um_per_px(a: ad.AnnData) -> float | None:
    sp_uns = a.uns.get("spatial")
    if not isinstance(sp_uns, dict) or not sp_uns:
        return None
    lib = next(iter(sp_uns.values()))
    d = (lib or {}).get("scalefactors", {}).get("spot_diameter_fullres")
    # Space Ranger's spot_diameter_fullres spans a theoretical 65 µm spot
    return 65.0 / float(d) if d else None


def read_st_h5ad(path: str | Path, *, sample: str | None = None) -> ad.AnnData:
    """Read transcriptomics from ``.h5ad``.

    Coordinates must be µm. Exception, detected and logged: a scanpy/squidpy Visium AnnData
    whose ``obsm['spatial']`` is in full-resolution pixels with
    ``uns['spatial'][lib]['scalefactors']['spot_diameter_fullres']`` — converted to µm.
    Raw counts are taken from ``layers['counts']``, else ``raw``, else ``X`` if it is integer.
    """
    path = Path(path)
    a = _read(path, sample)
    meta = dict(a.uns.get(Key.uns.spatialfuse, {}) or {})
    um_px = None if meta.get("spatial_units") == "um" else _scanpy_um_per_px(a)
    if um_px is not None:
        a.obsm[Key.obsm.spatial] = a.obsm[Key.obsm.spatial] * um_px
        log.info("%s: obsm['spatial'] is in full-res pixels (scanpy layout); converted to um "
                 "with %.4f um/px", path.name, um_px)
    X = a.layers[Key.layers.counts] if Key.layers.counts in a.layers else (
        a.raw.X if a.raw is not None and a.raw.shape[0] == a.n_obs else a.X)
    Xd = X.data if sp.issparse(X) else np.asarray(X)
    if Xd.size and (np.any(~np.isfinite(Xd)) or Xd.min() < 0):
        raise InputError("expression values contain NaN or negatives", sample, path)
    is_counts = bool(Xd.size == 0 or np.allclose(Xd, np.round(Xd)))
    out = ad.AnnData(X=sp.csr_matrix(X, dtype=np.float32), obs=a.obs.copy(),
                     var=a.var.copy() if X.shape[1] == a.n_vars else a.raw.var.copy())
    out.obsm[Key.obsm.spatial] = a.obsm[Key.obsm.spatial]
    if is_counts:
        out.layers[Key.layers.counts] = out.X.copy()
    out.uns[Key.uns.spatialfuse] = {
        "modality": "rna", "source": str(path), "platform": meta.get("platform", "h5ad"),
        "spot_diameter_um": float(meta.get("spot_diameter_um", VISIUM_SPOT_DIAMETER_UM)),
        "spot_shape": meta.get("spot_shape", "disk"),
        "input_is_counts": is_counts,
    }
    if "in_tissue" not in out.obs:
        out.obs["in_tissue"] = 1
    log.info("read %s: %d spots x %d genes (%s)", path.name, out.n_obs, out.n_vars,
             "counts" if is_counts else "already normalised")
    return out


_MZ_RE = re.compile(r"(\d+(?:\.\d+)?)")


def _msi_pixel_size(a: ad.AnnData, given, name: str) -> np.ndarray:
    """(x, y) pixel size in µm: ``given`` (the samples sheet's: one number or an (x, y) pair),
    else ``uns['spatialfuse']`` (``pixel_size_xy_um``, else ``pixel_size_um``), else inferred
    from the pixel coordinates (:func:`pixel_steps`)."""
    if given is not None and not (isinstance(given, float) and np.isnan(given)):
        return pixel_xy(given)
    meta = dict(a.uns.get(Key.uns.spatialfuse, {}) or {})
    if meta.get("pixel_size_xy_um") is not None or meta.get("pixel_size_um") is not None:
        return pixel_xy(meta)
    px = pixel_steps(np.asarray(a.obsm[Key.obsm.spatial], float))
    log.info("%s: pixel size inferred from coordinates: %s", name, describe(px))
    return px


def pixel_steps(xy: np.ndarray) -> np.ndarray:
    """The (x, y) steps of a raster from its pixel coordinates alone: the median distance to
    the nearest pixel of the same row (x) and of the same column (y), so a raster whose rows are
    further apart than its pixels (a DESI line scan) keeps both steps. Coordinates that are no
    axis-aligned raster (rotated, or scattered), or steps within
    :data:`~spatialfuse.pixels.SQUARE_PIXEL_RTOL` of each other: square pixels of the median
    nearest-neighbour distance."""
    from scipy.spatial import cKDTree

    n = len(xy)
    if n < 2:
        return pixel_xy(float("nan"))
    d, idx = cKDTree(xy).query(xy, k=min(13, n))
    nn = float(np.median(d[:, 1]))
    D = xy[idx[:, 1:]] - xy[:, None, :]
    tol = 0.25 * nn
    steps = []
    for ax in (0, 1):
        along, across = np.abs(D[..., ax]), np.abs(D[..., 1 - ax])
        v = np.where((across < tol) & (along > tol), along, np.inf).min(1)
        v = v[np.isfinite(v)]
        steps.append(float(np.median(v)) if len(v) > n / 2 else None)
    if None in steps or not is_rectangular(steps) or min(steps) < 0.9 * nn:
        return pixel_xy(nn)
    return np.array(steps)


def msi_h5ad_pixel_size(path: str | Path, *, sample: str | None = None,
                        pixel_size_um=None) -> float:
    """The pixel size :func:`read_msi_h5ad` would give (µm; for rectangular pixels the side of
    the square of the same area), without reading the intensities (the file is opened backed:
    coordinates and metadata only)."""
    path = Path(path)
    a = _read(path, sample, backed=True)
    try:
        return pixel_side(_msi_pixel_size(a, pixel_size_um, path.name))
    finally:
        a.file.close()


def read_msi_h5ad(path: str | Path, *, sample: str | None = None,
                  pixel_size_um=None) -> ad.AnnData:
    """Read MSI from ``.h5ad``: pixels × m/z, ``obsm['spatial']`` in µm, m/z in ``var['mz']``
    (or parseable from the var names). Pixel size: argument (one number or an (x, y) pair),
    else ``uns['spatialfuse']``, else the median nearest-neighbour distance of the coordinates."""
    path = Path(path)
    a = _read(path, sample)
    if Key.var.mz not in a.var:
        mz = []
        for name in a.var_names:
            m = _MZ_RE.search(str(name))
            if m is None:
                raise InputError(f"cannot find the m/z of feature '{name}': give var['mz']",
                                 sample, path)
            mz.append(float(m.group(1)))
        a.var[Key.var.mz] = mz
    X = a.layers[Key.layers.intensity] if Key.layers.intensity in a.layers else a.X
    Xd = X.data if sp.issparse(X) else np.asarray(X)
    if Xd.size and not np.all(np.isfinite(Xd)):
        raise InputError("intensities contain NaN or infinite values", sample, path)
    if Xd.size and Xd.min() < 0:
        raise InputError("intensities contain negative values", sample, path)
    xy = a.obsm[Key.obsm.spatial]
    pxy = _msi_pixel_size(a, pixel_size_um, path.name)
    if not np.all(pxy > 0):
        raise InputError(f"pixel size must be positive, got {describe(pxy)}", sample, path)
    out = ad.AnnData(X=sp.csr_matrix(X, dtype=np.float32), obs=a.obs.copy(), var=a.var.copy())
    out.obsm[Key.obsm.spatial] = xy
    if Key.obs.x not in out.obs or Key.obs.y not in out.obs:
        ij = lattice_index(xy, pxy) + 1
        out.obs[Key.obs.x], out.obs[Key.obs.y] = ij[:, 0], ij[:, 1]
    out.obs[Key.obs.tic] = np.asarray(out.X.sum(1)).ravel()
    out.uns[Key.uns.spatialfuse] = {"modality": "msi", "source": str(path),
                                    **uns_entries(pxy),
                                    "imzml_layout": "h5ad", "spectrum_type": "centroid"}
    return out
