"""Adapter: cohort tables and figures across samples and models."""

from pathlib import Path

from spatialfuse.logging_utils import setup_logging
from spatialfuse.report import ResultsTree, run_aggregate

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
run_aggregate(
    ResultsTree(Path(sm.input.ingest[0]).parents[2]),  # results/{sample}/ingest/qc.json
    list(sm.params.samples),
    list(sm.params.models),
    dict(sm.output.items()),
    truth=dict(sm.params.truth),
    conditions=dict(sm.params.conditions),
    reference_model=sm.params.reference_model,
    params=dict(sm.params.report),
    fdr=float(sm.params.fdr),
    seed=int(sm.params.seed),
)
