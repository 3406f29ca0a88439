# Sample-sheet helpers and input functions (no lambdas in rules).
from pathlib import Path


wildcard_constraints:
    sample=r"[A-Za-z0-9_-]+",
    model=r"pca|vae|gnn|transformer",


MODELS = list(config["model"]["models"])


def row(wildcards):
    return samples.loc[wildcards.sample]


def ingest_inputs(wildcards):
    r = row(wildcards)
    files = {"st": r["st"], "msi": r["msi"]}
    if r["msi"].lower().endswith(".imzml"):
        files["ibd"] = str(Path(r["msi"]).with_suffix(".ibd"))
    return files


def sample_info(wildcards):
    """The samples-sheet row of this sample (what the adapters need besides config)."""
    return {k: v for k, v in row(wildcards).items()}


def truth_input(wildcards):
    t = row(wildcards).get("truth", "")
    return [t] if t else []


def landmarks_input(wildcards):
    lm = row(wildcards).get("landmarks", "")
    return [lm] if lm else []


def model_params(wildcards):
    return config["model"].get(wildcards.model, {})


def domain_model_tsv(wildcards):
    return (
        f"results/{wildcards.sample}/domains/{config['interpret']['domain_model']}.tsv"
    )


def provenance_inputs(wildcards):
    """Every input file of a sample, by role, for the report's SHA-256 table."""
    return {
        **ingest_inputs(wildcards),
        "landmarks": landmarks_input(wildcards),
        "truth": truth_input(wildcards),
    }


def all_truth(wildcards):
    """Truth folders of the samples that have one (optional: the demo, benchmarks)."""
    return [t for t in samples.get("truth", []) if t]


def cohort_outputs(wildcards):
    """Outputs of the optional ``cohort`` rule (conditions compared across samples), when the
    workflow has that rule and the samples sheet names two or more conditions."""
    conditions = {c for c in samples.get("condition", []) if c}
    if len(conditions) < 2 or not rules.has("cohort"):
        return []
    return list(rules.cohort.output)


def per_sample(pattern, **kw):
    return expand(pattern, sample=samples.index, **kw)


def all_outputs():
    return ["results/report.html", "results/aggregate/metrics.tsv"]
