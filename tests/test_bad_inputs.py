"""Bad input, run through Snakemake: every case gives a message naming what is wrong (and the
sample and file where there is one), leaves no output of the failing job, changes no input.

Three groups, each one snakemake run shared by its cases:
* config problems: all reported at once, before any job;
* samples-sheet problems: likewise, one line per problem;
* broken files: one sample per kind of damage, all run with ``--keep-going``; the message
  must reach snakemake's output and the rule log, as one line rather than a deep traceback.
The README's table "What a bad input gives" lists the same cases and messages.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from workflow_utils import checksums, make_workdir, smk

pytestmark = pytest.mark.workflow


# --------------------------------------------------------------------------------------------
# config: all problems in one run, before any job
# --------------------------------------------------------------------------------------------
CONFIG_CASES = {
    # case: (dotted edit, value, expected line)
    "value out of range": ("impute__k", 0, "impute.k: 0 is less than the minimum of 1"),
    "fraction above 1": ("align__min_coverage", 1.5,
                         "align.min_coverage: 1.5 is greater than the maximum of 1"),
    "unknown model name": ("model__models", ["pca", "bert"],
                           "model.models.1: 'bert' is not one of"),
    "misspelt key": ("domains__n_domain", 5,
                     "domains: Additional properties are not allowed ('n_domain' was unexpected)"
                     " (check the spelling against the schema)"),
    "wrong type": ("seed", "abc", "seed: 'abc' is not of type 'integer'"),
    "unknown device": ("device", "tpu", "device: 'tpu' is not one of ['auto', 'cpu', 'cuda']"),
    "unknown option value": ("ingest__msi__normalisation", "l2",
                             "ingest.msi.normalisation: 'l2' is not one of"),
}


@pytest.fixture(scope="module")
def bad_config_run(tmp_path_factory):
    d = make_workdir(tmp_path_factory.mktemp("badcfg"),
                     **{k: v for k, v, _ in CONFIG_CASES.values()})
    before = checksums(d / "config")
    p = smk(d, "--cores", "1", check=False)
    return d, p, before


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config(bad_config_run, case):
    d, p, before = bad_config_run
    assert p.returncode != 0
    assert "invalid config:" in p.stderr
    assert CONFIG_CASES[case][2] in p.stderr
    assert not (d / "results").exists(), "a job ran despite the invalid config"
    assert checksums(d / "config") == before


def test_missing_samples_sheet(tmp_path):
    d = make_workdir(tmp_path, samples="config/none.tsv")
    p = smk(d, "--cores", "1", check=False)
    assert p.returncode != 0
    assert "samples sheet 'config/none.tsv' does not exist (config field 'samples')" in p.stderr
    assert not (d / "results").exists()


# --------------------------------------------------------------------------------------------
# samples sheet: all row problems in one run, before any job
# --------------------------------------------------------------------------------------------
SHEET_ROWS = [
    # sample, st, msi, msi_pixel_size_um, landmarks
    ("dup", "data/st", "data/m.imzML", "", ""),
    ("dup", "data/st", "data/m.imzML", "", ""),
    ("bad id", "data/st", "data/m.imzML", "", ""),
    ("nopath", "data/nowhere/outs", "data/nowhere.imzML", "", ""),
    ("wrongext", "data/st", "data/m.mzML", "", ""),
    ("h5file", "data/st/filtered_feature_bc_matrix.h5", "data/m.imzML", "", ""),
    ("noibd", "data/st", "data/lonely.imzML", "", ""),
    ("negpx", "data/st", "data/m.imzML", "-5", ""),
    ("textpx", "data/st", "data/m.imzML", "thirty", ""),
    ("nolm", "data/st", "data/m.imzML", "", "data/landmarks.csv"),
]
SHEET_CASES = {
    "duplicate sample ids": "samples sheet: duplicate sample id(s) ['dup']",
    "invalid sample id": "sample 'bad id': column sample: 'bad id' does not match",
    "st path does not exist": "sample 'nopath': st path 'data/nowhere/outs' does not exist",
    "msi path does not exist": "sample 'nopath': msi path 'data/nowhere.imzML' does not exist",
    "msi of an unsupported type": "sample 'wrongext': msi 'data/m.mzML' must end in .imzML or .h5ad",
    "st is a file but not .h5ad": "sample 'h5file': st 'data/st/filtered_feature_bc_matrix.h5' "
                                  "must be a Space Ranger folder or an .h5ad file",
    ".imzML without its .ibd": "sample 'noibd': msi 'data/lonely.imzML' has no .ibd file beside "
                               "it (expected 'data/lonely.ibd')",
    "negative pixel size": "sample 'negpx': msi_pixel_size_um '-5' must be one positive number "
                           "or two (x×y, such as 40x80)",
    "pixel size not a number": "sample 'textpx': msi_pixel_size_um 'thirty' is not a number or "
                               "an x×y pair such as 40x80",
    "landmarks file does not exist": "sample 'nolm': landmarks path 'data/landmarks.csv' does "
                                     "not exist",
}


@pytest.fixture(scope="module")
def bad_sheet_run(tmp_path_factory, small_demo_files):
    st, imzml, _ = small_demo_files
    sheet = "sample\tst\tmsi\tmsi_pixel_size_um\tlandmarks\n" + "".join(
        "\t".join(r) + "\n" for r in SHEET_ROWS)
    d = make_workdir(tmp_path_factory.mktemp("badsheet"), samples_tsv=sheet)
    shutil.copytree(st, d / "data" / "st")
    for name in ("m", "lonely"):
        shutil.copy(imzml, d / "data" / f"{name}.imzML")
    shutil.copy(imzml.with_suffix(".ibd"), d / "data" / "m.ibd")
    (d / "data" / "m.mzML").write_text("<mzML/>\n")
    before = checksums(d / "config", d / "data")
    p = smk(d, "--cores", "1", check=False)
    return d, p, before


@pytest.mark.parametrize("case", list(SHEET_CASES))
def test_bad_samples_sheet(bad_sheet_run, case):
    d, p, before = bad_sheet_run
    assert p.returncode != 0
    assert "invalid samples sheet:" in p.stderr
    assert SHEET_CASES[case] in p.stderr
    assert not (d / "results").exists(), "a job ran despite the invalid samples sheet"
    assert checksums(d / "config", d / "data") == before


@pytest.mark.parametrize("case,sheet,expected", [
    ("sheet not tab-separated", "sample,st,msi\nA,data/st,data/m.imzML\n",
     "samples sheet lacks required column(s) ['sample', 'st', 'msi'] (the sheet must be "
     "tab-separated)"),
    ("required column missing", "sample\tst\nA\tdata/st\n",
     "samples sheet lacks required column(s) ['msi']"),
    ("sheet without samples", "sample\tst\tmsi\n", "samples sheet lists no samples"),
])
def test_bad_samples_sheet_layout(tmp_path, case, sheet, expected):
    d = make_workdir(tmp_path, samples_tsv=sheet)
    p = smk(d, "--cores", "1", check=False)
    assert p.returncode != 0 and expected in p.stderr
    assert not (d / "results").exists()


# --------------------------------------------------------------------------------------------
# broken files: one sample per kind of damage, one --keep-going run
# --------------------------------------------------------------------------------------------
def _copy_pair(imzml: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(imzml, dest / "m.imzML")
    shutil.copy(imzml.with_suffix(".ibd"), dest / "m.ibd")
    return dest / "m.imzML"


def _h5ad_without_coordinates(path: Path) -> None:
    import anndata as ad
    import numpy as np

    ad.AnnData(np.ones((4, 3), dtype=np.float32)).write_h5ad(path)


def _damage_intensity(imzml: Path, value: float) -> None:
    """Overwrite one intensity of the 4th spectrum in the .ibd with ``value``."""
    from pyimzml.ImzMLParser import ImzMLParser

    p = ImzMLParser(str(imzml), parse_lib="ElementTree")
    off, dt = p.intensityOffsets[3], np.dtype(p.intensityPrecision)
    p.m.close()
    with open(imzml.with_suffix(".ibd"), "r+b") as fh:
        fh.seek(off)
        fh.write(np.array([value], dtype=dt).tobytes())


def _build(case: str, base: Path, st: Path, imzml: Path) -> tuple[str, str, str]:
    """Make the damaged inputs of ``case`` under ``base``; return (st, msi, landmarks) paths."""
    base.mkdir(parents=True)
    good_st = base / "st"
    shutil.copytree(st, good_st)
    msi = _copy_pair(imzml, base / "msi")
    ibd = msi.with_suffix(".ibd")
    lm = ""
    if case == "text_as_imzml":
        msi.write_text("sample,x,y,intensity\n1,1,1,5.0\n")
    elif case == "st_h5ad_not_hdf5":
        good_st = base / "st.h5ad"
        good_st.write_text("not an HDF5 file\n")
    elif case == "msi_h5ad_not_hdf5":
        msi = base / "msi.h5ad"
        msi.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    elif case == "st_not_spaceranger":
        good_st = base / "some_folder"
        good_st.mkdir()
        (good_st / "counts.csv").write_text("gene,spot1\nA,1\n")
    elif case == "spaceranger_corrupt_matrix":
        (good_st / "filtered_feature_bc_matrix.h5").write_bytes(b"\0" * 512)
    elif case == "st_h5ad_without_coordinates":
        good_st = base / "st.h5ad"
        _h5ad_without_coordinates(good_st)
    elif case == "ibd_truncated":
        data = ibd.read_bytes()
        ibd.write_bytes(data[: len(data) // 2])
    elif case == "ibd_wrong_uuid":
        data = ibd.read_bytes()
        ibd.write_bytes(bytes(16) + data[16:])
    elif case == "ibd_empty":
        ibd.write_bytes(b"")
    elif case == "imzml_truncated":
        text = msi.read_bytes()
        msi.write_bytes(text[: len(text) // 2])
    elif case == "imzml_without_pixel_size":
        text = msi.read_text(encoding="latin-1")
        msi.write_text(re.sub(r'<cvParam[^>]*name="pixel size \(?[xy]\)?"[^>]*/>\n', "", text),
                       encoding="latin-1")
    elif case == "spaceranger_no_scalefactors":
        (good_st / "spatial" / "scalefactors_json.json").unlink()
    elif case == "spaceranger_no_positions":
        for f in (good_st / "spatial").glob("tissue_positions*"):
            f.unlink()
    elif case == "spaceranger_duplicate_barcodes":
        pos = next((good_st / "spatial").glob("tissue_positions*.csv"))
        lines = pos.read_text().splitlines()
        pos.write_text("\n".join(lines + [lines[-1]]) + "\n")
    elif case in ("ibd_nan_intensities", "ibd_negative_intensities"):
        _damage_intensity(msi, np.nan if case == "ibd_nan_intensities" else -5.0)
    elif case == "msi_h5ad_without_coordinates":
        msi = base / "msi.h5ad"
        _h5ad_without_coordinates(msi)
    elif case == "no_tissue_overlap":
        lm_path = base / "landmarks.csv"
        far = 1.0e6  # the landmarks put the MSI section 1 m away from the ST section
        pts = [(0, 0), (1000, 0), (0, 1000), (1000, 1000)]
        lm_path.write_text("st_x_um,st_y_um,msi_x_um,msi_y_um\n" + "".join(
            f"{x + far},{y + far},{x},{y}\n" for x, y in pts))
        lm = str(lm_path)
    else:
        raise ValueError(case)
    return str(good_st), str(msi), lm


#: case: (stage that fails, message fragments: all must appear in the output and the rule log)
FILE_CASES = {
    "text_as_imzml": ("ingest", ["msi/m.imzML': not a readable imzML file"]),
    "imzml_truncated": ("ingest", ["msi/m.imzML': not a readable imzML file"]),
    "st_h5ad_not_hdf5": ("ingest", ["st.h5ad': not a readable .h5ad file"]),
    "msi_h5ad_not_hdf5": ("ingest", ["msi.h5ad': not a readable .h5ad file"]),
    "st_not_spaceranger": ("ingest", ["some_folder': not a Space Ranger output folder"]),
    "spaceranger_corrupt_matrix": ("ingest", ["filtered_feature_bc_matrix.h5': not a readable "
                                              "10x HDF5 matrix"]),
    "st_h5ad_without_coordinates": ("ingest", ["st.h5ad': the AnnData has no obsm['spatial']"]),
    "ibd_truncated": ("ingest", ["msi/m.ibd': the .ibd file is truncated: the imzML needs"]),
    "ibd_wrong_uuid": ("ingest", ["msi/m.ibd': the .ibd UUID (0000", "does not match the "
                                  "imzML's", "the two files do not belong together"]),
    "ibd_empty": ("ingest", ["msi/m.ibd': the .ibd file is empty or truncated"]),
    "imzml_without_pixel_size": ("ingest", ["msi/m.imzML': no pixel size: the imzML has no "
                                            "'pixel size x' and the samples sheet gives no "
                                            "msi_pixel_size_um"]),
    "spaceranger_no_scalefactors": ("ingest", ["st': spatial/scalefactors_json.json is missing "
                                               "from the Space Ranger folder"]),
    "spaceranger_no_positions": ("ingest", ["st/spatial': no spot positions: expected "
                                            "spatial/tissue_positions.parquet"]),
    "spaceranger_duplicate_barcodes": ("ingest", ["duplicate barcode '", "' in spot positions"]),
    "ibd_nan_intensities": ("ingest", ["msi/m.ibd': spectrum 3 (pixel x=", "has NaN or infinite "
                                       "intensities"]),
    "ibd_negative_intensities": ("ingest", ["msi/m.ibd': spectrum 3 (pixel x=", "has negative "
                                            "intensities"]),
    "msi_h5ad_without_coordinates": ("ingest", ["msi.h5ad': the AnnData has no obsm['spatial']"]),
    "no_tissue_overlap": ("align", ["no ST spot is covered by MSI pixels",
                                    "the sections do not overlap"]),
}


@pytest.fixture(scope="module")
def bad_files_run(tmp_path_factory, small_demo_files):
    st, imzml, _ = small_demo_files
    d = tmp_path_factory.mktemp("badfiles")
    rows, targets = [], []
    for case, (stage, _) in FILE_CASES.items():
        s, m, lm = _build(case, d / "data" / case, st, imzml)
        rel = [os.path.relpath(p, d) if p else "" for p in (s, m, lm)]
        rows.append("\t".join([case, *rel]) + "\n")
        targets.append(f"results/{case}/{stage}/qc.json")
    make_workdir(d, samples_tsv="sample\tst\tmsi\tlandmarks\n" + "".join(rows))
    before = checksums(d / "config", d / "data")
    p = smk(d, "--cores", "2", "--keep-going", *targets, check=False, timeout=600)
    return d, p, before


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_broken_file(bad_files_run, case):
    d, p, before = bad_files_run
    stage, fragments = FILE_CASES[case]
    out = p.stdout + p.stderr
    assert p.returncode != 0
    log = (d / "results" / "logs" / stage / f"{case}.log").read_text()
    for frag in fragments:
        assert frag in out, f"'{frag}' not in snakemake's output"
        assert frag in log, f"'{frag}' not in the rule log:\n{log}"
    assert f"sample '{case}'" in log
    # one clear line, not a library's traceback
    assert "Traceback" not in log, log
    assert "SpatialFuse error:" in out
    # the failing job left nothing behind; earlier stages that succeeded keep their outputs
    left = sorted(str(f.relative_to(d)) for f in (d / "results" / case / stage).glob("*"))
    assert left == [], f"partial outputs of the failed {stage} job: {left}"
    assert checksums(d / "data" / case) == {k: v for k, v in before.items()
                                            if k.startswith(str(d / "data" / case) + "/")}
