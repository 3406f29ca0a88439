"""A simulated sample as the two ingested sections (in memory, without writing real formats)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..constants import VISIUM_SPOT_DIAMETER_UM, Key
from ..pixels import uns_entries


def simulated_sections(sim: dict, pool_um: float | None = None) -> tuple[ad.AnnData, ad.AnnData]:
    """(st, msi) AnnData of :func:`~spatialfuse.simulate.simulate_sample`'s output, preprocessed
    as ingest would (ST spots under tissue in µm, MSI pixels in their own frame in µm). Faster
    than writing Space Ranger/imzML files and reading them back; for tests and benchmarks.
    ``pool_um``: Visium HD bins pooled into squares of about that side, as
    ``ingest.st.visium_hd_pool_um`` does."""
    from ..io.spaceranger import hd_array_extent
    from ..msi import preprocess_msi
    from .demo import msi_pixel_xy
    from ..st import pool_visium_hd, preprocess_st

    p = sim["params"]
    spots = sim["spots"]
    tis = spots[spots["in_tissue"] == 1]
    st = ad.AnnData(X=sp.csr_matrix(sim["counts"].astype(np.float32)),
                    obs=pd.DataFrame({"in_tissue": 1, Key.obs.array_row: tis["array_row"].to_numpy(),
                                      Key.obs.array_col: tis["array_col"].to_numpy()},
                                     index=tis.index.astype(str)),
                    var=pd.DataFrame(index=sim["genes"]))
    st.layers[Key.layers.counts] = st.X.copy()
    st.obsm[Key.obsm.spatial] = tis[["x_um", "y_um"]].to_numpy(float)
    all_xy = spots[["x_um", "y_um"]].to_numpy(float)
    hd = p.st_bin_um > 0
    size = float(p.st_bin_um) if hd else VISIUM_SPOT_DIAMETER_UM
    st.uns[Key.uns.spatialfuse] = {
        "spot_diameter_um": size, "spot_shape": "square" if hd else "disk",
        "platform": "visium_hd" if hd else "visium",
        "capture_box_um": [float(v) for v in np.r_[all_xy.min(0) - size / 2, all_xy.max(0) + size / 2]]}
    if hd:
        st.uns[Key.uns.spatialfuse]["array_extent"] = hd_array_extent(spots)
        if pool_um:
            st = pool_visium_hd(st, pool_um)
    st, _ = preprocess_st(st)
    px = sim["msi_pixels"]
    mz = np.asarray(sim["mz_true"])
    msi = ad.AnnData(X=sp.csr_matrix(sim["intensities"]),
                     obs=pd.DataFrame({"x": px["x"].to_numpy(), "y": px["y"].to_numpy()},
                                      index=[f"px_{x}_{y}" for x, y in zip(px["x"], px["y"])]),
                     var=pd.DataFrame({"mz": mz}, index=[f"mz_{m:.4f}" for m in mz]))
    msi.obs["tic"] = np.asarray(msi.X.sum(1)).ravel()
    pxy = msi_pixel_xy(p)
    msi.obsm[Key.obsm.spatial] = px[["x", "y"]].to_numpy(float) * pxy
    msi.uns[Key.uns.spatialfuse] = uns_entries(pxy)
    msi, _ = preprocess_msi(msi)
    return st, msi
