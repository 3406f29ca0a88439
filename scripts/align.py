"""Adapter: register MSI to ST, aggregate onto spots, write transform/aligned/paired/QC."""

import json

import anndata as ad

from spatialfuse.align import run_align
from spatialfuse.align.stage import read_landmarks
from spatialfuse.io import write_paired
from spatialfuse.logging_utils import setup_logging
from spatialfuse.plots.stages import alignment_overlay_figure

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
sample = sm.wildcards.sample
st = ad.read_h5ad(sm.input.st)
msi = ad.read_h5ad(sm.input.msi)
landmarks = read_landmarks(sm.input.landmarks[0], sample) if sm.input.landmarks else None
truth = sm.input.truth[0] if sm.input.truth else None
out = run_align(st, msi, sm.params.align, sample=sample, landmarks=landmarks, truth_dir=truth,
                seed=int(sm.params.seed))
out["transform"].save(sm.output.transform)
out["msi_aligned"].write_h5ad(sm.output.msi_aligned, compression="gzip")
write_paired(sm.output.paired, out["rna"], out["msi_spots"], uns={"sample": sample})
out["coverage"].to_csv(sm.output.coverage, sep="\t")
with open(sm.output.qc, "w") as fh:
    json.dump(out["qc"], fh, indent=2, default=str)
alignment_overlay_figure(st, out["msi_aligned"], out["coverage"], out["qc"], sm.output.figure, sample)
