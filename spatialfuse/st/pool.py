"""Pool Visium HD bins into larger squares before anything else reads them.

A whole Visium HD capture area holds ~660,000 bins of 8 µm (~165,000 of 16 µm). An MSI raster of
10–50 µm pixels cannot tell bins finer than its pixel apart, yet every later stage pays for each
bin (the impute stage grows about as bins^1.2, see the README). ``ingest.st.visium_hd_pool_um``
sums the counts of k × k neighbouring bins into one square of k × bin µm, the way Space Ranger
itself makes its 16 µm bins from 2 µm ones.

The squares lie on the absolute bin grid (square i holds bins i·k … i·k + k − 1, as Space Ranger's
16 µm bins hold its 2 µm ones), so a pooled square is the same bins whatever the tissue, and its
barcode names them. Squares that would reach past the array's first or last row or column are
incomplete; they are dropped (a strip of fewer than k bins along the edges of the capture area),
and the capture area shrinks to the whole squares, so the registration does not read that strip
as "no tissue". Each square records the fraction of its bins that Space Ranger called tissue
(``obs['tissue_fraction']``): the registration reads it as the square's tissue value, so a square
with one tissue bin of nine does not draw the outline half a square outwards.
"""

from __future__ import annotations

import logging
import re

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..constants import Key
from ..errors import InputError
from ..io.spaceranger import visium_hd_barcodes

log = logging.getLogger(__name__)


def pool_visium_hd(adata: ad.AnnData, pool_um: float, *, sample: str | None = None) -> ad.AnnData:
    """Sum Visium HD bins into squares of k × k bins, k = round(``pool_um`` / bin side) ≥ 1.

    ``adata``: bins as :func:`~spatialfuse.io.read_spaceranger` returns them (raw counts in
    ``X``, ``obs`` array_row/array_col, ``uns['spatialfuse']`` with the bin side and the array's
    extent). Returns squares × genes in the same layout: barcodes ``s_XXXum_RRRRR_CCCCC-1`` of
    the pooled size and grid, centres in µm, ``obs['tissue_fraction']``, and in ``uns`` the
    pooled side, ``pooled_from_um``, ``pool_factor`` and the whole squares' capture area.
    """
    meta = dict(adata.uns.get(Key.uns.spatialfuse, {}))
    source = meta.get("source")
    if meta.get("platform") != "visium_hd":
        raise InputError("ingest.st.visium_hd_pool_um is set, but the transcriptomics input is "
                         f"not Visium HD bins (platform {meta.get('platform')!r}); remove the "
                         "setting for Visium spots or AnnData input (msi_pixel pools only Visium "
                         "HD samples)", sample, source)
    bin_um = float(meta["spot_diameter_um"])
    k = max(1, int(round(float(pool_um) / bin_um)))
    if k == 1:
        log.info("Visium HD: %g µm pooling of %g µm bins leaves them as they are", pool_um, bin_um)
        return adata
    extent = meta.get("array_extent")
    if extent is None:
        raise InputError("cannot pool Visium HD bins: the array's extent "
                         "(uns['spatialfuse']['array_extent']) is not recorded; give the Space "
                         "Ranger folder itself, whose positions list every bin", sample, source)
    r0, r1, c0, c1 = (int(v) for v in extent)
    rows = adata.obs[Key.obs.array_row].to_numpy(int)
    cols = adata.obs[Key.obs.array_col].to_numpy(int)
    # squares on the absolute bin grid (square i holds bins i·k … i·k + k − 1, as Space Ranger's
    # own 16 µm bins hold 2 µm ones), the first and last whole ones inside the array
    lo_r, hi_r, lo_c, hi_c = -(-r0 // k), (r1 + 1) // k - 1, -(-c0 // k), (c1 + 1) // k - 1
    n_r, n_c = hi_r - lo_r + 1, hi_c - lo_c + 1
    if n_r < 1 or n_c < 1:
        raise InputError(f"cannot pool Visium HD bins into {k * bin_um:g} µm squares: the array "
                         f"has only {r1 - r0 + 1} × {c1 - c0 + 1} bins", sample, source)
    R, C = rows // k, cols // k
    whole = (R >= lo_r) & (R <= hi_r) & (C >= lo_c) & (C <= hi_c)
    tissue = (adata.obs[Key.obs.in_tissue].to_numpy(int) > 0 if Key.obs.in_tissue in adata.obs
              else np.ones(adata.n_obs, bool))
    keep = whole & tissue
    if not keep.any():
        raise InputError(f"no tissue bin lies in a whole {k * bin_um:g} µm square", sample, source)
    cell = (R[keep] - lo_r) * n_c + (C[keep] - lo_c)
    ids, inv = np.unique(cell, return_inverse=True)
    S = sp.csr_matrix((np.ones(inv.size, np.float32), (inv, np.nonzero(keep)[0])),
                      shape=(ids.size, adata.n_obs))
    X = adata.layers[Key.layers.counts] if Key.layers.counts in adata.layers else adata.X
    X = sp.csr_matrix(X, dtype=np.float32)
    counts = (S @ X).tocsr()
    pr, pc = ids // n_c + lo_r, ids % n_c + lo_c
    # bin centres are an exact grid in (array_col, array_row): fit it once, place each square
    # at the centre of its k × k bins, and the capture area at the whole squares' outer corners
    G = np.c_[cols, rows, np.ones(adata.n_obs)]
    coef, *_ = np.linalg.lstsq(G, np.asarray(adata.obsm[Key.obsm.spatial], float), rcond=None)
    centre_rc = np.c_[pc * k + (k - 1) / 2, pr * k + (k - 1) / 2, np.ones(ids.size)]
    x0, x1, y0, y1 = lo_c * k - 0.5, (hi_c + 1) * k - 0.5, lo_r * k - 0.5, (hi_r + 1) * k - 0.5
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]])
    cxy = corners @ coef
    side = k * bin_um
    out = ad.AnnData(X=counts, obs=pd.DataFrame(index=visium_hd_barcodes(int(round(side)), pr, pc)),
                     var=adata.var.copy())
    out.obs[Key.obs.in_tissue] = 1
    out.obs[Key.obs.array_row] = pr.astype(int)
    out.obs[Key.obs.array_col] = pc.astype(int)
    out.obs[Key.obs.tissue_fraction] = np.bincount(inv, minlength=ids.size) / float(k * k)
    out.obsm[Key.obsm.spatial] = centre_rc @ coef
    out.layers[Key.layers.counts] = counts.copy()
    dropped = int((tissue & ~whole).sum())
    meta.update(spot_diameter_um=side, pooled_from_um=bin_um, pool_factor=k,
                capture_box_um=[float(v) for v in np.r_[cxy.min(0), cxy.max(0)]],
                array_extent=[lo_r, hi_r, lo_c, hi_c], tissue_bins_dropped_at_edge=dropped)
    out.uns[Key.uns.spatialfuse] = meta
    if Key.uns.spatial in adata.uns:  # images: the scale factors are per µm and stay; the spot size follows
        spatial = {lib: {**v, "scalefactors": {**v.get("scalefactors", {}), "spot_diameter_fullres": side}}
                   for lib, v in adata.uns[Key.uns.spatial].items()}
        out.uns[Key.uns.spatial] = spatial
    log.info("Visium HD: pooled %d tissue bins of %g µm into %d squares of %g µm (%d tissue bins in "
             "incomplete squares at the array's edge dropped)", int(tissue.sum()), bin_um,
             out.n_obs, side, dropped)
    return out


_HD_BARCODE = r"^s_(\d+)um_(\d+)_(\d+)-1$"


def hd_barcode_side(barcode: str) -> int | None:
    """The side in µm of a Visium HD bin or pooled square from its barcode (None for others)."""
    m = re.match(_HD_BARCODE, str(barcode))
    return int(m.group(1)) if m else None


def square_barcodes(bin_barcodes, side_um: int) -> pd.Series:
    """The barcode of the ``side_um`` square that holds each Visium HD bin (indexed by the bin
    barcodes; NaN where a barcode is no HD bin or ``side_um`` is no multiple of its side)."""
    idx = pd.Index(bin_barcodes)
    parts = idx.to_series().str.extract(_HD_BARCODE).dropna().astype(int)
    parts = parts[(parts[0] > 0) & (int(side_um) % parts[0] == 0)]
    k = int(side_um) // parts[0]
    out = pd.Series(np.nan, index=idx, dtype=object)
    out.loc[parts.index] = visium_hd_barcodes(int(side_um), parts[1] // k, parts[2] // k)
    return out


def truth_for_squares(truth: pd.Series, barcodes) -> pd.Series:
    """A per-bin truth (e.g. the simulator's domain per Visium HD bin) for ``barcodes``.

    Barcodes found in ``truth`` keep their value. Pooled squares (``s_XXXum_RRRRR_CCCCC-1`` of a
    side k times the truth's bins) take the most common value of their bins, ties to the
    smallest. Anything else is NaN.
    """
    barcodes = pd.Index(barcodes)
    out = truth.reindex(barcodes)
    missing = barcodes.difference(truth.index)
    sides = {hd_barcode_side(b) for b in missing} - {None}
    for side in sorted(sides):
        sq = square_barcodes(truth.index, side).dropna()
        if sq.empty:
            continue
        votes = pd.DataFrame({"sq": sq.to_numpy(), "v": truth.loc[sq.index].to_numpy()})
        mode = votes.groupby("sq")["v"].agg(lambda v: v.value_counts().sort_index(kind="stable")
                                            .idxmax())
        take = missing[missing.isin(mode.index)]
        out.loc[take] = mode.loc[take].to_numpy()
    return out
