"""Config and samples-sheet checks that run before any job, with one line per problem."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from .errors import ConfigError
from .pixels import parse_size

DEMO_PREFIX = "results/demo/"


def _path(err) -> str:
    return ".".join(str(p) for p in err.absolute_path) or "(top level)"


def _describe(sub: dict) -> str:
    """One alternative of an ``anyOf`` in words: 'a number > 0', "'msi_pixel'", 'null'."""
    if "const" in sub:
        return repr(sub["const"])
    kind = {"number": "a number", "integer": "an integer", "string": "a string", "null": "null",
            "boolean": "true or false"}.get(sub.get("type"), str(sub.get("type")))
    for key, op in (("exclusiveMinimum", ">"), ("minimum", ">="), ("maximum", "<=")):
        if key in sub:
            kind += f" {op} {sub[key]}"
    return kind


def config_problems(config: dict, schema_path: str | Path) -> list[str]:
    """All schema violations of ``config`` as 'field: what is wrong' lines."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    v = jsonschema.Draft202012Validator(schema)
    out = []
    for e in sorted(v.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        if e.validator == "additionalProperties":
            out.append(f"{_path(e)}: {e.message} (check the spelling against the schema)")
        elif e.validator == "anyOf":
            alts = " or ".join(_describe(sub) for sub in e.validator_value)
            out.append(f"{_path(e)}: {e.instance!r} is not allowed; give {alts}")
        else:
            out.append(f"{_path(e)}: {e.message}")
    return out


def canonical_config(value):
    """``value`` (the validated config) with the keys of every mapping in sorted order, lists
    kept in theirs.

    Why: Snakemake compares a rule's ``params`` with those of the run that wrote its outputs
    by their ``repr``, and a dict's ``repr`` follows its key order. A config saved back with
    its keys in another order (a YAML tool, a collaborator's copy), or a default written out
    explicitly (the validator appends defaults after the user's keys), would rerun every
    rule with equal values. In sorted order, only a changed value reruns anything."""
    if isinstance(value, dict):
        return {k: canonical_config(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [canonical_config(v) for v in value]
    return value


def sample_problems(samples: pd.DataFrame, schema_path: str | Path, workdir: str | Path = ".") -> list[str]:
    """Problems in the samples sheet: schema, duplicate ids, missing paths, wrong file types."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    v = jsonschema.Draft202012Validator(schema)
    out = []
    missing_cols = [c for c in schema.get("required", []) if c not in samples.columns]
    if missing_cols:
        hint = ""
        if len(samples.columns) == 1 and any(ch in samples.columns[0] for ch in ",; "):
            hint = " (the sheet must be tab-separated)"
        return [f"samples sheet lacks required column(s) {missing_cols}{hint}"]
    if samples.empty:
        return ["samples sheet lists no samples (only a header)"]
    unknown = [c for c in samples.columns if c not in schema["properties"]]
    if unknown:
        out.append(f"samples sheet has unknown column(s) {unknown}; allowed: "
                   f"{list(schema['properties'])}")
    dups = samples["sample"][samples["sample"].duplicated()].unique().tolist()
    if dups:
        out.append(f"samples sheet: duplicate sample id(s) {dups}")
    wd = Path(workdir)
    for _, row in samples.iterrows():
        rec = {k: val for k, val in row.items() if val is not None and not pd.isna(val) and val != ""}
        sid = rec.get("sample", "?")
        for e in v.iter_errors(rec):
            out.append(f"sample '{sid}': column {_path(e)}: {e.message}")
        exists = {}
        for col in ("st", "msi", "landmarks", "truth"):
            val = rec.get(col)
            if not val:
                continue
            if str(val).startswith(DEMO_PREFIX):
                continue  # produced by the demo simulator
            exists[col] = (wd / val).exists()
            if not exists[col]:
                out.append(f"sample '{sid}': {col} path '{val}' does not exist")
        st = str(rec.get("st", ""))
        if exists.get("st") and (wd / st).is_file() and not st.lower().endswith(".h5ad"):
            out.append(f"sample '{sid}': st '{st}' must be a Space Ranger folder or an .h5ad file")
        msi = str(rec.get("msi", ""))
        if msi and not msi.lower().endswith((".imzml", ".h5ad")):
            out.append(f"sample '{sid}': msi '{msi}' must end in .imzML or .h5ad")
        elif exists.get("msi") and msi.lower().endswith(".imzml") and ibd_beside(wd / msi) is None:
            out.append(f"sample '{sid}': msi '{msi}' has no .ibd file beside it (expected "
                       f"'{Path(msi).with_suffix('.ibd')}')")
        try:
            parse_size(rec.get("msi_pixel_size_um"))
        except ValueError as exc:
            out.append(f"sample '{sid}': msi_pixel_size_um {exc}")
    return out


def ibd_beside(imzml: str | Path) -> Path | None:
    """The ``.ibd`` next to an ``.imzML`` (same stem, extension in any case), or None."""
    p = Path(imzml)
    exact = p.with_suffix(".ibd")
    if exact.exists():
        return exact
    if not p.parent.is_dir():
        return None
    return next((q for q in sorted(p.parent.glob(p.stem + ".*")) if q.suffix.lower() == ".ibd"),
                None)


def load_samples(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"samples sheet '{p}' does not exist (config field 'samples')")
    df = pd.read_csv(p, sep="\t", dtype=str, comment="#").fillna("")
    df.columns = [c.strip() for c in df.columns]
    for c in df.columns:
        df[c] = df[c].str.strip()
    return df
