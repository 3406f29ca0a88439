"""Space Ranger and h5ad readers: real Visium subset, µm conversion, layouts, bad input."""

import json
import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from conftest import DATA
from spatialfuse.errors import InputError
from spatialfuse.io import read_spaceranger, read_st_h5ad

VIS = DATA / "visium_human"


def test_real_visium_in_micrometres():
    a = read_spaceranger(VIS, sample="v")
    assert a.shape == (100, 100)
    pos = pd.read_csv(VIS / "spatial" / "tissue_positions_list.csv", header=None, index_col=0)
    sf = json.loads((VIS / "spatial" / "scalefactors_json.json").read_text())
    um_per_px = a.uns["spatialfuse"]["um_per_fullres_px"]
    assert a.uns["spatialfuse"]["um_per_px_source"] == "visium_lattice"
    # Space Ranger's spot_diameter_fullres spans 65 µm (not the 55 µm capture spot)
    assert um_per_px * sf["spot_diameter_fullres"] == pytest.approx(65.0, rel=0.01)
    bc = a.obs_names[0]
    np.testing.assert_allclose(a.obsm["spatial"][0], pos.loc[bc, [5, 4]].to_numpy() * um_per_px)
    # neighbouring Visium spots are 100 µm apart
    from scipy.spatial import cKDTree

    d, _ = cKDTree(a.obsm["spatial"]).query(a.obsm["spatial"], k=2)
    assert 95 < np.min(d[:, 1]) < 105
    assert a.layers["counts"].sum() == pytest.approx(932)


@pytest.mark.parametrize("layout", ["csv", "list", "parquet"])
def test_position_layouts_roundtrip(tmp_path, small_sim, layout):
    from spatialfuse.io import write_spaceranger

    s = small_sim
    write_spaceranger(tmp_path / "o", s["counts"], s["barcodes_in_tissue"], s["genes"], s["spots"],
                      positions_layout=layout)
    a = read_spaceranger(tmp_path / "o", sample="x")
    truth = s["spots"].loc[a.obs_names, ["x_um", "y_um"]].to_numpy()
    assert np.abs(a.obsm["spatial"] - truth).max() < 0.65  # within one full-res pixel
    assert a.layers["counts"].sum() == s["counts"].sum()


def test_missing_scalefactors(tmp_path):
    shutil.copytree(VIS, tmp_path / "o")
    (tmp_path / "o" / "spatial" / "scalefactors_json.json").unlink()
    with pytest.raises(InputError, match=r"sample 'S2'.*scalefactors_json\.json"):
        read_spaceranger(tmp_path / "o", sample="S2")


def test_missing_positions(tmp_path):
    shutil.copytree(VIS, tmp_path / "o")
    (tmp_path / "o" / "spatial" / "tissue_positions_list.csv").unlink()
    with pytest.raises(InputError, match="no spot positions"):
        read_spaceranger(tmp_path / "o", sample="S2")


def test_duplicate_barcodes(tmp_path):
    shutil.copytree(VIS, tmp_path / "o")
    p = tmp_path / "o" / "spatial" / "tissue_positions_list.csv"
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines + [lines[0]]) + "\n")
    with pytest.raises(InputError, match="duplicate barcode"):
        read_spaceranger(tmp_path / "o", sample="S2")


def test_h5ad_without_spatial(tmp_path):
    ad.AnnData(np.ones((3, 2), np.float32)).write_h5ad(tmp_path / "x.h5ad")
    with pytest.raises(InputError, match=r"x\.h5ad.*obsm\['spatial'\]"):
        read_st_h5ad(tmp_path / "x.h5ad", sample="S3")


def test_h5ad_scanpy_pixels_converted(tmp_path):
    a = ad.AnnData(np.ones((3, 2), np.float32))
    a.obsm["spatial"] = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 200.0]])
    a.uns["spatial"] = {"lib": {"scalefactors": {"spot_diameter_fullres": 110.0}}}
    a.write_h5ad(tmp_path / "px.h5ad")
    b = read_st_h5ad(tmp_path / "px.h5ad", sample="m")
    np.testing.assert_allclose(b.obsm["spatial"][1], [100 * 65 / 110, 0.0])  # 65 µm / 110 px
    assert "counts" in b.layers
