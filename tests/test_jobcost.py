"""Cluster requests that grow with the section: the impute job's runtime and memory
(spatialfuse.jobcost)."""

from __future__ import annotations

import math

import pytest

from spatialfuse import jobcost
from spatialfuse.jobcost import (count_rows, impute_cpu_seconds, input_mb, impute_mem_mb,
                                 impute_mem_request_mb, impute_model_fits,
                                 impute_runtime_minutes, impute_scored_genes,
                                 impute_workers)


def test_count_rows_reads_the_spots_of_a_coverage_table_and_none_before_it_exists(tmp_path):
    f = tmp_path / "coverage.tsv"
    assert count_rows(f) is None  # align has not run yet: the DAG is built before it
    f.write_text("\tmsi_coverage\tmsi_n_pixels\tmsi_low_coverage\n"
                 + "".join(f"s{i}\t1.0\t8\tFalse\n" for i in range(413)))
    assert count_rows(f) == 413
    f.write_text("\tmsi_coverage\n")
    assert count_rows(f) == 0


def test_input_mb_sums_the_existing_inputs_in_mib_and_skips_those_not_written_yet(tmp_path):
    a, b = tmp_path / "a.h5ad", tmp_path / "b.imzML"
    a.write_bytes(b"x" * 3 * 1024 * 1024)
    b.write_bytes(b"y" * 512 * 1024)
    assert input_mb([str(a), str(b)]) == pytest.approx(3.5)
    # a file of an upstream job that has not run yet counts nothing (resources are evaluated
    # again once it exists)
    assert input_mb([str(a), str(tmp_path / "later.h5mu")]) == pytest.approx(3.0)
    assert input_mb([]) == 0


def test_impute_runtime_is_the_minimum_for_visium_sizes_and_grows_for_visium_hd():
    # the default impute: 5 blocks × 3 models + 5 folds × 1 denoising model
    fits = 20
    assert impute_runtime_minutes(None, fits) == jobcost.IMPUTE_MIN_MINUTES
    assert impute_runtime_minutes(500, fits) == jobcost.IMPUTE_MIN_MINUTES
    assert impute_runtime_minutes(5_000, fits) == jobcost.IMPUTE_MIN_MINUTES  # one Visium area
    hd = [impute_runtime_minutes(n, fits) for n in (40_000, 80_000, 165_000)]
    assert hd[0] > jobcost.IMPUTE_MIN_MINUTES and hd == sorted(hd) and len(set(hd)) == 3
    # the estimate × the safety factor, rounded up
    est = impute_cpu_seconds(165_000, fits)
    assert hd[2] == pytest.approx(jobcost.IMPUTE_SAFETY * est / 60, abs=1)
    # fewer model fits, less time; none at all: the baselines' measured growth alone
    assert impute_runtime_minutes(165_000, 0) < hd[2]
    assert impute_cpu_seconds(40_000, 0) == pytest.approx(
        jobcost.IMPUTE_BASE_S_10K * 4 ** jobcost.IMPUTE_BASE_EXPONENT)


def test_fold_fits_take_more_steps_where_30_epochs_need_them():
    """``impute.model_min_epochs``: a Visium-size section trains within the 400-step cap, a
    whole pooled Visium HD area (7,473 squares) takes its 30 epochs (~1,230 steps, as measured),
    an unpooled one stops at the floor's limit; the estimate grows with the steps."""
    from spatialfuse.impute.stage import DEFAULTS
    from spatialfuse.jobcost import impute_fit_steps

    assert impute_fit_steps(None, DEFAULTS) == impute_fit_steps(5_000 // 3, DEFAULTS) == 400
    assert impute_fit_steps(7_473, DEFAULTS) == 30 * 41 == 1_230
    assert impute_fit_steps(165_000, DEFAULTS) == 2_000
    assert impute_fit_steps(165_000, {**DEFAULTS, "model_min_epochs_max_steps": None}) > 20_000
    assert impute_fit_steps(165_000, {**DEFAULTS, "model_min_epochs": 0}) == 400
    assert impute_fit_steps(7_473, {**DEFAULTS, "model_max_steps": None, "model_min_epochs": 0}) == 500
    assert impute_cpu_seconds(7_473, 20, 1_230) > 2 * impute_cpu_seconds(7_473, 20)
    assert impute_runtime_minutes(7_473, 20, 1, 1_230) > impute_runtime_minutes(7_473, 20)


def test_impute_runtime_scales_with_the_attempt():
    """A job retried after running out of time (profiles/slurm: retries 1) asks for more."""
    for n in (None, 1_000, 80_000):
        assert impute_runtime_minutes(n, 20, attempt=2) == pytest.approx(
            2 * impute_runtime_minutes(n, 20, attempt=1), abs=1)


def test_impute_model_fits_counts_both_cross_validations():
    imp = {"n_blocks": 5, "models": ["vae", "gnn", "transformer"], "denoise_folds": 5,
           "denoise_models": ["gnn"]}
    assert impute_model_fits(imp) == 20  # the default config
    assert impute_model_fits({**imp, "models": [], "denoise_models": []}) == 0
    assert impute_model_fits({**imp, "n_blocks": 8, "denoise_folds": 3}) == 8 * 3 + 3
    # in worker processes: rounds of fits side by side, both CVs' fits submitted together
    assert impute_model_fits(imp, workers=4) == 5  # 20 fits in 5 rounds
    assert impute_model_fits({**imp, "model_seeds": 3}) == 5 * 3 * 3 + 5  # seed ensemble
    assert impute_model_fits(imp, workers=3) == 7
    assert impute_model_fits(imp, workers=64) == 1


def test_impute_threads_are_fit_workers_capped_and_one_without_models_or_on_a_gpu():
    imp = {"n_blocks": 5, "models": ["vae", "gnn", "transformer"], "denoise_folds": 5,
           "denoise_models": ["gnn"]}
    assert impute_workers(imp, "cpu") == jobcost.IMPUTE_MAX_WORKERS
    assert impute_workers(imp, "auto") == jobcost.IMPUTE_MAX_WORKERS
    assert impute_workers(imp, "cuda") == 1  # the fits share the one GPU
    assert impute_workers({**imp, "models": [], "denoise_models": []}, "cpu") == 1
    assert impute_workers({**imp, "n_blocks": 2, "models": ["vae"], "denoise_folds": 3,
                           "denoise_models": []}, "cpu") == 2  # no more than its fits
    assert impute_workers({**imp, "n_blocks": 2, "models": ["vae"], "denoise_folds": 1,
                           "denoise_models": ["gnn"]}, "cpu") == 3  # both CVs' fits at once


#: Peak RSS measured by benchmarks/impute_scale_benchmark.py (benchmarks/RESULTS.md, "Impute
#: at Visium HD sizes"): (bins, cross-modal models, MB), 2,000 genes, the denoising GNN with
#: the models.
MEASURED_PEAK_MB = [(5_041, 0, 1_330), (10_000, 0, 2_160), (19_881, 0, 3_800), (40_000, 0, 7_120),
                    (5_041, 3, 2_270), (10_000, 3, 3_450),
                    # measured after the line was fitted on the others (one process)
                    (19_881, 3, 5_780)]


def test_impute_memory_estimate_follows_the_measured_peaks():
    for n, models, mb in MEASURED_PEAK_MB:
        assert impute_mem_mb(n, models, models > 0) == pytest.approx(mb, rel=0.1), (n, models)


def test_impute_memory_request_is_the_floor_at_visium_sizes_and_grows_for_visium_hd():
    imp = {"models": ["vae", "gnn", "transformer"], "denoise_models": ["gnn"]}
    floor = 4000 + 6 * 12.5  # the rule's request by input size, for a 12.5 MB input
    assert impute_mem_request_mb(None, imp, 2000, floor) == math.ceil(floor)  # before align
    assert impute_mem_request_mb(5_000, imp, 2000, floor) == math.ceil(floor)  # one Visium area
    hd = [impute_mem_request_mb(n, imp, 2000, floor) for n in (40_000, 80_000, 165_000)]
    assert hd[0] > floor and hd == sorted(hd) and len(set(hd)) == 3
    assert hd[2] == math.ceil(jobcost.IMPUTE_MEM_SAFETY * impute_mem_mb(165_000, 3, True))
    # fewer genes scored, fewer or no models: less memory; a retry asks for twice as much
    assert impute_mem_request_mb(165_000, imp, 500, floor) < hd[2]
    assert impute_mem_request_mb(165_000, {**imp, "models": ["vae"]}, 2000, floor) < hd[2]
    none = {"models": [], "denoise_models": []}
    assert impute_mem_request_mb(165_000, none, 2000, floor) < hd[2]
    assert impute_mem_request_mb(165_000, imp, 2000, floor, attempt=2) == pytest.approx(
        2 * hd[2], abs=2)
    assert impute_mem_request_mb(None, imp, 2000, floor, attempt=2) == math.ceil(2 * floor)
    # a seed ensemble's waiting results: more, by the size of their arrays
    three = impute_mem_request_mb(165_000, {**imp, "model_seeds": 3}, 2000, floor)
    assert three == math.ceil(jobcost.IMPUTE_MEM_SAFETY * (
        impute_mem_mb(165_000, 3, True) + 2 * 3 * jobcost.IMPUTE_SEED_MEM_MB_10K * 16.5))


def test_impute_scored_genes_are_the_highly_variable_genes_at_most_the_impute_cap():
    def cfg(hvg, cap):
        return {"ingest": {"st": {"n_top_genes": hvg}}, "impute": {"n_top_genes": cap}}

    assert impute_scored_genes(cfg(2000, None)) == 2000
    assert impute_scored_genes(cfg(2000, 500)) == 500
    assert impute_scored_genes(cfg(300, 500)) == 300


#: Largest fit worker's peak RSS (benchmarks/RESULTS.md, "Parallel fold fits"): (spots, genes,
#: MB), the default models, 2 workers.
MEASURED_WORKER_PEAK_MB = [(2_500, 2000, 1_370), (5_041, 2000, 1_450), (10_000, 2000, 1_810),
                           (400, 300, 613),
                           # measured after the line was fitted on the others: a true check
                           (19_881, 2000, 2_610)]
#: The job's own process beside 2 workers (same runs): (spots, genes, MB).
MEASURED_MAIN_PEAK_MB = [(2_500, 2000, 1_090), (5_041, 2000, 1_660), (10_000, 2000, 2_970),
                         (19_881, 2000, 5_480)]


def test_impute_memory_counts_each_fit_worker():
    for n, genes, mb in MEASURED_WORKER_PEAK_MB:
        per_worker = (impute_mem_mb(n, 3, True, genes, workers=2)
                      - impute_mem_mb(n, 3, True, genes)) / 2
        assert mb * 0.95 <= per_worker <= mb * 1.2, (n, genes, per_worker)  # not below
    for n, genes, mb in MEASURED_MAIN_PEAK_MB:  # the one-process estimate bounds the parent
        assert mb <= impute_mem_mb(n, 3, True, genes) <= mb * 1.6, (n, genes)
    imp = {"models": ["vae", "gnn", "transformer"], "denoise_models": ["gnn"]}
    req = [impute_mem_request_mb(40_000, imp, 2000, 4000, workers=w) for w in (1, 2, 4)]
    assert req == sorted(req) and len(set(req)) == 3
    # one worker is the job's own process: nothing added; no models: no workers to count
    assert impute_mem_mb(40_000, 3, True, workers=1) == impute_mem_mb(40_000, 3, True)
    assert impute_mem_mb(40_000, 0, False, workers=4) == impute_mem_mb(40_000, 0, False)
