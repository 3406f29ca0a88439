"""Ingest stage on the written demo: QC, normalisation, tissue mask, matrix peaks, annotation."""

import numpy as np

from spatialfuse.constants import Key
from spatialfuse.msi import annotate_mz, load_metabolite_table
from spatialfuse.msi.preprocess import normalise


def test_ingest_outputs(small_ingested, small_sim):
    st, msi, qc = small_ingested["st"], small_ingested["msi"], small_ingested["qc"]
    assert Key.layers.counts in st.layers and st.X.max() < 20  # log-normalised
    assert Key.layers.intensity in msi.layers
    # tissue mask agrees with the simulator's truth
    truth = small_sim["msi_pixels"].set_index(["x", "y"])["tissue_fraction"]
    frac = truth.loc[list(zip(msi.obs["x"], msi.obs["y"]))].to_numpy()
    mask = msi.obs[Key.obs.on_tissue].to_numpy()
    assert (mask == (frac > 0.5))[np.abs(frac - 0.5) > 0.4].mean() > 0.97
    # the four CHCA matrix peaks are flagged and removed
    assert qc["msi"]["matrix_peaks"] == 4
    assert not np.any(np.isclose(msi.var["mz"].to_numpy()[:, None], [190.04987, 379.09246], rtol=2e-5))
    # most simulated metabolites are annotated with their own name among the candidates
    names = set(small_sim["metabolites"]["name"])
    hit = [any(n in a for n in names) for a in msi.var[Key.var.annotation]]
    assert np.mean(hit) > 0.9


def test_tic_normalisation_removes_pixel_factor():
    rng = np.random.default_rng(0)
    base = rng.uniform(1, 5, (1, 20))
    factor = rng.uniform(0.2, 5, (50, 1))
    Xn, f = normalise(base * factor, "tic")
    Xn = Xn.toarray()
    np.testing.assert_allclose(Xn / Xn[0], np.ones_like(Xn), rtol=1e-5)


def test_annotation_keeps_all_candidates():
    import anndata as ad
    import pandas as pd

    table = pd.DataFrame({"name": ["Glucose", "Fructose", "Galactose", "Citrate"],
                          "monoisotopic_mass": [180.06339, 180.06339, 180.06339, 192.02701]})
    a = ad.AnnData(np.zeros((1, 2)), var=pd.DataFrame({"mz": [181.07067, 500.0]}, index=["a", "b"]))
    long = annotate_mz(a, table, ["[M+H]+"], tol_ppm=5)
    assert a.var["n_candidates"].tolist() == [3, 0]
    assert set(long["name"]) == {"Glucose", "Fructose", "Galactose"}


def test_shipped_table_loads():
    t = load_metabolite_table()
    assert {"name", "monoisotopic_mass", "formula"} <= set(t.columns) and len(t) > 200


def test_ingest_real_files():
    """The real Visium subset and the real imzML example (negative mode) through run_ingest."""
    from conftest import DATA
    from spatialfuse.ingest import run_ingest

    params = {"st": {"min_counts": 1, "min_genes": 1, "min_spots_per_gene": 1},
              "msi": {"adducts": ["[M-H]-", "[M+Cl]-"], "tissue_mask": "all",
                      "normalisation": "rms", "transform": "sqrt"}}
    out = run_ingest(DATA / "visium_human", DATA / "imzml" / "Example_Processed.imzML", params,
                     sample="real")
    msi, qc = out["msi"], out["qc"]
    assert qc["msi"]["pixels"] == 9 and qc["msi"]["peaks_after"] == msi.n_vars > 300
    assert qc["msi"]["normalisation"] == "rms" and qc["msi"]["transform"] == "sqrt"
    np.testing.assert_allclose(msi.X.toarray() ** 2 * msi.obs["norm_factor"].to_numpy()[:, None],
                               msi.layers["intensity"].toarray(), rtol=1e-4)
    # every candidate within tolerance is listed, and var agrees with the long table
    ann = out["annotations"]
    assert (ann["error_ppm"].abs() <= 5.0).all() and set(ann["adduct"]) <= {"[M-H]-", "[M+Cl]-"}
    counts = ann.groupby("feature").size()
    np.testing.assert_array_equal(msi.var.loc[counts.index, "n_candidates"], counts.to_numpy())
    assert msi.var["n_candidates"].sum() == len(ann)
    assert qc["st"]["spots_after_qc"] == 100
    assert out["st"].uns["spatialfuse"]["platform"] == "visium"


def test_report_ingest_numbers(small_ingested):
    """The report's ingest table shows the before/after numbers of qc.json."""
    import json

    from spatialfuse.report.summary import ingest_numbers

    qc = json.loads(json.dumps(small_ingested["qc"], default=str))  # as read back from qc.json
    row = ingest_numbers(["s"], {"s": qc}).iloc[0]
    st, msi = qc["st"], qc["msi"]
    assert row["spots: read → in tissue → kept"] == (
        f"{st['spots_input']:,} → {st['spots_in_tissue']:,} → {st['spots_after_qc']:,}")
    assert row["m/z peaks: read → kept"] == f"{msi['peaks_input']:,} → {msi['peaks_after']:,}"
    assert row["matrix / rare peaks"].startswith(f"{msi['matrix_peaks']} removed")
    assert row["normalisation"] == "tic + log1p"
    assert row["ST platform"] == "visium"
    hd = {"st_meta": {"platform": "visium_hd", "spot_diameter_um": 16.0}}
    pooled = {"st_meta": {"platform": "visium_hd", "spot_diameter_um": 48.0, "pooled_from_um": 16.0}}
    rows = ingest_numbers(["a", "b"], {"a": hd, "b": pooled})
    assert rows["ST platform"].tolist() == ["visium_hd (16 µm bins)",
                                            "visium_hd (48 µm squares of 16 µm bins)"]


def test_schema_defaults_match_code():
    """The config schema documents exactly the ingest keys run_ingest reads, with its defaults."""
    import yaml

    from conftest import REPO
    from spatialfuse.ingest import MSI_DEFAULTS, ST_DEFAULTS

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    sect = schema["properties"]["ingest"]["properties"]
    for name, defaults in (("st", ST_DEFAULTS), ("msi", MSI_DEFAULTS)):
        fields = sect[name]["properties"]
        assert {k: f["default"] for k, f in fields.items()} == defaults, name
        assert all(f.get("description") for f in fields.values()), name
