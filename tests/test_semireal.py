"""The semi-real generator: a (here synthetic stand-in for a) real ST section + simulated MSI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from spatialfuse.simulate.semireal import (
    LABEL,
    SemiRealDataMissing,
    SemiRealParams,
    candidate_links,
    read_paste_section,
    simulate_semireal,
    write_semireal_sample,
)

FAST = dict(n_linked=8, n_background=4, msi_pixel_size_um=100.0, margin_um=200.0)


@pytest.fixture(scope="module")
def section():
    """A 12 x 12 legacy-ST grid whose genes are real pathway genes, with two smooth programs
    (left-right and top-bottom) driving them, as negative-binomial counts."""
    from spatialfuse.interpret.pathways import load_pathways

    pool = sorted(set(load_pathways(None).query("analyte_type == 'gene'")["name"]))
    links = candidate_links(pool)
    genes = sorted({g for gs in links.values() for g in gs[:3]})[:300]
    rng = np.random.default_rng(0)
    ax, ay = np.meshgrid(np.arange(12.0), np.arange(12.0))
    axy = np.stack([ax.ravel(), ay.ravel()], 1) + rng.normal(0, 0.05, (144, 2))
    prog = np.stack([np.sin(axy[:, 0] / 3), np.cos(axy[:, 1] / 3)], 1)
    load = rng.normal(0, 0.8, (2, len(genes)))
    mu = np.exp(1.0 + prog @ load)
    counts = rng.negative_binomial(5, 5 / (5 + mu))
    idx = [f"{x:.2f}x{y:.2f}" for x, y in axy]
    return pd.DataFrame(counts, index=idx, columns=genes), axy


def test_metabolites_follow_real_linked_genes(section):
    counts, axy = section
    sim = simulate_semireal(counts, axy, SemiRealParams(seed=1, **FAST), section="t")
    again = simulate_semireal(counts, axy, SemiRealParams(seed=1, **FAST), section="t")
    np.testing.assert_array_equal(sim["intensities"], again["intensities"])  # deterministic
    ions = sim["ions"]
    assert (ions["role"] == "linked").sum() == 8 and (ions["role"] == "background").sum() == 4
    assert ions["name"].is_unique and np.all(np.diff(np.sort(ions["mz"])) > 0)
    # the links name genes of the section; each linked ion's true log-abundance follows the
    # weighted sum of its genes' (smoothed) expression
    links = sim["links"]
    assert set(links["gene"]) <= set(counts.columns)
    C = counts.to_numpy(float)
    L = np.log1p(C / C.sum(1, keepdims=True) * 1e4)
    L = pd.DataFrame((L - L.mean(0)) / (L.std(0) + 1e-9), columns=counts.columns)
    truth = sim["true_log_abundance"]
    rs = []
    for name, grp in links.groupby("metabolite"):
        drive = L[grp["gene"].tolist()].to_numpy() @ grp["weight"].to_numpy()
        rs.append(np.corrcoef(drive, truth[name].to_numpy())[0, 1])
    assert np.median(rs) > 0.5
    # MSI raster: off-tissue margin, zero-inflation on tissue, matrix peaks stronger off tissue
    px = sim["msi_pixels"]
    on = px["tissue_fraction"].to_numpy() > 0.9
    off = px["tissue_fraction"].to_numpy() == 0
    assert on.sum() > 100 and off.sum() > 100
    I = sim["intensities"]
    assert 0.02 < (I[on, : len(ions)] == 0).mean() < 0.6
    assert I[off, -1].mean() > I[on, -1].mean()
    # the true position of every pixel follows the saved rigid transform
    A = np.array(sim["transform"]["affine"])
    u = px[["msi_x_um", "msi_y_um"]].to_numpy()
    np.testing.assert_allclose(u @ A[:2, :2].T + A[:2, 2], px[["st_x_um", "st_y_um"]], atol=1e-6)


def test_written_files_are_read_by_ingest_and_labelled(section, tmp_path):
    from spatialfuse.constants import Key
    from spatialfuse.io import read_imzml, read_st_h5ad

    counts, axy = section
    sim = simulate_semireal(counts, axy, SemiRealParams(seed=2, **FAST), section="t")
    st, imz, truth = tmp_path / "st.h5ad", tmp_path / "t_SIMULATED_msi.imzML", tmp_path / "truth"
    write_semireal_sample(sim, st, imz, truth, source="synthetic test section")
    a = read_st_h5ad(st, sample="t")
    assert a.shape == counts.shape
    np.testing.assert_array_equal(a.layers[Key.layers.counts].toarray(), counts.to_numpy())
    xy = a.obsm[Key.obsm.spatial]
    d = np.sort(np.linalg.norm(xy[:, None] - xy[None], axis=2), 1)[:, 1]
    assert 150 < np.median(d) < 250  # 1 ST array unit = 200 um
    m = read_imzml(imz, sample="t")
    assert m.n_obs == len(sim["msi_pixels"])
    assert json.loads((truth / "design.json").read_text())["label"] == LABEL
    assert "SIMULATED MSI" in (tmp_path / "SIMULATED_MSI.txt").read_text()
    assert "SIMULATED MSI" in ad_label(st)
    for f in ("links.tsv", "metabolites.tsv", "msi_pixels.tsv.gz", "transform.json",
              "true_log_abundance.tsv.gz"):
        assert (truth / f).is_file()


def ad_label(path) -> str:
    import anndata as ad

    from spatialfuse.constants import Key

    return ad.read_h5ad(path).uns[Key.uns.spatialfuse]["semireal"]


def test_missing_real_section_names_the_file(tmp_path):
    with pytest.raises(SemiRealDataMissing, match=r"slice3\.csv\.gz.*SOURCE\.md"):
        read_paste_section(tmp_path, 3)
