"""Config and samples-sheet validation: one clear line per problem, naming the field."""


import pandas as pd
import yaml

from conftest import REPO
from spatialfuse.config import config_problems, sample_problems

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
SSCHEMA = REPO / "workflow" / "schemas" / "samples.schema.yaml"


def _cfg():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_default_config_is_valid():
    assert config_problems(_cfg(), SCHEMA) == []


def test_out_of_range_value_names_field():
    c = _cfg()
    c["impute"]["k"] = 0
    (msg,) = config_problems(c, SCHEMA)
    assert msg.startswith("impute.k:") and "minimum" in msg


def test_unknown_model_and_typo():
    c = _cfg()
    c["model"]["models"] = ["pca", "bert"]
    c["align"]["min_coverge"] = 0.3
    msgs = "\n".join(config_problems(c, SCHEMA))
    assert "model.models.1: 'bert' is not one of" in msgs
    assert "min_coverge" in msgs


def test_samples_sheet_problems(tmp_path):
    df = pd.DataFrame({
        "sample": ["a", "a", "b c"],
        "st": ["missing_dir", "results/demo/x/spaceranger", "x"],
        "msi": ["m.imzML", "results/demo/x/msi/x.imzML", "m.txt"],
        "msi_pixel_size_um": ["", "-3", "40y80"],
    })
    msgs = "\n".join(sample_problems(df, SSCHEMA, workdir=tmp_path))
    assert "duplicate sample id(s) ['a']" in msgs
    assert "sample 'a': st path 'missing_dir' does not exist" in msgs
    assert "sample 'a': msi_pixel_size_um '-3' must be one positive number or two" in msgs
    assert "sample 'b c': msi_pixel_size_um '40y80' is not a number or an x×y pair" in msgs
    assert "sample 'b c': column sample" in msgs
    assert "must end in .imzML or .h5ad" in msgs


def test_canonical_config_sorts_every_mapping_and_keeps_lists():
    from spatialfuse.config import canonical_config

    cfg = {"b": {"z": 1, "a": [{"y": 2, "x": 3}, 4]}, "a": None}
    out = canonical_config(cfg)
    assert out == cfg
    assert list(out) == ["a", "b"] and list(out["b"]) == ["a", "z"]
    assert list(out["b"]["a"][0]) == ["x", "y"] and out["b"]["a"][1] == 4
    assert repr(canonical_config({"z": 1, "a": 2})) == repr(canonical_config({"a": 2, "z": 1}))
