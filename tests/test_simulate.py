"""The demo simulator: known structure, determinism, real formats."""

import numpy as np

from spatialfuse.simulate import DemoParams, simulate_sample


def test_deterministic():
    a = simulate_sample(DemoParams(seed=3, capture_size_um=1200, n_genes=60, n_metabolites=22, n_links=3))
    b = simulate_sample(DemoParams(seed=3, capture_size_um=1200, n_genes=60, n_metabolites=22, n_links=3))
    np.testing.assert_array_equal(a["counts"], b["counts"])
    np.testing.assert_array_equal(a["intensities"], b["intensities"])


def test_structure(small_sim):
    s = small_sim
    dom = s["spots"].query("in_tissue == 1")["domain"]
    assert dom.nunique() >= 4  # at least four domains actually present
    px = s["msi_pixels"]
    assert (px["tissue_fraction"] == 0).mean() > 0.2  # MSI raster covers off-tissue area
    # hexagonal Visium grid: nearest neighbour 100 µm
    from scipy.spatial import cKDTree

    xy = s["spots"][["x_um", "y_um"]].to_numpy()
    d, _ = cKDTree(xy).query(xy, k=2)
    np.testing.assert_allclose(d[:, 1], 100.0, atol=1e-6)
    # counts are integers, intensities non-negative, zero-inflated on tissue
    assert s["counts"].dtype.kind == "i"
    on = px["tissue_fraction"].to_numpy() > 0.9
    met = s["intensities"][on][:, : len(s["metabolites"])]
    assert met.min() >= 0 and (met == 0).mean() > 0.02


def test_links_are_real_associations(small_sim):
    """A true link's gene and metabolite co-vary beyond what domains explain."""
    s = small_sim
    link = s["links"].iloc[0]
    g = s["genes"].index(link["gene"])
    spots = s["spots"].query("in_tissue == 1")
    counts = s["counts"][:, g]
    # metabolite intensity at the nearest MSI pixel (true ST positions)
    from scipy.spatial import cKDTree

    px = s["msi_pixels"]
    tree = cKDTree(px[["st_x_um", "st_y_um"]].to_numpy())
    _, j = tree.query(spots[["x_um", "y_um"]].to_numpy())
    m = int(np.nonzero(s["metabolites"]["name"].to_numpy() == link["metabolite"])[0][0])
    met = np.log1p(s["intensities"][j, m])
    r = np.corrcoef(np.log1p(counts), met)[0, 1]
    assert np.sign(r) == np.sign(link["sign"]) and abs(r) > 0.15


def test_written_files_are_byte_identical(tmp_path, small_sim, small_demo_files):
    """Writing the same simulated sample again gives the same bytes in every file (the imzML
    UUID comes from the content, the gzip header has no timestamp), so a seed pins the inputs."""
    import hashlib
    import time

    from spatialfuse.simulate import write_demo_sample

    time.sleep(1.1)  # a timestamp in any header would now differ
    st, imzml, truth = small_demo_files
    d = tmp_path / "again"
    write_demo_sample(small_sim, d / "st", d / "msi" / "s.imzML", d / "truth")
    first = {p.relative_to(st.parent): p for p in st.parent.rglob("*") if p.is_file()}
    again = {p.relative_to(d): p for p in d.rglob("*") if p.is_file()}
    assert sorted(first) == sorted(again)
    for rel, p in first.items():
        assert hashlib.sha1(p.read_bytes()).digest() == hashlib.sha1(again[rel].read_bytes()).digest(), rel


def test_shared_logmean_is_what_the_other_modality_carries(small_sim):
    """The truth's shared log-mean (the cross-modal oracle): domain effects and link fields,
    no decoy field, no noise; linked pairs share one field with the link's sign."""
    s = small_sim
    sg, sm = s["shared_logmean"]["genes"], s["shared_logmean"]["metabolites"]
    assert list(sg.index) == s["barcodes_in_tissue"] and list(sg.columns) == s["genes"]
    assert sm.shape == (len(sg), len(s["metabolites"]))
    dom = s["spots"].loc[sg.index, "domain"].to_numpy()
    for g in s["decoys"]["genes"]:  # a decoy's own field is unknown to the other modality
        assert np.ptp(sg[g].to_numpy()) < 1e-9
    for d, names in s["markers"]["genes"].items():  # a marker: one level per domain
        for g in names[:3]:
            v = sg[g].to_numpy()
            assert np.ptp(v[dom == int(d)]) < 1e-9 and v[dom == int(d)].mean() > v[dom != int(d)].mean()
    for link in s["links"].itertuples():
        r = np.corrcoef(sg[link.gene], sm[link.metabolite])[0, 1]
        assert np.sign(r) == np.sign(link.sign) and abs(r) > 0.99
    # the full noise-free log-mean adds only the decoy metabolites' own fields
    full = s["full_logmean_metabolites"]
    assert full.shape == sm.shape and list(full.columns) == list(sm.columns)
    decoy = full.columns.isin(s["decoys"]["metabolites"])
    assert decoy.any()
    np.testing.assert_allclose(full.loc[:, ~decoy], sm.loc[:, ~decoy])
    assert (np.ptp((full - sm).loc[:, decoy].to_numpy(), axis=0) > 0.1).all()


def test_visium_hd_section_keeps_the_visium_samples_tissue_msi_and_transform():
    """``st_bin_um``: square bins instead of spots, over the same capture area; everything the
    registration is scored on (MSI pixels, their true positions, the transform) is the Visium
    sample's of the same seed, and a bin's depth is a spot's scaled by area."""
    from spatialfuse.simulate import simulated_sections

    kw = dict(seed=5, capture_size_um=1200, n_genes=60, n_metabolites=22, n_links=3)
    vis = simulate_sample(DemoParams(**kw))
    hd = simulate_sample(DemoParams(st_bin_um=16.0, **kw))
    np.testing.assert_array_equal(hd["intensities"], vis["intensities"])
    np.testing.assert_array_equal(hd["msi_pixels"].to_numpy(), vis["msi_pixels"].to_numpy())
    assert hd["transform"] == vis["transform"]
    bins = hd["spots"]
    xy = bins[["x_um", "y_um"]].to_numpy()
    assert set(np.unique(np.diff(np.unique(xy[:, 0])))) == {16.0}
    assert len(bins) == len(np.unique(xy[:, 0])) * len(np.unique(xy[:, 1]))  # a full rectangle
    # the capture area is the Visium grid's (spot centres ± 27.5 µm), tiled to within a bin
    spots = vis["spots"][["x_um", "y_um"]].to_numpy()
    lo, hi = spots.min(0) - 27.5, spots.max(0) + 27.5
    assert (xy - 8 >= lo).all() and (xy + 8 <= hi).all()
    assert (xy.min(0) - 8 - lo < 16).all() and (hi - xy.max(0) - 8 < 16).all()
    assert bins.index[0] == "s_016um_00005_00005-1"  # bin (row, col) at (col + ½, row + ½) × 16
    tis = bins["in_tissue"].to_numpy(bool)
    assert hd["counts"].shape == (tis.sum(), 60)
    assert len(hd["shared_logmean"]["genes"]) == tis.sum()
    # tissue area agrees between the platforms (bins 256 µm², a spot's lattice cell 8,660 µm²)
    vis_area = vis["spots"]["in_tissue"].sum() * 100.0 * 100.0 * np.sqrt(3) / 2
    assert abs(tis.sum() * 256.0 / vis_area - 1) < 0.1
    ratio = hd["counts"].sum(1).mean() / vis["counts"].sum(1).mean()
    assert 0.7 < ratio / (256.0 / (np.pi * 27.5**2)) < 1.3
    st, _ = simulated_sections(hd)
    meta = st.uns["spatialfuse"]
    assert meta["platform"] == "visium_hd" and meta["spot_shape"] == "square"
    assert meta["spot_diameter_um"] == 16.0
    np.testing.assert_allclose(meta["capture_box_um"], np.r_[xy.min(0) - 8, xy.max(0) + 8])
