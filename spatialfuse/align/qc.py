"""Registration QC in micrometres: error against known truth, landmark error, overlap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .transform import Transform


def truth_error(transform: Transform, truth_dir: str | Path, msi_obs: pd.DataFrame,
                pixel_size_um: float, min_tissue_fraction: float = 0.5) -> dict | None:
    """Target registration error against a simulator/benchmark truth folder.

    ``truth_dir/msi_pixels.tsv.gz`` gives, per imzML pixel (x, y), its true ST position; the
    error of a pixel is |T(pixel) − truth| in µm, over pixels that are mostly tissue.
    """
    f = Path(truth_dir) / "msi_pixels.tsv.gz"
    if not f.exists():
        return None
    t = pd.read_csv(f, sep="\t")
    t = t[t["tissue_fraction"] >= min_tissue_fraction]
    key = pd.MultiIndex.from_arrays([msi_obs["x"].to_numpy(), msi_obs["y"].to_numpy()])
    pos = pd.Series(np.arange(len(key)), index=key)
    tk = pd.MultiIndex.from_arrays([t["x"].to_numpy(), t["y"].to_numpy()])
    ok = tk.isin(key)
    t = t[ok]
    idx = pos.loc[tk[ok]].to_numpy()
    native = np.stack([msi_obs["x"].to_numpy()[idx], msi_obs["y"].to_numpy()[idx]], 1) * pixel_size_um
    err = np.linalg.norm(transform(native) - t[["st_x_um", "st_y_um"]].to_numpy(), axis=1)
    return {
        "truth_error_um_median": float(np.median(err)),
        "truth_error_um_p90": float(np.percentile(err, 90)),
        "truth_error_um_mean": float(err.mean()),
        "truth_error_pixels_median": float(np.median(err) / pixel_size_um),
        "truth_n_pixels": int(len(err)),
    }
