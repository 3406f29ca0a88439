"""MSI preprocessing: normalisations, transforms, tissue mask, matrix peaks, block-wise helpers."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from spatialfuse.constants import Key
from spatialfuse.errors import InputError
from spatialfuse.msi import preprocess_msi
from spatialfuse.msi.preprocess import _keep_columns, normalise, tissue_mask


@pytest.mark.parametrize("method", ["tic", "rms", "median", "reference"])
def test_normalisation_removes_pixel_factor(method):
    """Pixels = one spectrum times a per-pixel factor: every method recovers a common profile."""
    rng = np.random.default_rng(0)
    base = rng.uniform(1, 5, (1, 20))
    base[0, 3] = 0.0  # a missing peak: median and RMS must cope with zeros
    factor = rng.uniform(0.2, 5, (50, 1))
    Xn, f = normalise(sp.csr_matrix(base * factor), method, reference_idx=7)
    Xn = Xn.toarray()
    nz = base[0] > 0
    np.testing.assert_allclose(Xn[:, nz] / Xn[0, nz], np.ones((50, nz.sum())), rtol=1e-5)
    assert not Xn[:, ~nz].any()
    np.testing.assert_allclose(f / f[0], factor.ravel() / factor[0, 0], rtol=1e-5)
    assert np.median(f) == pytest.approx(1.0)


@pytest.mark.parametrize("transform,fn", [("log1p", np.log1p), ("sqrt", np.sqrt),
                                          ("none", lambda v: v)])
def test_transforms(transform, fn):
    X = sp.csr_matrix(np.array([[0.0, 4.0, 9.0], [1.0, 0.0, 3.0]]))
    Xn, f = normalise(X, "none", transform=transform)
    np.testing.assert_allclose(Xn.toarray(), fn(X.toarray()), rtol=1e-6)


def _disc_msi(matrix_off=3.0, n=30, seed=0):
    """A tissue disc on an n×n raster: 6 tissue peaks (on the disc only) and one matrix peak
    (everywhere, ``matrix_off`` times stronger off tissue, as ion suppression makes it)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[1:n + 1, 1:n + 1]
    x, y = xx.ravel(), yy.ravel()
    disc = (x - n / 2) ** 2 + (y - n / 2) ** 2 < (n / 3) ** 2
    X = np.zeros((x.size, 7))
    X[disc, :6] = rng.uniform(50, 100, (disc.sum(), 6))
    X[:, 6] = np.where(disc, 20.0, 20.0 * matrix_off) * rng.uniform(0.8, 1.2, x.size)
    a = ad.AnnData(sp.csr_matrix(X, dtype=np.float32),
                   obs=pd.DataFrame({"x": x, "y": y, "tic": X.sum(1)},
                                    index=[f"px_{i}" for i in range(x.size)]),
                   var=pd.DataFrame({"mz": 100.0 + 50 * np.arange(7)},
                                    index=[f"mz_{i}" for i in range(7)]))
    a.obsm["spatial"] = np.c_[x, y] * 10.0
    return a, disc


@pytest.mark.parametrize("remove", [True, False])
def test_tissue_mask_and_matrix_peaks(remove):
    a, disc = _disc_msi()
    before = a.X.copy()
    out, qc = preprocess_msi(a, remove_matrix_peaks=remove, sample="d")
    assert (out.obs[Key.obs.on_tissue].to_numpy() == disc).mean() > 0.98
    assert qc["matrix_peaks"] == 1 and qc["pixels_on_tissue"] == pytest.approx(disc.sum(), rel=0.05)
    if remove:
        assert out.n_vars == 6 and 400.0 not in out.var["mz"].to_numpy()
    else:
        assert out.n_vars == 7
        assert out.var[Key.var.matrix_peak].tolist() == [False] * 6 + [True]
        assert out.var[Key.var.off_tissue_ratio].iloc[6] == pytest.approx(3.0, rel=0.1)
    assert (a.X != before).nnz == 0  # the input is not modified
    # raw intensities kept for the kept peaks; X = log1p(TIC-normalised)
    keep = slice(0, out.n_vars)
    np.testing.assert_allclose(out.layers["intensity"].toarray(), before.toarray()[:, keep])
    f = out.obs[Key.obs.norm_factor].to_numpy()
    on = np.isfinite(f)
    np.testing.assert_allclose(np.expm1(out.X.toarray()[on]),
                               before.toarray()[on][:, keep] / f[on, None], rtol=1e-4)


def test_no_background_keeps_every_pixel():
    a, disc = _disc_msi()
    a = a[disc].copy()
    out, qc = preprocess_msi(a, sample="d")
    assert out.obs[Key.obs.on_tissue].all() and qc["matrix_peaks"] == 0


def test_reference_peak_must_exist():
    a, _ = _disc_msi()
    out, _ = preprocess_msi(a, normalisation="reference", reference_mz=100.0005, sample="d")
    assert out.uns["spatialfuse"]["normalisation"] == "reference"
    with pytest.raises(InputError, match=r"sample 'd': no kept peak within 10 ppm of reference_mz "
                                         r"123\.4 \(nearest: 100\.0000"):
        preprocess_msi(a, normalisation="reference", reference_mz=123.4, sample="d")
    with pytest.raises(InputError, match="needs ingest.msi.reference_mz"):
        preprocess_msi(a, normalisation="reference", sample="d")


def test_keep_columns_blockwise(monkeypatch):
    import spatialfuse.msi.preprocess as pp

    monkeypatch.setattr(pp, "_ROWS", 7)  # many small blocks
    X = sp.random(100, 30, density=0.2, format="csr", random_state=1, dtype=np.float32)
    keep = np.random.default_rng(1).random(30) > 0.4
    np.testing.assert_array_equal(_keep_columns(X, keep).toarray(), X[:, keep].toarray())
    a, disc = _disc_msi()
    np.testing.assert_array_equal(tissue_mask(a), pp.tissue_mask(a))
