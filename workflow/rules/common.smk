# Sample-sheet helpers and input functions (no lambdas in rules).
from pathlib import Path

from spatialfuse.config import ibd_beside
from spatialfuse.jobcost import (
    count_rows,
    input_mb,
    impute_mem_request_mb,
    impute_fit_steps,
    impute_model_fits,
    impute_runtime_minutes,
    impute_scored_genes,
    impute_workers,
)


wildcard_constraints:
    sample=r"[A-Za-z0-9_-]+",
    model=r"pca|vae|gnn|transformer",


MODELS = list(config["model"]["models"])
CPU_ONLY_MODELS = {"pca"}


def row(wildcards):
    return samples.loc[wildcards.sample]


def ibd_path(imzml):
    """The .ibd beside an .imzML (any case of the extension, as the reader accepts)."""
    return str(ibd_beside(imzml) or Path(imzml).with_suffix(".ibd"))


def ingest_inputs(wildcards):
    r = row(wildcards)
    files = {"st": r["st"], "msi": r["msi"]}
    if r["msi"].lower().endswith(".imzml"):
        files["ibd"] = ibd_path(r["msi"])
    return files


def sample_info(wildcards):
    """The samples-sheet cells that per-sample rules read besides their inputs.

    Only ``msi_pixel_size_um``: paths arrive as inputs, and the cohort labels (condition,
    batch) reach only the cross-sample rules (aggregate, cohort, report), so editing them does
    not rerun ingest or align.
    """
    return {"msi_pixel_size_um": row(wildcards).get("msi_pixel_size_um", "")}


def truth_input(wildcards):
    t = row(wildcards).get("truth", "")
    return [t] if t else []


def landmarks_input(wildcards):
    lm = row(wildcards).get("landmarks", "")
    return [lm] if lm else []


def model_params(wildcards):
    return config["model"].get(wildcards.model, {})


def impute_model_params(wildcards):
    """The model config sections of the joint models that impute refits (only those:
    editing another model's settings does not rerun impute)."""
    imp = config["impute"]
    used = dict.fromkeys([*imp.get("models", []), *imp.get("denoise_models", [])])
    return {m: config["model"].get(m, {}) for m in used}


def domain_model_tsv(wildcards):
    return (
        f"results/{wildcards.sample}/domains/{config['interpret']['domain_model']}.tsv"
    )


def pathway_table_input(wildcards):
    """A user's pathway table (interpret.pathway_table), so that a missing file stops the run
    before any job starts and an edited table reruns interpret; none for the shipped one.
    """
    t = config["interpret"].get("pathway_table")
    return [t] if t else []


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


def gpu_request(wildcards):
    """GPUs for one model job: 1 when config asks for CUDA (a cluster job must request its
    GPU; ``auto`` only uses one that happens to be visible), 0 for the CPU-only PCA baseline.
    """
    return int(config["device"] == "cuda" and wildcards.model not in CPU_ONLY_MODELS)


def impute_gpu_request(wildcards):
    """GPUs for the impute job: 1 when config asks for CUDA and impute trains joint models."""
    imp = config["impute"]
    return int(
        config["device"] == "cuda"
        and bool(imp.get("models") or imp.get("denoise_models"))
    )


def impute_threads(wildcards):
    """Threads for the impute job: worker processes of its joint-model fold fits (at most 4,
    1 without joint models or with device cuda; spatialfuse.jobcost). Snakemake caps them at
    --cores; --set-threads impute=N overrides. The numbers are the same for any N."""
    return impute_workers(config["impute"], config["device"])


def impute_runtime(wildcards, input, attempt, threads):
    """Minutes for the impute job: grows with the section's spots (align's coverage table has
    one row per ST spot; read once align has written it) and the joint-model fits of its two
    cross-validations, shared out among its threads (spatialfuse.jobcost), at least 60, times
    the attempt."""
    fits = impute_model_fits(config["impute"], threads)
    n = count_rows(input.coverage)
    return impute_runtime_minutes(
        n, fits, attempt, impute_fit_steps(n, config["impute"])
    )


def impute_mem(wildcards, input, attempt, threads):
    """MB for the impute job: its peak memory estimated from the section's spots (align's
    coverage table), the scored genes, the joint models and the fit workers (its threads;
    spatialfuse.jobcost), at least 4,000 MB + 6 per MB of input, times the attempt."""
    return impute_mem_request_mb(
        count_rows(input.coverage),
        config["impute"],
        impute_scored_genes(config),
        floor_mb=4000 + 6 * input_mb(input),
        attempt=attempt,
        workers=threads,
    )


def scaled(base, per_input_mb=0):
    """A resource (mem_mb or runtime) of ``base`` plus ``per_input_mb`` per MB of input,
    multiplied by the attempt number, so that a job retried (``--retries``) after running out
    of memory or time asks for more."""
    if not per_input_mb:
        return lambda wildcards, attempt: int(base * attempt)
    return lambda wildcards, input, attempt: int(
        (base + per_input_mb * input_mb(input)) * attempt
    )


def all_outputs():
    return ["results/report.html", "results/aggregate/metrics.tsv"]
