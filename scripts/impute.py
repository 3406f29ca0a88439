"""Adapter: denoise + cross-modal prediction with held-out scores.

The rule's ``threads`` are the worker processes of the joint models' fold fits. Those are
spawned, and a spawned process imports this file again: the work runs under ``__main__`` only.
"""

import json

import anndata as ad
import pandas as pd

from spatialfuse.constants import Key
from spatialfuse.impute import predict_unmeasured, run_impute
from spatialfuse.io import read_paired, write_paired
from spatialfuse.logging_utils import setup_logging
from spatialfuse.plots import spot_geometry
from spatialfuse.plots.stages import impute_figure


def main(sm) -> None:
    setup_logging(sm.log[0])
    rna, msi, uns = read_paired(sm.input.paired)
    scored, msi, metrics, table = run_impute(rna, msi, sm.params.impute, seed=sm.params.seed,
                                             model_params=dict(sm.params.models),
                                             device=sm.params.device, workers=sm.threads)
    st = ad.read_h5ad(sm.input.st)
    coverage = pd.read_csv(sm.input.coverage, sep="\t", index_col=0)
    unmeasured, metrics["unmeasured_spots"] = predict_unmeasured(  # the paired RNA, every gene
        st, rna, msi, metrics, table, sm.params.impute, seed=sm.params.seed,
        model_params=dict(sm.params.models), device=sm.params.device, coverage=coverage,
        sample=sm.wildcards.sample, st_path=sm.input.st)
    unmeasured.write_h5ad(sm.output.unmeasured, compression="gzip")
    write_paired(sm.output.imputed, scored, msi, uns=uns)  # the scored genes + their layers
    table.to_csv(sm.output.scores, sep="\t", index=False)
    with open(sm.output.metrics, "w") as fh:
        json.dump(metrics, fh, indent=2)
    spot_um, square = spot_geometry(st.uns.get(Key.uns.spatialfuse))
    impute_figure(msi, table, sm.output.figure, sm.wildcards.sample,
                  method=f"{metrics['crossmodal']['rna_to_msi']['best_method']}_from_rna",
                  unmeasured=unmeasured, spot_um=spot_um, square=square)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
