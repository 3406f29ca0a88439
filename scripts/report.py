"""Adapter: the single-file HTML summary report."""

from pathlib import Path

from spatialfuse.logging_utils import setup_logging
from spatialfuse.report import ResultsTree, build_summary
from spatialfuse.report.summary import read_captions

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
samples = list(sm.params.samples)
results = Path(sm.input.align_qc[0]).parents[2]  # results/{sample}/align/qc.json


def by_sample(paths):
    return dict(zip(samples, paths))


build_summary(
    title=sm.params.report["title"],
    config=dict(sm.params.config),
    samples_info={s: dict(sm.params.samples_info[s]) for s in samples},
    models=list(sm.params.models),
    reference_model=sm.params.reference_model,
    tree=ResultsTree(results),
    aggregate={k: sm.input[k] for k in sm.params.aggregate},
    sample_figures={"ingest_qc": by_sample(sm.input.ingest_fig),
                    "align_overlay": by_sample(sm.input.align_fig),
                    "impute": by_sample(sm.input.impute_fig),
                    "associations": by_sample(sm.input.interpret_fig),
                    "markers": by_sample(sm.input.markers_fig)},
    captions=read_captions(sm.input.captions),
    checksums=list(sm.input.checksums),
    cohort=list(sm.input.cohort),
    params=dict(sm.params.report),
    bench_dir=results / "benchmarks",
    out_path=sm.output.html,
)
