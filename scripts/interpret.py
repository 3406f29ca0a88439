"""Adapter: markers, metabolite-gene associations and pathways for one sample."""

import json

import pandas as pd
from threadpoolctl import threadpool_limits

from spatialfuse.interpret import run_interpret
from spatialfuse.io import read_paired
from spatialfuse.logging_utils import setup_logging
from spatialfuse.plots.stages import association_heatmap, marker_dotplot

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
params = sm.params.interpret
rna, msi, _ = read_paired(sm.input.paired)
dom = pd.read_csv(sm.input.domains, sep="\t", index_col=0)["domain"]
labels = dom.loc[rna.obs_names].to_numpy()
# BLAS on the rule's threads: the same numbers however many cores the machine has
with threadpool_limits(limits=sm.threads):
    out = run_interpret(rna, msi, labels, params, seed=sm.params.seed,
                        truth_dir=sm.input.truth[0] if sm.input.truth else None)
out["markers"].to_csv(sm.output.markers, sep="\t", index=False)
out["associations"].to_csv(sm.output.associations, sep="\t", index=False)
out["associations_domains"].to_csv(sm.output.associations_domains, sep="\t", index=False)
out["pathways"].to_csv(sm.output.pathways, sep="\t", index=False)
with open(sm.output.summary, "w") as fh:
    json.dump(out["summary"], fh, indent=2, default=str)
association_heatmap(out["associations"], sm.output.figure, fdr=float(params.get("fdr", 0.05)))
marker_dotplot(out["markers"], sm.output.markers_figure, fdr=float(params.get("fdr", 0.05)))
