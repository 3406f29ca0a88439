"""Shared fixtures: small, seeded, generated data (plus the real files in tests/data)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"

#: A small demo for unit tests: ~150 spots, ~2,500 MSI pixels.
SMALL_DEMO = dict(capture_size_um=1600.0, n_genes=80, n_metabolites=25, n_links=4,
                  n_domains=4, msi_pixel_size_um=40.0, tissue_offset_frac=0.0)


@pytest.fixture(scope="session")
def small_sim():
    from spatialfuse.simulate import DemoParams, simulate_sample

    return simulate_sample(DemoParams(seed=7, **SMALL_DEMO))


@pytest.fixture(scope="session")
def small_demo_files(tmp_path_factory, small_sim):
    """The small demo written in the real formats: (st_dir, imzml_path, truth_dir)."""
    from spatialfuse.simulate import write_demo_sample

    d = tmp_path_factory.mktemp("demo")
    write_demo_sample(small_sim, d / "st", d / "msi" / "s.imzML", d / "truth")
    return d / "st", d / "msi" / "s.imzML", d / "truth"


@pytest.fixture(scope="session")
def small_ingested(small_demo_files):
    from spatialfuse.ingest import run_ingest

    st, imzml, truth = small_demo_files
    return run_ingest(st, imzml, {}, sample="s")


@pytest.fixture(scope="session")
def tiny_demo_run(tmp_path_factory):
    """One complete, uninterrupted run of the tiny demo, shared by the workflow tests
    (outputs, selective rerun, determinism and resume references). Tests must leave it as
    they found it."""
    from workflow_utils import make_workdir, smk

    d = make_workdir(tmp_path_factory.mktemp("tiny_demo"))
    smk(d, "--cores", "2")
    return d


def drawn_collections(draw):
    """The collections ``draw()`` adds to any axes, in order."""
    import matplotlib

    added = []
    real = matplotlib.axes.Axes.add_collection

    def add_collection(self, collection, *a, **kw):
        added.append(collection)
        return real(self, collection, *a, **kw)

    matplotlib.axes.Axes.add_collection = add_collection
    try:
        draw()
    finally:
        matplotlib.axes.Axes.add_collection = real
    return added


def polygon_shapes(collection) -> np.ndarray:
    """Each polygon of a PolyCollection about its own centre (n × 4 × 2, µm)."""
    v = np.array([p.vertices[:4] for p in collection.get_paths()])
    return v - v.mean(1, keepdims=True)
