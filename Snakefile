# SpatialFuse: MSI (imzML) + spatial transcriptomics (Visium) -> registration -> imputation ->
# joint models -> domains -> metabolite-gene biology -> report. Entry point of the workflow.
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

sys.path.insert(0, workflow.basedir)

from spatialfuse.config import (
    canonical_config,
    config_problems,
    load_samples,
    sample_problems,
)


configfile: "config/config.yaml"


_problems = config_problems(
    config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml"
)
if _problems:
    raise WorkflowError("invalid config:\n  " + "\n  ".join(_problems))
validate(config, "workflow/schemas/config.schema.yaml")
# keys in sorted order, defaults included: a config saved in another key order reruns nothing
_canonical = canonical_config(config)
config.clear()
config.update(_canonical)

samples = load_samples(config["samples"])
_problems = sample_problems(
    samples, f"{workflow.basedir}/workflow/schemas/samples.schema.yaml"
)
if _problems:
    raise WorkflowError("invalid samples sheet:\n  " + "\n  ".join(_problems))
validate(samples.replace("", None), "workflow/schemas/samples.schema.yaml")
samples = samples.set_index("sample", drop=False)


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/align.smk"
include: "workflow/rules/impute.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/interpret.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
