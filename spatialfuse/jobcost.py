"""What a job asks a cluster for, from the size of its section (Snakemake ``resources:``).

Imported by the workflow when it is parsed: standard library only.

The impute job is the one whose time grows with the section far beyond a fixed request: a
Visium section (~5,000 spots) needs minutes, a Visium HD section (10^4–10^5 bins) hours. Its
``runtime`` request is built from the measured CPU time at Visium HD sizes
(``benchmarks/impute_scale_benchmark.py``; ``benchmarks/RESULTS.md``, "Impute at Visium HD
sizes"), with a safety factor for slower nodes, never below the fixed minimum that every
section of Visium size fits in. Its ``mem_mb`` request grows with the spots too (peak memory
measured the same way): a request by input file size alone cannot tell a sparse HD file's
10^5 bins, each of which becomes a dense row of the scored genes in every method's
prediction. Its ``threads`` are the worker processes its joint-model fold fits run in
(:func:`impute_workers`): they shorten the time (rounds of fits side by side) and each adds
its own memory; the numbers computed do not depend on them.
"""

from __future__ import annotations

import math
from pathlib import Path

from .fitsize import DEFAULT_BATCH, fit_batch_size, steps_per_epoch

#: Minutes every impute job may take at least (demo and Visium sections need a few).
IMPUTE_MIN_MINUTES = 60
#: CPU seconds of the stage without joint models (smoothing, baselines, scores) at 10^4 spots
#: and 2,000 scored genes, and its growth exponent in the number of spots (measured at 10^4,
#: 2×10^4 and 4×10^4 bins: ×2.3 and ×2.5–2.6 per doubling, i.e. spots^1.2–1.35). Checked
#: again with the kriging reference in the stage (2026-12-05): 177, 421 and 874 s, 2.01, 3.49
#: and 6.23 GB peak, under this line and the memory line below at all three sizes.
IMPUTE_BASE_S_10K = 207.0
IMPUTE_BASE_EXPONENT = 1.35
#: CPU seconds per joint-model fit (one fold of the cross-modal or the denoising CV; 400
#: optimiser steps): a fixed part (training is capped in steps) and a part per 10^4 spots
#: (predictions, embeddings and hybrids of every spot). From the default models (20 fits) at
#: 5,041 and 10^4 bins: 604 and 763 s on top of the stage without models (111 and 207 s).
IMPUTE_FIT_S_FIXED = 22.0
IMPUTE_FIT_S_10K = 16.0
#: Optimiser steps of each fit behind those constants (impute.model_max_steps).
IMPUTE_FIT_STEPS = 400
#: Training spots of a cross-modal fold fit per spot of the section (4 of 5 blocks, less the
#: buffer around the held-out one and the validation tenth): the VAE's 30 epochs took 1,200–
#: 1,260 steps of 128 spots on a 7,473-square section (2026-12-05), 0.70 of its squares.
IMPUTE_TRAIN_FRACTION = 0.70
#: Largest mini-batch of the fits (the models' default ``batch_size``); smaller sections take
#: smaller ones by the fits' own rule (:func:`spatialfuse.fitsize.fit_batch_size`).
IMPUTE_BATCH = DEFAULT_BATCH
#: Requested time = this × the estimate (slower nodes, other jobs sharing them). The constants
#: above were fitted on the fastest day of a shared 2-core host; one-process runs of the default
#: models measured since took 1.96 × the estimate (19,881 bins, 2026-12-03), 1.70 × and, after
#: two speed-ups, 1.42 × (19,881 bins, 2026-12-04), 1.50 × (40,000 bins, beside other work): a
#: request of 2 × left as little as 2 % to spare, 3 × leaves ≥ 1.5 × over every one of them.
IMPUTE_SAFETY = 3.0


def count_rows(table: str | Path) -> int | None:
    """Data rows of a TSV with a header (align's ``coverage.tsv`` has one per ST spot), or
    None when the file does not exist yet: Snakemake builds the DAG before align has run and
    evaluates a job's resources again once its inputs exist."""
    try:
        with open(table, "rb") as fh:
            return max(sum(1 for _ in fh) - 1, 0)
    except FileNotFoundError:
        return None


def input_mb(paths) -> float:
    """MiB of a job's input files (``input`` of a resource function), as Snakemake's
    ``input.size_mb`` counts them, but read directly: files not written yet count 0 (Snakemake
    evaluates a job's resources again once its inputs exist). ``input.size_mb`` itself starts an
    asynchronous size lookup that fails inside ``snakemake --report`` (its DAG is built in an
    event loop already) and leaves a "coroutine was never awaited" RuntimeWarning per rule."""
    total = 0
    for p in paths:
        try:
            total += Path(p).stat().st_size
        except FileNotFoundError:
            continue
    return total / 1024 / 1024


def impute_model_fits(impute: dict, workers: int = 1) -> int:
    """Joint-model fits of an impute job one after the other, from its validated config
    section (schema defaults filled in): blocks × ``models`` × ``model_seeds`` of the
    cross-modal CV + folds × ``denoise_models``, shared out among ``workers`` processes
    (rounds of ``workers`` fits side by side: all of them with 1). The stage submits both
    CVs' fits together, so they share the rounds."""
    fits = (int(impute["n_blocks"]) * len(impute["models"]) * int(impute.get("model_seeds", 1))
            + int(impute["denoise_folds"]) * len(impute["denoise_models"]))
    return math.ceil(fits / max(int(workers), 1))


#: Most worker processes an impute job's fold fits run in (its ``threads``; Snakemake caps
#: them at ``--cores``, ``--set-threads impute=N`` overrides).
IMPUTE_MAX_WORKERS = 4


def impute_workers(impute: dict, device: str) -> int:
    """Threads for the impute job: processes its joint-model fold fits run in side by side
    (:class:`spatialfuse.impute.fitpool.FoldFits`), at most :data:`IMPUTE_MAX_WORKERS` and
    its fits (both cross-validations'); 1 without joint models and with ``device`` ``cuda``
    (the fits share the one GPU, one after the other). The numbers do not depend on it:
    every fit runs on one thread from the same seed wherever it runs."""
    if device == "cuda":
        return 1
    return max(1, min(IMPUTE_MAX_WORKERS, impute_model_fits(impute)))


def impute_fit_steps(n_spots: int | None, impute: dict) -> int:
    """Optimiser steps of each fold fit of an impute job (its validated config section): the
    step cap ``model_max_steps`` (null: the models' own 500), raised to ``model_min_epochs``
    epochs of the fit's training spots, at most ``model_min_epochs_max_steps``."""
    cap = int(impute.get("model_max_steps") or 500)
    floor = int(impute.get("model_min_epochs") or 0)
    if not floor or not n_spots:
        return cap
    n_train = round(IMPUTE_TRAIN_FRACTION * n_spots)
    batch = fit_batch_size(n_train, IMPUTE_BATCH)
    need = floor * steps_per_epoch(n_train, batch)
    limit = impute.get("model_min_epochs_max_steps")
    return int(max(cap, need if not limit else min(need, int(limit))))


def impute_cpu_seconds(n_spots: int, n_fits: int, fit_steps: int = IMPUTE_FIT_STEPS) -> float:
    """Estimated CPU seconds of the impute job for ``n_spots`` spots and ``n_fits`` joint-model
    fits (folds × models of the cross-modal CV + folds × models of the denoising CV) of
    ``fit_steps`` optimiser steps each (:func:`impute_fit_steps`; the fixed part of a fit
    grows with its steps). Checked on a 7,473-spot section: 1,732 s estimated for its 20 fits
    at the VAE's 1,230 steps (the GNN's took 856–1,010), 1,878 s measured (fit workers
    included); 819 s and 923 s at 400 steps (2026-12-05)."""
    x = max(n_spots, 0) / 1e4
    fixed = IMPUTE_FIT_S_FIXED * fit_steps / IMPUTE_FIT_STEPS
    return IMPUTE_BASE_S_10K * x ** IMPUTE_BASE_EXPONENT + n_fits * (fixed + IMPUTE_FIT_S_10K * x)


def impute_runtime_minutes(n_spots: int | None, n_fits: int, attempt: int = 1,
                           fit_steps: int = IMPUTE_FIT_STEPS) -> int:
    """Minutes to request for the impute job: the estimate × :data:`IMPUTE_SAFETY`, at least
    :data:`IMPUTE_MIN_MINUTES`, times the attempt (a job retried after running out of time
    asks for more). ``n_spots`` None (not known yet): the minimum."""
    est = (0.0 if n_spots is None
           else IMPUTE_SAFETY * impute_cpu_seconds(n_spots, n_fits, fit_steps) / 60)
    return int(math.ceil(max(IMPUTE_MIN_MINUTES, est) * max(int(attempt), 1)))


#: Peak memory of the stage without joint models at 10^4 spots (MB), growing linearly with the
#: spots, for :data:`IMPUTE_MEM_GENES` scored genes (measured at 5,041, 10^4, 19,881 and
#: 4×10^4 bins: 1.33, 2.16, 3.8 and 7.12 GB).
IMPUTE_MEM_MB_FIXED = 500.0
IMPUTE_MEM_MB_10K = 1650.0
#: What the joint models add: a fixed part once any is fitted (torch, one fit's own arrays)
#: and, per model of the cross-modal CV, per 10^4 spots (its out-of-fold predictions of every
#: spot, its own and its ``<model>_ridge`` hybrid's, held until the CV ends). From the default
#: models (3 cross-modal + the denoising GNN) at 5,041 and 10^4 bins: 2.27 and 3.45 GB peak,
#: 0.94 and 1.29 GB above the stage without models (whose peaks were measured before its
#: out-of-fold arrays became float32: an upper bound).
IMPUTE_MODEL_MEM_MB_FIXED = 584.0
IMPUTE_MODEL_MEM_MB_10K = 235.0
#: Each worker process of the fold fits (``workers`` > 1; the parent then fits nothing, and
#: its estimate above stays an upper bound: 1.09, 1.66 and 2.97 GB measured at 2,500, 5,041
#: and 10^4 bins with 2 workers): torch, the paired data, then one fit at a time (the model's
#: weights and optimiser state grow with the genes, its arrays with spots × genes). Largest
#: worker's peak with the default models, 2 workers: 1.37, 1.45 and 1.81 GB at 2,500, 5,041
#: and 10^4 bins × 2,000 genes; 0.61 GB at 400 spots × 300 genes. Checked afterwards at
#: 19,881 bins: 2.61 GB measured, 2.60 GB by the line (one process: 5.78 GB measured, 5.77
#: GB estimated; the parent beside 2 workers 5.48 GB).
IMPUTE_WORKER_MEM_MB_FIXED = 600.0
IMPUTE_WORKER_MEM_MB_GENES = 550.0  # per IMPUTE_MEM_GENES scored genes
IMPUTE_WORKER_MEM_MB_10K = 730.0
#: Each seed beyond the first of ``impute.model_seeds``, per cross-modal model and 10^4 spots ×
#: 2,000 genes: its fits' results may wait in the parent until the CV takes them, their
#: out-of-fold predictions (float32, every spot once: 80 MB) and latents. The size of those
#: arrays, not a measured peak; the first seed's results are inside the measured lines above.
IMPUTE_SEED_MEM_MB_10K = 90.0
#: Scored genes of those measurements: the per-spot parts scale with the genes scored.
IMPUTE_MEM_GENES = 2000
#: Requested memory = this × the estimate.
IMPUTE_MEM_SAFETY = 1.5


def impute_scored_genes(config: dict) -> int:
    """Genes the impute job predicts and scores, from the validated config: the highly
    variable genes of ``ingest.st.n_top_genes``, at most ``impute.n_top_genes`` (an upper
    bound: a section may have fewer genes)."""
    n = int(config["ingest"]["st"]["n_top_genes"])
    cap = config["impute"].get("n_top_genes")
    return n if cap is None else min(n, int(cap))


def impute_mem_mb(n_spots: int | None, n_models: int, any_models: bool,
                  genes: int = IMPUTE_MEM_GENES, workers: int = 1, model_seeds: int = 1) -> float:
    """Estimated peak memory (MB) of the impute job for ``n_spots`` spots, ``n_models`` joint
    models in the cross-modal CV, ``any_models`` (any joint model fitted at all, denoising
    included), ``genes`` scored genes, ``workers`` fit processes (more than 1: each adds
    its own) and ``model_seeds`` fits per fold; 0 when ``n_spots`` is None (not known yet)."""
    if n_spots is None:
        return 0.0
    x = max(n_spots, 0) / 1e4 * max(genes, 1) / IMPUTE_MEM_GENES
    est = IMPUTE_MEM_MB_FIXED + IMPUTE_MEM_MB_10K * x
    if any_models:
        est += IMPUTE_MODEL_MEM_MB_FIXED + n_models * IMPUTE_MODEL_MEM_MB_10K * x
        est += (max(int(model_seeds), 1) - 1) * n_models * IMPUTE_SEED_MEM_MB_10K * x
        if workers > 1:
            est += workers * (IMPUTE_WORKER_MEM_MB_FIXED + IMPUTE_WORKER_MEM_MB_10K * x
                              + IMPUTE_WORKER_MEM_MB_GENES * max(genes, 1) / IMPUTE_MEM_GENES)
    return est


def impute_mem_request_mb(n_spots: int | None, impute: dict, genes: int, floor_mb: float,
                          attempt: int = 1, workers: int = 1) -> int:
    """``mem_mb`` to request for the impute job: the estimate for the section's spots and
    ``workers`` (its threads) × :data:`IMPUTE_MEM_SAFETY`, at least ``floor_mb`` (the rule's
    request by input size), times the attempt (a job retried after running out of memory asks
    for more)."""
    n_models = len(impute["models"])
    any_models = bool(impute["models"] or impute["denoise_models"])
    est = IMPUTE_MEM_SAFETY * impute_mem_mb(n_spots, n_models, any_models, genes, workers,
                                            int(impute.get("model_seeds", 1)))
    return int(math.ceil(max(float(floor_mb), est) * max(int(attempt), 1)))
