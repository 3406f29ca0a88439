"""Demo simulator: paired MSI + Visium sections with known truth, written in the real formats."""

from .demo import DemoParams, simulate_sample, write_demo_sample
from .sections import simulated_sections
from .fields import SmoothField, tissue_mask_fn, warped_voronoi_domains

__all__ = [
    "DemoParams",
    "simulate_sample",
    "write_demo_sample",
    "simulated_sections",
    "SmoothField",
    "tissue_mask_fn",
    "warped_voronoi_domains",
]
