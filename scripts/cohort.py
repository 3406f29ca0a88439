"""Adapter: per-domain differences between conditions, samples as replicates."""

import pandas as pd

from spatialfuse.io import read_paired
from spatialfuse.logging_utils import setup_logging
from spatialfuse.report.conditions import run_conditions
from spatialfuse.report.figures import conditions_figure

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
samples = list(sm.params.samples)
spots = pd.read_csv(sm.input.spots, sep="\t")
paired = {s: read_paired(p)[:2] for s, p in zip(samples, sm.input.paired)}
feats, abund = run_conditions(spots, sm.params.reference_model, dict(sm.params.conditions),
                              paired, batches=dict(sm.params.batches))
feats.to_csv(sm.output.table, sep="\t", index=False)
abund.to_csv(sm.output.abundance, sep="\t", index=False)
conditions_figure(feats, abund, sm.output.figure, fdr=float(sm.params.fdr))
