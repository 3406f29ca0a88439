"""Adapter: one metrics table and cohort figures across samples."""

from pathlib import Path

from spatialfuse.logging_utils import setup_logging
from spatialfuse.report import collect_metrics, domains_grid, metrics_figure

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
metrics = collect_metrics({
    "ingest": sm.input.ingest, "align": sm.input.align, "impute": sm.input.impute,
    "model": sm.input.models, "domains": sm.input.domains, "interpret": sm.input.interpret,
})
Path(sm.output.metrics).parent.mkdir(parents=True, exist_ok=True)
metrics.to_csv(sm.output.metrics, sep="\t", index=False)
Path(sm.output.domains).parent.mkdir(parents=True, exist_ok=True)
domains_grid(sm.params.samples, sm.params.models, sm.params.truth, sm.output.domains, metrics)
metrics_figure(metrics, sm.output.summary)
