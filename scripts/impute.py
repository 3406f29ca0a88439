"""Adapter: denoise + cross-modal prediction with held-out scores."""

import json

import anndata as ad
import pandas as pd

from spatialfuse.impute import predict_unmeasured, run_impute
from spatialfuse.io import read_paired, write_paired
from spatialfuse.logging_utils import setup_logging
from spatialfuse.plots.stages import impute_figure

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
rna, msi, uns = read_paired(sm.input.paired)
scored, msi, metrics, table = run_impute(rna, msi, sm.params.impute, seed=sm.params.seed,
                                         model_params=dict(sm.params.models),
                                         device=sm.params.device)
st = ad.read_h5ad(sm.input.st)
coverage = pd.read_csv(sm.input.coverage, sep="\t", index_col=0)
unmeasured, metrics["unmeasured_spots"] = predict_unmeasured(  # the paired RNA with every gene
    st, rna, msi, metrics, table, sm.params.impute, seed=sm.params.seed,
    model_params=dict(sm.params.models), device=sm.params.device, coverage=coverage,
    sample=sm.wildcards.sample, st_path=sm.input.st)
unmeasured.write_h5ad(sm.output.unmeasured, compression="gzip")
write_paired(sm.output.imputed, scored, msi, uns=uns)  # the scored genes + their layers
table.to_csv(sm.output.scores, sep="\t", index=False)
with open(sm.output.metrics, "w") as fh:
    json.dump(metrics, fh, indent=2)
impute_figure(msi, table, sm.output.figure, sm.wildcards.sample,
              method=f"{metrics['crossmodal']['rna_to_msi']['best_method']}_from_rna",
              unmeasured=unmeasured)
