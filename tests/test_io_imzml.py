"""imzML reading/writing: real reference files, round trips, and bad input."""

import re
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA
from spatialfuse.errors import InputError
from spatialfuse.io import read_imzml, write_imzml


def test_real_continuous_and_processed_agree():
    c = read_imzml(DATA / "imzml" / "Example_Continuous.imzML", sample="ref")
    p = read_imzml(DATA / "imzml" / "Example_Processed.imzML", sample="ref")
    assert c.n_obs == p.n_obs == 9
    assert c.uns["spatialfuse"]["pixel_size_um"] == 100.0
    # TIC of the first pixels as documented in the data's SOURCE.md
    np.testing.assert_allclose(c.obs["tic"].to_numpy()[:3], [121.9, 182.3, 161.8], rtol=1e-3)
    np.testing.assert_allclose(c.obs["tic"].to_numpy(), p.obs["tic"].to_numpy(), rtol=1e-5)
    # coordinates: 1-based index x pixel size, in µm
    assert set(c.obs["x"]) == {1, 2, 3}
    np.testing.assert_allclose(c.obsm["spatial"].min(0), [100.0, 100.0])
    assert c.uns["spatialfuse"]["spectrum_type"] == "profile"
    assert p.uns["spatialfuse"]["imzml_layout"] == "processed"
    assert 300 < c.n_vars < 8399  # profile spectra are peak-picked, not one feature per sample
    # the two files hold the same spectra: both layouts give the same peaks and values
    np.testing.assert_allclose(c.var["mz"].to_numpy(), p.var["mz"].to_numpy())
    np.testing.assert_allclose(c.X.toarray(), p.X.toarray(), rtol=1e-5)
    # peak integrals account for most of the ion current (profile baseline is near zero)
    assert np.all(np.asarray(c.X.sum(1)).ravel() / c.obs["tic"].to_numpy() > 0.5)


@pytest.mark.parametrize("mode", ["continuous", "processed"])
def test_roundtrip(tmp_path, mode):
    rng = np.random.default_rng(0)
    coords = np.array([(x, y) for y in range(1, 4) for x in range(1, 5)])
    axis = np.array([100.0, 200.0, 300.5, 450.25])
    inten = rng.uniform(1, 10, (len(coords), axis.size)).astype(np.float32)
    if mode == "continuous":
        write_imzml(tmp_path / "a.imzML", coords, axis, inten, mode=mode, pixel_size_um=25)
    else:
        write_imzml(tmp_path / "a.imzML", coords, [axis] * len(coords), list(inten), mode=mode,
                    pixel_size_um=25)
    a = read_imzml(tmp_path / "a.imzML", sample="rt")
    np.testing.assert_allclose(a.var["mz"].to_numpy(), axis, rtol=1e-7)
    np.testing.assert_allclose(a.X.toarray(), inten, rtol=1e-6)
    np.testing.assert_allclose(a.obsm["spatial"], coords * 25.0)


def test_processed_binning_merges_ppm_jitter(tmp_path):
    rng = np.random.default_rng(1)
    coords = np.array([(x, 1) for x in range(1, 51)])
    true = np.array([150.0, 300.0, 600.0])
    mzs = [true * (1 + rng.normal(0, 2e-6, 3)) for _ in coords]
    ints = [np.ones(3, np.float32) * (i + 1) for i in range(len(coords))]
    write_imzml(tmp_path / "j.imzML", coords, mzs, ints, mode="processed", pixel_size_um=10)
    a = read_imzml(tmp_path / "j.imzML", mz_tolerance_ppm=10)
    assert a.n_vars == 3
    np.testing.assert_allclose(a.var["mz"].to_numpy(), true, rtol=5e-6)


def _pair(tmp_path, **kw):
    coords = np.array([(1, 1), (2, 1)])
    axis = np.array([100.0, 200.0])
    return write_imzml(tmp_path / "b.imzML", coords, axis, np.ones((2, 2), np.float32),
                       mode="continuous", **kw)


def test_missing_ibd(tmp_path):
    imz, ibd = _pair(tmp_path, pixel_size_um=10)
    ibd.unlink()
    with pytest.raises(InputError, match=r"sample 'S1'.*b\.imzML.*\.ibd.*missing"):
        read_imzml(imz, sample="S1")


def test_truncated_ibd(tmp_path):
    imz, ibd = _pair(tmp_path, pixel_size_um=10)
    data = ibd.read_bytes()
    ibd.write_bytes(data[:-6])
    with pytest.raises(InputError, match=r"^sample 'S1', file '.*b\.ibd': the \.ibd file is "
                                         r"truncated: the imzML needs \d+ bytes, the file has "
                                         r"\d+$"):
        read_imzml(imz, sample="S1")


def test_uuid_mismatch(tmp_path):
    imz, ibd = _pair(tmp_path, pixel_size_um=10)
    data = bytearray(ibd.read_bytes())
    data[0] ^= 0xFF
    ibd.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"^sample 'S1', file '.*b\.ibd': the \.ibd UUID \(\w+\) "
                                         r"does not match the imzML's \(\w+\)"):
        read_imzml(imz, sample="S1")


def test_no_pixel_size(tmp_path):
    imz, _ = _pair(tmp_path)
    with pytest.raises(InputError, match=r"^sample 'S1', file '.*b\.imzML': no pixel size: the "
                                         r"imzML has no 'pixel size x' and the samples sheet gives "
                                         r"no msi_pixel_size_um$"):
        read_imzml(imz, sample="S1")
    a = read_imzml(imz, sample="S1", pixel_size_um=12.5)
    np.testing.assert_allclose(a.obsm["spatial"][1], [25.0, 12.5])


def test_pixel_size_from_the_xml_head_alone(tmp_path):
    """``imzml_pixel_sizes`` (ingest pools Visium HD bins to the pixel before reading the
    spectra) gives the pixel size that reading the whole file gives, or None where the file has
    none."""
    from spatialfuse.io.imzml import imzml_pixel_sizes

    for f in ("Example_Continuous.imzML", "Example_Processed.imzML"):
        assert imzml_pixel_sizes(DATA / "imzml" / f) == (100.0, 100.0)
    imz, _ = _pair(tmp_path, pixel_size_um=12.5)
    assert imzml_pixel_sizes(imz) == (12.5, 12.5)
    assert read_imzml(imz).uns["spatialfuse"]["pixel_size_um"] == 12.5
    (tmp_path / "none").mkdir()
    bare, _ = _pair(tmp_path / "none")
    assert imzml_pixel_sizes(bare) == (None, None)
    # the head is all it reads: a file cut off in its spectrum list still gives its pixel size
    text = imz.read_text()
    cut = tmp_path / "cut.imzML"
    cut.write_text(text[:text.index("<spectrumList") + 200])
    assert imzml_pixel_sizes(cut) == (12.5, 12.5)
    bad = tmp_path / "bad.imzML"
    bad.write_text("<mzML><scanSettingsList><cvParam")
    with pytest.raises(InputError, match=r"^sample 'S1', file '.*bad\.imzML': not a readable imzML"):
        imzml_pixel_sizes(bad, sample="S1")


def _with_pixel_size_y(imz: Path, y: float) -> Path:
    """The same file with another ``pixel size y`` in its XML (the .ibd needs no change)."""
    text = imz.read_text()
    old = re.search(r'accession="IMS:1000047" name="pixel size y" value="[^"]*"', text).group(0)
    imz.write_text(text.replace(old, old.rsplit("value=", 1)[0] + f'value="{y}"'))
    return imz


def test_rectangular_pixels_are_read_per_axis(tmp_path, caplog):
    """A raster whose pixels are not square (pixel size x != y, as DESI line scans often give)
    is read with each axis at its own step: coordinates, the stated pair and the side of the
    square of the same area. A size in the samples sheet overrides the file (one number: square,
    with a warning that names the file's sizes; ``x×y``: a pair); a rounding difference is not
    a rectangle."""
    from spatialfuse.ingest import msi_pixel_size, parse_pixel_size
    from spatialfuse.io.imzml import imzml_pixel_sizes

    imz = _with_pixel_size_y(_pair(tmp_path, pixel_size_um=12.5)[0], 25.0)
    assert imzml_pixel_sizes(imz) == (12.5, 25.0)
    a = read_imzml(imz, sample="S1")
    meta = a.uns["spatialfuse"]
    assert meta["pixel_size_xy_um"] == [12.5, 25.0]
    assert meta["pixel_size_um"] == pytest.approx(np.sqrt(12.5 * 25.0))
    np.testing.assert_allclose(a.obsm["spatial"], [[12.5, 25.0], [25.0, 25.0]])  # (1,1), (2,1)
    assert msi_pixel_size(imz, "S1") == pytest.approx(np.sqrt(12.5 * 25.0))
    # the writer states a pair as such, and the reader gives it back
    (tmp_path / "w").mkdir()
    imz2, _ = _pair(tmp_path / "w", pixel_size_um=(40.0, 80.0))
    assert imzml_pixel_sizes(imz2) == (40.0, 80.0)
    np.testing.assert_allclose(read_imzml(imz2).obsm["spatial"], [[40.0, 80.0], [80.0, 80.0]])
    # the sheet's value wins: one number for both axes (warned), or x×y
    with caplog.at_level("WARNING", logger="spatialfuse.io.imzml"):
        b = read_imzml(imz, sample="S1", pixel_size_um=12.5)
    assert b.uns["spatialfuse"]["pixel_size_xy_um"] == [12.5, 12.5]
    assert "msi_pixel_size_um (12.5 µm) is used, although the imzML gives pixel size x 12.5 um " \
           "and y 25 um" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="spatialfuse.io.imzml"):
        # the look-ahead (Visium HD pooling, before the reading) leaves the saying to the reading
        assert msi_pixel_size(imz, "S1", 12.5) == 12.5
        assert msi_pixel_size(imz, "S1") == pytest.approx(np.sqrt(12.5 * 25.0))
    assert caplog.text == ""
    pair = parse_pixel_size("10 x 30", "S1")
    assert pair == (10.0, 30.0)
    c = read_imzml(imz, sample="S1", pixel_size_um=pair)
    np.testing.assert_allclose(c.obsm["spatial"], [[10.0, 30.0], [20.0, 30.0]])
    for bad in ("10y30", "10x0", "1x2x3", "-4"):
        with pytest.raises(InputError, match=rf"^sample 'S1': msi_pixel_size_um '{bad}' "):
            parse_pixel_size(bad, "S1")
    _with_pixel_size_y(imz, 12.51)  # 0.08 % apart: square, of the x size
    assert read_imzml(imz, sample="S1").uns["spatialfuse"]["pixel_size_xy_um"] == [12.5, 12.5]
    assert msi_pixel_size(imz, "S1") == 12.5


@pytest.mark.parametrize("bad", [np.nan, -1.0])
def test_bad_intensities(tmp_path, bad):
    coords = np.array([(1, 1), (2, 1)])
    inten = np.ones((2, 2), np.float32)
    inten[1, 1] = bad
    imz, _ = write_imzml(tmp_path / "c.imzML", coords, np.array([100.0, 200.0]), inten,
                         mode="continuous", pixel_size_um=10)
    what = "NaN or infinite" if np.isnan(bad) else "negative"
    with pytest.raises(InputError, match=rf"^sample 'S1', file '.*c\.ibd': spectrum 1 \(pixel "
                                         rf"x=2, y=1\) has {what} intensities$"):
        read_imzml(imz, sample="S1")


def test_input_files_not_modified(tmp_path):
    imz, ibd = _pair(tmp_path, pixel_size_um=10)
    before = (imz.read_bytes(), ibd.read_bytes())
    read_imzml(imz)
    assert (imz.read_bytes(), ibd.read_bytes()) == before


def _processed_centroids(tmp_path, n=60, seed=2):
    """Processed centroid spectra: a random subset of 40 axis peaks per pixel, 2 ppm jitter."""
    rng = np.random.default_rng(seed)
    axis = np.geomspace(150, 900, 40)
    coords = np.array([(i % 10 + 1, i // 10 + 1) for i in range(n)])
    mzs, ints = [], []
    for _ in range(n):
        sel = np.sort(rng.choice(40, size=rng.integers(15, 35), replace=False))
        mzs.append(axis[sel] * (1 + rng.normal(0, 2e-6, sel.size)))
        ints.append(rng.uniform(1, 100, sel.size).astype(np.float32))
    imz, _ = write_imzml(tmp_path / "pc.imzML", coords, mzs, ints, mode="processed",
                         pixel_size_um=20)
    return imz, axis, mzs, ints


def test_processed_streamed_in_blocks(tmp_path):
    """Block size changes nothing; the result is sparse and holds every written peak."""
    import scipy.sparse as sp

    imz, axis, mzs, ints = _processed_centroids(tmp_path)
    one = read_imzml(imz, chunk_spectra=4096)
    many = read_imzml(imz, chunk_spectra=7, axis_spectra=25)
    assert sp.issparse(one.X) and sp.issparse(many.X)
    assert one.n_vars == many.n_vars == 40
    np.testing.assert_allclose(one.var["mz"].to_numpy(), axis, rtol=3e-6)
    np.testing.assert_array_equal(one.X.toarray(), many.X.toarray())
    assert one.X.nnz == sum(len(m) for m in mzs)
    dense = np.zeros((len(mzs), 40), np.float32)
    for i, (m, v) in enumerate(zip(mzs, ints)):
        dense[i, np.argmin(np.abs(m[:, None] - axis[None]), 1)] = v
    np.testing.assert_array_equal(one.X.toarray(), dense)
    np.testing.assert_allclose(one.obs["tic"].to_numpy(), [v.sum() for v in ints], rtol=1e-5)


def test_processed_profile_peak_picking(tmp_path):
    """Profile spectra on per-pixel sampling grids are centroided: the axis is the true peaks,
    each peak's value is proportional to its height."""
    rng = np.random.default_rng(4)
    true = np.array([200.0, 350.0, 351.0, 600.0])
    coords = np.array([(x, y) for y in range(1, 5) for x in range(1, 6)])
    heights = rng.uniform(50, 500, (len(coords), true.size))
    mzs, ints = [], []
    for h in heights:
        grid = np.arange(190.0, 610.0, 0.002) + rng.uniform(0, 0.002)
        sigma = true * 1e-5  # 10 ppm (SD) wide peaks, sampled every 0.002 m/z
        v = (h[None] * np.exp(-0.5 * ((grid[:, None] - true) / sigma) ** 2)).sum(1)
        mzs.append(grid)
        ints.append((v + rng.uniform(0, 0.5, grid.size)).astype(np.float32))
    imz, _ = write_imzml(tmp_path / "pp.imzML", coords, mzs, ints, mode="processed",
                         spectrum_type="profile", pixel_size_um=50)
    a = read_imzml(imz, mz_tolerance_ppm=30)  # integrates ± 3 SD
    assert a.uns["spatialfuse"]["spectrum_type"] == "profile"
    assert a.n_vars == 4
    np.testing.assert_allclose(a.var["mz"].to_numpy(), true, rtol=5e-6)
    X = a.X.toarray()
    for j in range(4):
        assert np.corrcoef(X[:, j], heights[:, j])[0, 1] > 0.999


def test_continuous_profile_streamed(tmp_path):
    """Continuous profile data: peaks picked on the mean spectrum, integrated per pixel; the
    same with tiny blocks."""
    rng = np.random.default_rng(5)
    axis = np.arange(300.0, 302.0, 0.002)
    true = np.array([300.5, 301.2])
    coords = np.array([(x, 1) for x in range(1, 31)])
    heights = rng.uniform(10, 100, (30, 2))
    shape = np.exp(-0.5 * ((axis[:, None] - true) / 0.006) ** 2)  # (n_mz, 2)
    inten = heights @ shape.T
    imz, _ = write_imzml(tmp_path / "cp.imzML", coords, axis, inten.astype(np.float32),
                         mode="continuous", spectrum_type="profile", pixel_size_um=10)
    a = read_imzml(imz, mz_tolerance_ppm=50)
    b = read_imzml(imz, mz_tolerance_ppm=50, chunk_spectra=4)
    np.testing.assert_allclose(a.var["mz"].to_numpy(), true, atol=0.002)
    np.testing.assert_allclose(a.X.toarray(), b.X.toarray(), rtol=1e-6)
    assert np.corrcoef(a.X.toarray()[:, 0], heights[:, 0])[0, 1] > 0.999


def test_mz_range(tmp_path):
    imz, axis, _, _ = _processed_centroids(tmp_path)
    a = read_imzml(imz, mz_range=(300.0, 600.0))
    np.testing.assert_allclose(a.var["mz"].to_numpy(), axis[(axis >= 300) & (axis <= 600)],
                               rtol=3e-6)


def test_benchmark_generator_reads_back(tmp_path):
    """The ingest benchmark's generated file is what it claims: the axis is recovered and every
    written peak is stored."""
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("ingest_benchmark",
                                                  REPO / "benchmarks" / "ingest_benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    imz, ibd, axis = bench.generate(tmp_path / "g.imzML", 700, axis_peaks=200,
                                    peaks_per_spectrum=30, block=256)
    a = read_imzml(imz, chunk_spectra=100)
    assert a.n_obs == 700 and a.n_vars == 200
    np.testing.assert_allclose(a.var["mz"].to_numpy(), np.sort(axis), rtol=2e-6)
    from pyimzml.ImzMLParser import ImzMLParser

    p = ImzMLParser(str(imz), parse_lib="ElementTree")
    assert a.X.nnz == sum(p.mzLengths) and 25 < a.X.nnz / 700 < 35
    p.m.close()


def test_axis_not_bridged_by_noise():
    """Two peaks 30 ppm apart, bridged by dense noise centroids (a single chain of neighbours
    within 10 ppm): the axis still has both, within 2 ppm."""
    from spatialfuse.msi.peaks import ppm_bins

    rng = np.random.default_rng(6)
    n = 400
    true = np.array([500.0, 500.015])
    peaks = np.concatenate([t * (1 + rng.normal(0, 2e-6, n)) for t in true])
    noise = rng.uniform(499.99, 500.025, 300)
    groups = np.r_[np.arange(n), np.arange(n), rng.integers(0, n, 300)]
    centres, n_spectra = ppm_bins(np.r_[peaks, noise], 10.0, groups)
    strong = centres[n_spectra >= 0.5 * n]
    assert strong.size == 2
    np.testing.assert_allclose(strong, true, rtol=2e-6)


def test_pixel_size_pairs_and_the_side_of_the_same_area():
    """``spatialfuse.pixels``: one number is a square, a pair (x, y) a rectangle; an MSI
    ``uns`` dict gives its pair (else its one size); the single length is √(x·y); sizes within
    0.5 % are a square; the sheet's forms parse or fail with what is wrong."""
    from spatialfuse import pixels

    np.testing.assert_array_equal(pixels.pixel_xy(30), [30.0, 30.0])
    np.testing.assert_array_equal(pixels.pixel_xy((40, 80)), [40.0, 80.0])
    np.testing.assert_array_equal(pixels.pixel_xy({"pixel_size_um": 25.0}), [25.0, 25.0])
    np.testing.assert_array_equal(
        pixels.pixel_xy({"pixel_size_um": 56.6, "pixel_size_xy_um": [40.0, 80.0]}), [40.0, 80.0])
    np.testing.assert_array_equal(
        pixels.pixel_xy({"pixel_size_um": 25.0, "pixel_size_xy_um": None}), [25.0, 25.0])
    with pytest.raises(ValueError, match="one number or an"):
        pixels.pixel_xy((1.0, 2.0, 3.0))
    assert pixels.pixel_side(30) == 30.0 and pixels.pixel_side((40, 90)) == pytest.approx(60.0)
    assert pixels.is_rectangular((40, 80)) and not pixels.is_rectangular((12.5, 12.51))
    assert pixels.describe((40, 80)) == "40 × 80 µm" and pixels.describe(30) == "30 µm"
    np.testing.assert_array_equal(
        pixels.lattice_index(np.array([[5.0, 10.0], [45.0, 10.0], [5.0, 90.0]]), (40, 80)),
        [[0, 0], [1, 0], [0, 1]])
    assert pixels.parse_size("40x80") == pixels.parse_size("40 × 80") == (40.0, 80.0)
    assert pixels.parse_size("40,80") == (40.0, 80.0) and pixels.parse_size(" 12.5 ") == 12.5
    assert pixels.parse_size("") is None and pixels.parse_size(None) is None
    assert pixels.parse_size(float("nan")) is None and pixels.parse_size(7) == 7.0
    for bad, why in (("thirty", "is not a number"), ("0", "must be one positive"),
                     ("inf", "must be one positive"), ("1x2x3", "must be one positive")):
        with pytest.raises(ValueError, match=why):
            pixels.parse_size(bad)
