"""Adapter: simulate one demo sample and write it as Space Ranger + imzML + truth."""

from spatialfuse.logging_utils import setup_logging
from spatialfuse.simulate import DemoParams, simulate_sample, write_demo_sample

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
params = DemoParams.from_config(sm.params.demo, sm.wildcards.sample, sm.params.seed)
sim = simulate_sample(params)
write_demo_sample(sim, sm.output.st, sm.output.imzml, sm.output.truth)
