"""Adapter: ingest one sample (both modalities) into AnnData files + QC."""

import json

from spatialfuse.ingest import parse_pixel_size, run_ingest
from spatialfuse.logging_utils import setup_logging
from spatialfuse.plots.stages import ingest_qc_figure

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
sample = sm.wildcards.sample
info = sm.params.info
out = run_ingest(sm.input.st, sm.input.msi, sm.params.ingest, sample=sample,
                 pixel_size_um=parse_pixel_size(info.get("msi_pixel_size_um"), sample))
out["st"].write_h5ad(sm.output.st, compression="gzip")
out["msi"].write_h5ad(sm.output.msi, compression="gzip")
out["annotations"].to_csv(sm.output.annotations, sep="\t", index=False)
with open(sm.output.qc, "w") as fh:
    json.dump(out["qc"], fh, indent=2, default=str)
ingest_qc_figure(out["st"], out["msi"], sm.output.figure, sample, out["qc"])
