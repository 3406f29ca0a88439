"""Determinism: the demo run twice with the same config and seed on CPU gives identical numbers.

The second run uses one core instead of two, so jobs run in another order and with other
neighbours, and the impute job fits its joint models in one process instead of two workers. Timing metrics (``seconds`` and the like, see ``workflow_utils.TIMING_METRIC``) are
excluded explicitly; everything else in ``results/aggregate/metrics.tsv`` and the key arrays of
every stage must match exactly.
"""

from __future__ import annotations

import pandas as pd
import pytest

from workflow_utils import TIMING_METRIC, assert_same_results, make_workdir, smk

pytestmark = pytest.mark.workflow


def test_same_seed_same_numbers(tmp_path, tiny_demo_run):
    d = make_workdir(tmp_path)
    smk(d, "--cores", "1")
    assert_same_results(tiny_demo_run, d)
    # the exclusion list removes timing only: what is compared still covers every stage
    m = pd.read_csv(d / "results" / "aggregate" / "metrics.tsv", sep="\t")
    timing = m[m["metric"].map(lambda k: TIMING_METRIC.search(k) is not None)]
    assert "seconds" in set(timing["metric"]) and len(timing) < 0.1 * len(m)
    compared = m.drop(timing.index)
    assert set(compared["stage"]) >= {"ingest", "align", "impute", "model", "domains",
                                      "interpret"}
