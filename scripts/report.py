"""Adapter: the single-file HTML summary report."""

import json

import pandas as pd

from spatialfuse.logging_utils import setup_logging
from spatialfuse.report import build_summary

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
samples = list(sm.params.samples)


def by_sample(paths):
    return {s: json.load(open(p)) for s, p in zip(samples, paths)}


figures = {
    "Spatial domains": [(sm.input.figures[0], "domain maps",
                         "Domains per sample (rows) and model (columns); truth first when known.")],
    "Metrics across samples": [(sm.input.figures[1], "metrics", "Registration, domains, imputation.")],
    "Registration": [(p, f"overlay {s}", f"{s}: MSI tissue pixels over ST spots; coverage per spot.")
                     for s, p in zip(samples, sm.input.align_fig)],
    "Ingest QC": [(p, f"ingest {s}", f"{s}: TIC, mean spectrum, counts and genes per spot.")
                  for s, p in zip(samples, sm.input.ingest_fig)],
    "Imputation": [(p, f"imputation {s}", f"{s}: measured vs predicted-from-genes ion images (held out).")
                   for s, p in zip(samples, sm.input.impute_fig)],
    "Metabolite–gene associations": [(p, f"associations {s}", f"{s}: strongest associations.")
                                     for s, p in zip(samples, sm.input.interpret_fig)],
}
build_summary(
    title=sm.params.report["title"], config=dict(sm.params.config), samples=dict(sm.params.samples_info),
    metrics=pd.read_csv(sm.input.metrics, sep="\t").fillna({"model": ""}),
    align_qc=by_sample(sm.input.align_qc), interpret=by_sample(sm.input.interpret),
    figures=figures, out_path=sm.output.html,
)
