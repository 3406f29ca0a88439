"""Space Ranger and h5ad readers: real Visium subset, µm conversion, layouts, bad input."""

import json
import shutil
from pathlib import Path

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
    with pytest.raises(InputError, match=r"^sample 'S2', file '.*o/spatial': no spot positions: "
                                         r"expected spatial/tissue_positions\.parquet"):
        read_spaceranger(tmp_path / "o", sample="S2")


def test_duplicate_barcodes(tmp_path):
    shutil.copytree(VIS, tmp_path / "o")
    p = tmp_path / "o" / "spatial" / "tissue_positions_list.csv"
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines + [lines[0]]) + "\n")
    with pytest.raises(InputError, match=r"^sample 'S2', file '.*tissue_positions_list\.csv': "
                                         r"duplicate barcode '[ACGT]+-1' in spot positions$"):
        read_spaceranger(tmp_path / "o", sample="S2")


def test_h5ad_without_spatial(tmp_path):
    ad.AnnData(np.ones((3, 2), np.float32)).write_h5ad(tmp_path / "x.h5ad")
    with pytest.raises(InputError, match=r"^sample 'S3', file '.*x\.h5ad': the AnnData has no "
                                         r"obsm\['spatial'\]"):
        read_st_h5ad(tmp_path / "x.h5ad", sample="S3")


def test_h5ad_scanpy_pixels_converted(tmp_path):
    a = ad.AnnData(np.ones((3, 2), np.float32))
    a.obsm["spatial"] = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 200.0]])
    a.uns["spatial"] = {"lib": {"scalefactors": {"spot_diameter_fullres": 110.0}}}
    a.write_h5ad(tmp_path / "px.h5ad")
    b = read_st_h5ad(tmp_path / "px.h5ad", sample="m")
    np.testing.assert_allclose(b.obsm["spatial"][1], [100 * 65 / 110, 0.0])  # 65 µm / 110 px
    assert "counts" in b.layers


def _hd_outs(tmp_path, bin_sizes=(8, 16), n=12):
    from spatialfuse.io import write_visium_hd_bins

    rng = np.random.default_rng(3)
    genes = [f"G{i}" for i in range(30)] + ["MT-CO1", "MT-ND1"]
    for b in bin_sizes:
        rows, cols = np.divmod(np.arange(n * n), n)
        counts = rng.poisson(3.0, (n * n, len(genes)))
        write_visium_hd_bins(tmp_path / "outs", counts, rows, cols, genes, bin_um=b)
    return tmp_path / "outs"


@pytest.mark.parametrize("bin_um", [8, 16])
def test_visium_hd_bins(tmp_path, bin_um):
    from spatialfuse.ingest import load_st

    outs = _hd_outs(tmp_path)
    a = load_st(outs, "hd", visium_hd_bin_um=bin_um)
    meta = a.uns["spatialfuse"]
    assert meta["platform"] == "visium_hd" and meta["spot_shape"] == "square"
    assert meta["spot_diameter_um"] == bin_um  # the bin size is recorded, in µm
    assert meta["um_per_px_source"] == "microns_per_pixel"
    assert f"square_{bin_um:03d}um" in meta["source"]
    # bins are bin_um apart (within the rounding of full-res pixels to integers)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(a.obsm["spatial"]).query(a.obsm["spatial"], k=2)
    np.testing.assert_allclose(d[:, 1], bin_um, atol=0.5)
    r, c = a.obs["array_row"].to_numpy(), a.obs["array_col"].to_numpy()
    np.testing.assert_allclose(a.obsm["spatial"][:, 0], (c + 0.5) * bin_um, atol=0.3)
    np.testing.assert_allclose(a.obsm["spatial"][:, 1], (r + 0.5) * bin_um, atol=0.3)


def test_visium_hd_missing_bin_size(tmp_path):
    from spatialfuse.ingest import load_st

    outs = _hd_outs(tmp_path, bin_sizes=(16,))
    with pytest.raises(InputError, match=r"sample 'hd', file '.*binned_outputs': binned_outputs/ "
                                         r"has no square_008um folder .*found \['square_016um'\]"):
        load_st(outs, "hd", visium_hd_bin_um=8)


def test_st_qc_filters_and_hvg():
    from spatialfuse.st import preprocess_st

    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(40)] + ["MT-CO1", "MT-ND1"]
    X = rng.poisson(5.0, (60, len(genes))).astype(np.float32)
    X[:5] = 0
    X[:5, :2] = 1  # 5 spots: 2 counts, 2 genes -> below min_counts and min_genes
    X[5:9, -2:] = 500  # 4 spots: mostly mitochondrial
    X[:, 10] = 0
    X[9, 10] = 1  # gene 10 seen in a single spot -> dropped by min_spots_per_gene
    import scipy.sparse as sp

    a = ad.AnnData(sp.csr_matrix(X), var=pd.DataFrame(index=genes))
    a.layers["counts"] = a.X.copy()
    a.obs["in_tissue"] = 1
    a.obs.iloc[-3:, 0] = 0  # 3 spots outside the tissue
    out, qc = preprocess_st(a, min_counts=10, min_genes=5, max_pct_mt=30, min_spots_per_gene=3,
                            n_top_genes=10, sample="s")
    assert qc["spots_input"] == 60 and qc["spots_in_tissue"] == 57
    assert qc["spots_removed_low_counts"] == 5 and qc["spots_removed_low_genes"] == 5
    assert qc["spots_removed_high_mt"] == 4
    assert qc["spots_after_qc"] == out.n_obs == 57 - 9
    assert "G10" not in out.var_names and qc["genes_after_qc"] == len(genes) - 1
    assert out.var["highly_variable"].sum() == qc["highly_variable_genes"] == 10
    # counts kept raw, X log-normalised to target_sum
    np.testing.assert_allclose(np.expm1(out.X.toarray()).sum(1), 1e4, rtol=1e-3)
    np.testing.assert_array_equal(out.layers["counts"].toarray(), X[out.obs_names.astype(int)][
        :, [g != "G10" for g in genes]])


def test_paired_written_compressed_and_read_back_unchanged(tmp_path):
    """paired.h5mu / imputed.h5mu are gzip-compressed (the tissue image and NaN-padded layers
    made them 3–9× larger than need be) and read back bit for bit."""
    import h5py
    import scipy.sparse as sp

    from spatialfuse.io import read_paired, write_paired

    rng = np.random.default_rng(0)
    a = read_spaceranger(VIS, sample="v")  # real Visium: counts, spatial, tissue image
    rna = a.copy()
    rna.layers["imputed_x"] = np.where(rng.random(rna.shape) < 0.7, np.nan,
                                       rng.normal(size=rna.shape)).astype(np.float32)
    msi = ad.AnnData(sp.random(rna.n_obs, 7, density=0.5, format="csr", random_state=0,
                               dtype=np.float32), obs=pd.DataFrame(index=rna.obs_names))
    path = tmp_path / "p.h5mu"
    write_paired(path, rna, msi, uns={"sample": "v"})
    r2, m2, uns = read_paired(path)
    assert uns["sample"] == "v"
    np.testing.assert_array_equal(r2.X.toarray(), rna.X.toarray())
    np.testing.assert_array_equal(r2.layers["imputed_x"], rna.layers["imputed_x"])
    np.testing.assert_array_equal(m2.X.toarray(), msi.X.toarray())
    with h5py.File(path) as f:
        assert f["mod/rna/X/data"].compression == "gzip"
        assert f["mod/rna/layers/imputed_x"].compression == "gzip"
    plain = tmp_path / "plain.h5mu"
    write_paired(plain, rna, msi, compression=None)
    assert path.stat().st_size < 0.7 * plain.stat().st_size


def test_visium_hd_bins_pooled_into_whole_squares(tmp_path):
    """``pool_visium_hd``: k × k bins summed into one square on the absolute bin grid; squares
    the array's edge cuts are dropped and the capture area shrinks to the whole ones; each
    square records the fraction of its bins in tissue."""
    from spatialfuse.io import write_visium_hd_bins
    from spatialfuse.ingest import load_st
    from spatialfuse.st import pool_visium_hd

    rng = np.random.default_rng(4)
    rows, cols = np.divmod(np.arange(11 * 10), 10)  # rows 1-11, columns 2-11 (below)
    rows, cols = rows + 1, cols + 2
    tissue = (rows + cols) % 5 != 0
    counts = rng.poisson(2.0, (int(tissue.sum()), 6))
    write_visium_hd_bins(tmp_path / "outs", counts, rows, cols, [f"G{i}" for i in range(6)],
                         bin_um=16, in_tissue=tissue)
    bins = load_st(tmp_path / "outs", "hd", visium_hd_bin_um=16)
    assert bins.uns["spatialfuse"]["array_extent"] == [1, 11, 2, 11]
    sq = pool_visium_hd(bins, 50.0, sample="hd")  # round(50 / 16) = 3 bins a side
    meta = sq.uns["spatialfuse"]
    assert meta["spot_diameter_um"] == 48.0 and meta["pool_factor"] == 3
    # whole squares: rows 3-11 (squares 1-3; rows 1-2 belong to square 0, cut), columns 3-11
    # (squares 1-3; column 2 belongs to square 0, cut)
    r, c = bins.obs["array_row"].to_numpy(), bins.obs["array_col"].to_numpy()
    whole = (r >= 3) & (c >= 3)
    assert meta["tissue_bins_dropped_at_edge"] == int((~whole).sum())
    assert sq.n_obs == 9 and sq.obs_names[0] == "s_048um_00001_00001-1"
    np.testing.assert_allclose(meta["capture_box_um"], [48, 48, 192, 192], atol=0.5)
    for name, R, C in zip(sq.obs_names, sq.obs["array_row"], sq.obs["array_col"]):
        inside = whole & (r // 3 == R) & (c // 3 == C)
        np.testing.assert_array_equal(sq[name].X.toarray()[0], bins.X[inside].sum(0).A1)
        assert sq.obs.loc[name, "tissue_fraction"] == inside.sum() / 9
        # the centre of its 3 × 3 bins, bin (row, col) sitting at (col + ½, row + ½) × 16 µm
        np.testing.assert_allclose(sq[name].obsm["spatial"][0], [(3 * C + 1.5) * 16, (3 * R + 1.5) * 16],
                                   atol=0.3)
    np.testing.assert_array_equal(sq.layers["counts"].toarray(), sq.X.toarray())
    assert pool_visium_hd(bins, 20.0) is bins  # rounds to one bin: nothing to pool


def test_pooling_needs_visium_hd_bins():
    import anndata as ad

    from spatialfuse.st import pool_visium_hd

    a = ad.AnnData(np.ones((3, 2)), uns={"spatialfuse": {"platform": "visium", "source": "/x/outs"}})
    with pytest.raises(InputError, match=r"sample 's', file '/x/outs': ingest.st.visium_hd_pool_um "
                                         r"is set, but .* not Visium HD bins"):
        pool_visium_hd(a, 48, sample="s")


def test_truth_of_a_pooled_square_is_its_bins_majority():
    import pandas as pd

    from spatialfuse.st import truth_for_squares

    bins = pd.Series([1, 1, 2, 2, 2, 0, 3, 3],
                     index=["s_016um_00003_00003-1", "s_016um_00003_00004-1", "s_016um_00004_00003-1",
                            "s_016um_00005_00005-1", "s_016um_00002_00002-1", "s_016um_00006_00006-1",
                            "s_016um_00006_00007-1", "s_016um_00007_00006-1"])
    got = truth_for_squares(bins, ["s_048um_00001_00001-1", "s_048um_00002_00002-1",
                                   "s_016um_00002_00002-1", "s_048um_00000_00000-1",
                                   "s_048um_00005_00005-1", "s_032um_00001_00001-1"])
    # square (1, 1) of 48 µm holds bins 3-5: votes 1, 1, 2, 2, a tie, to the smaller label;
    # square (2, 2) holds bins 6-8: 0, 3, 3; a bin asked for itself keeps its value; square
    # (0, 0) holds bin (2, 2) alone
    assert got.iloc[:4].tolist() == [1, 3, 2, 2]
    # square (5, 5) holds no known bin; 32 µm squares hold bins 2-3: (2, 2), (3, 3): 2, 1 -> 1
    assert np.isnan(got.iloc[4]) and got.iloc[5] == 1


def test_many_unpooled_hd_bins_get_a_warning_that_points_to_pooling(tmp_path, small_demo_files,
                                                                    monkeypatch, caplog):
    import logging

    import spatialfuse.ingest as ingest

    outs = _hd_outs(tmp_path, bin_sizes=(16,))
    _, imzml, _ = small_demo_files
    monkeypatch.setattr(ingest, "HD_BINS_HINT", 100)  # the 12 × 12 bins of _hd_outs exceed it
    params = {"st": {"visium_hd_bin_um": 16, "min_counts": 1, "min_genes": 1,
                     "visium_hd_pool_um": None}}
    with caplog.at_level(logging.WARNING, logger="spatialfuse.ingest"):
        ingest.run_ingest(outs, imzml, params, sample="hd")
    assert "144 Visium HD bins of 16 µm, kept as bins (ingest.st.visium_hd_pool_um is null)" in caplog.text
    # a pixel that holds about one bin keeps the bins too, and says why
    caplog.clear()
    params["st"]["visium_hd_pool_um"] = "msi_pixel"
    with caplog.at_level(logging.WARNING, logger="spatialfuse.ingest"):
        ingest.run_ingest(outs, imzml, params, sample="hd", pixel_size_um=20.0)
    assert "kept as bins (the pooling side, 20 µm, holds about one bin)" in caplog.text
    caplog.clear()
    params["st"]["visium_hd_pool_um"] = 48
    with caplog.at_level(logging.WARNING, logger="spatialfuse.ingest"):
        out = ingest.run_ingest(outs, imzml, params, sample="hd")
    assert "visium_hd_pool_um" not in caplog.text
    assert out["st"].n_obs == 16 and out["qc"]["st_meta"]["pool_factor"] == 3


def test_hd_bins_are_pooled_to_the_msi_pixel_by_default(tmp_path, small_demo_files):
    """With no pooling setting, Visium HD bins are summed to each sample's MSI pixel (the small
    demo's 40 µm: 2 × 2 bins of 16 µm), and Visium spots are left as they are."""
    import spatialfuse.ingest as ingest

    assert ingest.ST_DEFAULTS["visium_hd_pool_um"] == "msi_pixel"
    outs = _hd_outs(tmp_path, bin_sizes=(16,))
    st_dir, imzml, _ = small_demo_files
    out = ingest.run_ingest(outs, imzml, {"st": {"visium_hd_bin_um": 16, "min_counts": 1,
                                                 "min_genes": 1}}, sample="hd")
    assert out["st"].n_obs == 36 and out["qc"]["st_meta"]["pool_factor"] == 2
    assert out["qc"]["st_meta"]["spot_diameter_um"] == 32.0
    spots = ingest.run_ingest(st_dir, imzml, {}, sample="s")
    assert "pool_factor" not in spots["qc"]["st_meta"]
    assert spots["qc"]["st_meta"]["platform"] == "visium"


def test_pooling_to_the_msi_pixel_follows_each_samples_pixel(tmp_path, small_demo_files):
    """``visium_hd_pool_um: msi_pixel`` pools each sample's bins to its own MSI pixel (the
    samples sheet's ``msi_pixel_size_um`` here), and leaves Visium spots as they are, where a
    number in µm is an error."""
    import spatialfuse.ingest as ingest

    outs = _hd_outs(tmp_path, bin_sizes=(16,))
    st_dir, imzml, _ = small_demo_files
    params = {"st": {"visium_hd_bin_um": 16, "min_counts": 1, "min_genes": 1,
                     "visium_hd_pool_um": "msi_pixel"}}
    got = {px: ingest.run_ingest(outs, imzml, params, sample="hd", pixel_size_um=px)
           for px in (50.0, 30.0, 20.0)}
    # 12 × 12 bins of 16 µm: 50 µm pixels -> 3 × 3 bins (48 µm squares), 30 µm -> 2 × 2, 20 µm -> 1
    assert [got[px]["st"].n_obs for px in (50.0, 30.0, 20.0)] == [16, 36, 144]
    assert got[50.0]["qc"]["st_meta"]["spot_diameter_um"] == 48
    assert "pool_factor" not in got[20.0]["qc"]["st_meta"]
    spots = ingest.run_ingest(st_dir, imzml, {"st": {"visium_hd_pool_um": "msi_pixel"}}, sample="s")
    plain = ingest.run_ingest(st_dir, imzml, {}, sample="s")
    assert spots["st"].obs_names.equals(plain["st"].obs_names)
    # no sheet value: the imzML's own pixel size (read from its head), as the MSI reading finds
    own = ingest.run_ingest(outs, imzml, params, sample="hd")
    px = own["qc"]["msi_meta"]["pixel_size_um"]
    given = ingest.run_ingest(outs, imzml, params, sample="hd", pixel_size_um=px)
    assert px == 40.0 and own["qc"]["st_meta"]["spot_diameter_um"] == 32  # 2 × 2 bins of 16 µm
    assert own["st"].obs_names.equals(given["st"].obs_names)


def test_ingest_reads_the_msi_after_the_st_qc(tmp_path, small_demo_files, monkeypatch):
    """The two raw readings are never held at once: the MSI is read after the ST's QC, also
    when the HD bins are pooled to the MSI pixel (that needs only the imzML's head)."""
    import spatialfuse.ingest as ingest

    outs = _hd_outs(tmp_path, bin_sizes=(16,))
    _, imzml, _ = small_demo_files
    calls = []
    for name in ("preprocess_st", "load_msi"):
        real = getattr(ingest, name)
        monkeypatch.setattr(ingest, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    params = {"st": {"visium_hd_bin_um": 16, "min_counts": 1, "min_genes": 1,
                     "visium_hd_pool_um": "msi_pixel"}}
    ingest.run_ingest(outs, imzml, params, sample="hd")
    assert calls == ["preprocess_st", "load_msi"]


def test_msi_pixel_size_without_reading_the_intensities(tmp_path, small_demo_files):
    """``ingest.msi_pixel_size`` agrees with the reading itself for imzML and .h5ad input (the
    sheet's value first), and a missing pixel size is an error that names the file."""
    import anndata as ad
    import scipy.sparse as sp

    from spatialfuse.errors import InputError
    from spatialfuse.ingest import load_msi, msi_pixel_size
    from spatialfuse.io import write_imzml

    _, imzml, _ = small_demo_files
    assert msi_pixel_size(imzml) == load_msi(imzml).uns["spatialfuse"]["pixel_size_um"]
    assert msi_pixel_size(imzml, pixel_size_um=7.5) == 7.5
    xy = np.array([[0, 0], [30, 0], [0, 30], [30, 30]], float)
    a = ad.AnnData(sp.csr_matrix(np.ones((4, 2), np.float32)))
    a.var_names = ["mz_100.0", "mz_200.0"]
    a.obsm["spatial"] = xy
    a.write_h5ad(tmp_path / "m.h5ad")
    assert msi_pixel_size(tmp_path / "m.h5ad") == load_msi(tmp_path / "m.h5ad").uns["spatialfuse"][
        "pixel_size_um"] == 30.0
    a.uns["spatialfuse"] = {"pixel_size_um": 25.0}
    a.write_h5ad(tmp_path / "u.h5ad")
    assert msi_pixel_size(tmp_path / "u.h5ad") == 25.0
    # rectangular pixels in the metadata: the lattice indices follow each axis's step
    a.obsm["spatial"] = xy * [1.0, 2.0]
    a.uns["spatialfuse"] = {"pixel_size_xy_um": [30.0, 60.0]}
    a.write_h5ad(tmp_path / "r.h5ad")
    r = load_msi(tmp_path / "r.h5ad")
    assert r.uns["spatialfuse"]["pixel_size_xy_um"] == [30.0, 60.0]
    assert r.obs[["x", "y"]].to_numpy().tolist() == [[1, 1], [2, 1], [1, 2], [2, 2]]
    assert msi_pixel_size(tmp_path / "r.h5ad") == pytest.approx(np.sqrt(30.0 * 60.0))
    assert msi_pixel_size(tmp_path / "r.h5ad", pixel_size_um=(30.0, 60.0)) == pytest.approx(
        np.sqrt(30.0 * 60.0))
    imz, _ = write_imzml(tmp_path / "n.imzML", np.array([(1, 1), (2, 1)]), np.array([100.0, 200.0]),
                         np.ones((2, 2), np.float32), mode="continuous")
    with pytest.raises(InputError, match=r"^sample 'S', file '.*n\.imzML': no pixel size"):
        msi_pixel_size(imz, "S")


def test_msi_pixel_steps_inferred_per_axis_from_coordinates_alone(tmp_path):
    """An .h5ad MSI with coordinates and no pixel size: each axis's step is the distance to the
    nearest pixel of the same row / column, so a raster whose rows lie further apart than its
    pixels keeps both steps (and its lattice indices), also with pixels missing; a square raster
    or a rotated one gives square pixels of the nearest-neighbour distance."""
    import anndata as ad
    import scipy.sparse as sp

    from spatialfuse.ingest import load_msi, msi_pixel_size
    from spatialfuse.io.h5ad import pixel_steps

    g = np.stack(np.meshgrid(np.arange(12.0), np.arange(9.0)), -1).reshape(-1, 2)
    np.testing.assert_allclose(pixel_steps(g * [25.0, 50.0]), [25.0, 50.0])
    np.testing.assert_allclose(pixel_steps(g * [60.0, 20.0]), [60.0, 20.0])
    np.testing.assert_allclose(pixel_steps(g * 30.0), [30.0, 30.0])
    holes = (g * [25.0, 50.0])[np.random.default_rng(0).random(len(g)) > 0.3]
    np.testing.assert_allclose(pixel_steps(holes), [25.0, 50.0])
    t = np.radians(30.0)
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    np.testing.assert_allclose(pixel_steps(g * 30.0 @ R.T), [30.0, 30.0])
    a = ad.AnnData(sp.csr_matrix(np.ones((len(g), 2), np.float32)))
    a.var_names = ["mz_100.0", "mz_200.0"]
    a.obsm["spatial"] = g * [25.0, 50.0] + [100.0, 300.0]
    a.write_h5ad(tmp_path / "r.h5ad")
    m = load_msi(tmp_path / "r.h5ad")
    assert m.uns["spatialfuse"]["pixel_size_xy_um"] == [25.0, 50.0]
    assert m.obs["y"].max() - m.obs["y"].min() == 8 and m.obs["x"].max() - m.obs["x"].min() == 11
    assert msi_pixel_size(tmp_path / "r.h5ad") == pytest.approx(np.sqrt(25.0 * 50.0))


def test_config_names_the_allowed_values_of_the_pooling():
    from spatialfuse.config import config_problems

    schema = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
    assert config_problems({"ingest": {"st": {"visium_hd_pool_um": "msi_pixel"}}}, schema) == []
    assert config_problems({"ingest": {"st": {"visium_hd_pool_um": "pixel"}}}, schema) == [
        "ingest.st.visium_hd_pool_um: 'pixel' is not allowed; give a number > 0 or 'msi_pixel' or null"]
