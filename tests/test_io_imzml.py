"""imzML reading/writing: real reference files, round trips, and bad input."""

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
    assert c.n_vars < 8399  # profile spectra are peak-picked, not one feature per sample point


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
    with pytest.raises(InputError, match="truncated"):
        read_imzml(imz, sample="S1")


def test_uuid_mismatch(tmp_path):
    imz, ibd = _pair(tmp_path, pixel_size_um=10)
    data = bytearray(ibd.read_bytes())
    data[0] ^= 0xFF
    ibd.write_bytes(bytes(data))
    with pytest.raises(InputError, match="UUID"):
        read_imzml(imz, sample="S1")


def test_no_pixel_size(tmp_path):
    imz, _ = _pair(tmp_path)
    with pytest.raises(InputError, match="no pixel size.*msi_pixel_size_um"):
        read_imzml(imz, sample="S1")
    a = read_imzml(imz, sample="S1", pixel_size_um=12.5)
    np.testing.assert_allclose(a.obsm["spatial"][1], [25.0, 12.5])


@pytest.mark.parametrize("bad", [np.nan, -1.0])
def test_bad_intensities(tmp_path, bad):
    coords = np.array([(1, 1), (2, 1)])
    inten = np.ones((2, 2), np.float32)
    inten[1, 1] = bad
    imz, _ = write_imzml(tmp_path / "c.imzML", coords, np.array([100.0, 200.0]), inten,
                         mode="continuous", pixel_size_um=10)
    with pytest.raises(InputError, match="(NaN|negative)"):
        read_imzml(imz, sample="S1")


def test_input_files_not_modified(tmp_path):
    imz, ibd = _pair(tmp_path, pixel_size_um=10)
    before = (imz.read_bytes(), ibd.read_bytes())
    read_imzml(imz)
    assert (imz.read_bytes(), ibd.read_bytes()) == before
