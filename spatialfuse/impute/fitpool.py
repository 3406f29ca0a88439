"""The impute stage's joint-model fits, in this process or in parallel worker processes.

Both cross-validations of the stage (denoising and cross-modal) refit each joint model once per
fold: 20 fits with the defaults, 85–90 % of the job's time at Visium HD sizes. The fits of one
run are independent of each other, so :class:`FoldFits` runs them side by side in ``workers``
processes. Each fit runs on one CPU thread there as here, from the same inputs and seed, so the
numbers are the same to the bit however many workers there are (``tests/test_impute.py``
checks it); only the time changes. The stage submits the fits of both cross-validations when
it starts, so the workers fit while it smooths, scores and fits the baselines; it takes each
result (:meth:`Submitted.take`) when it gets to it.

Workers are *spawned* (a fresh interpreter each, not a fork of this one: torch's and the BLAS
libraries' thread pools are not safe across ``fork``). Each reads the paired AnnData once, when
it starts, from h5ad copies in a temporary folder (``$TMPDIR``, removed at the end), and its
log records come back to this process's handlers (the rule's log file), so each fit's progress
lines appear as they would in one process. A GPU (``device``
``cuda``) keeps the fits in this process, one after the other: they would share one device.
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing as mp
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Self

import numpy as np

log = logging.getLogger(__name__)

_DATA: dict = {}  # in a worker: the paired AnnData, set once by _start_worker


def _start_worker(folder: str, queue, level: int) -> None:
    """Worker initialiser: read the inputs, send every log record back through ``queue``."""
    import anndata as ad

    _DATA["rna"] = ad.read_h5ad(Path(folder) / "rna.h5ad")
    _DATA["msi"] = ad.read_h5ad(Path(folder) / "msi.h5ad")
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(logging.handlers.QueueHandler(queue))
    root.setLevel(level)


def _fit_in_worker(job: dict):
    from ..models.api import fixed_threads
    from .crossmodal import model_fold

    with fixed_threads():  # one thread, as run_impute's own fits
        out, genes, seconds = model_fold(rna=_DATA["rna"], msi=_DATA["msi"], **job)
    # the predictions become float32 layers (the same rounding here as there); halved, the
    # results that wait for the stage to take them hold half the memory
    for key in ("rna", "msi"):
        if key in out:
            out[key] = out[key].astype(np.float32)
    return out, genes, seconds


class Submitted:
    """Results of submitted fits, taken in the order of their jobs. Each :meth:`take` names the
    fit it expects (model and held-out spots), so a consumer out of step with the jobs fails
    loudly instead of taking another fold's predictions."""

    def __init__(self, jobs: list[dict], results: Iterator[tuple]):
        self._jobs = iter(jobs)
        self._results = results

    def take(self, name: str, test: np.ndarray) -> tuple:
        """The next result (``model_fold``'s), which must be model ``name``'s fit holding out
        ``test``."""
        job = next(self._jobs, None)
        if job is None or job["name"] != name or not np.array_equal(job["test"], test):
            nxt = "none" if job is None else (
                f"a {job['name']} fit" + (" of another fold" if job["name"] == name else ""))
            raise RuntimeError(
                f"impute: joint-model fit results out of step: expected a {name} fit, the next "
                f"submitted is {nxt} (a bug, please report)")
        return next(self._results)


class FoldFits:
    """Runs :func:`.crossmodal.model_fold` jobs (its keyword arguments but ``rna``/``msi``).

    ``workers`` <= 1, or ``device`` ``cuda``: one after the other in this process. Otherwise in
    that many spawned processes, started on first use and kept for every later :meth:`map` of
    the same ``with`` block. Results come back in the order of the jobs.
    """

    def __init__(self, rna, msi, workers: int = 1, device: str = "cpu"):
        from ..models.api import resolve_device

        self.rna, self.msi = rna, msi
        self.workers = 1 if resolve_device(device) == "cuda" else max(int(workers or 1), 1)
        self._pool = None
        self._listener = None
        self._folder = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        # the stage failed: the fits still running are of no use, so they are stopped instead
        # of holding the error back until they finish (minutes each at Visium HD sizes)
        self.close(abort=exc_type is not None)

    def _start(self) -> None:
        from concurrent.futures import ProcessPoolExecutor

        # the inputs travel as files: an AnnData taken from a MuData does not unpickle, and a
        # worker that fails while it starts hangs the pool instead of breaking it
        self._folder = tempfile.mkdtemp(prefix="spatialfuse-fits-")
        self.rna.write_h5ad(Path(self._folder) / "rna.h5ad")
        self.msi.write_h5ad(Path(self._folder) / "msi.h5ad")
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        root = logging.getLogger()
        self._listener = logging.handlers.QueueListener(queue, *root.handlers,
                                                        respect_handler_level=True)
        self._listener.start()
        log.info("impute: joint-model fits in %d worker processes (one thread each)",
                 self.workers)
        self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx,
                                         initializer=_start_worker,
                                         initargs=(self._folder, queue,
                                                   root.getEffectiveLevel()))

    def map(self, jobs: Iterable[dict]) -> Submitted:
        """``model_fold``'s result for each job, in order: all jobs are submitted to the workers
        now; in this process (one worker) each runs when its result is taken."""
        jobs = list(jobs)
        if self.workers <= 1 or len(jobs) <= 1:
            from .crossmodal import model_fold

            return Submitted(jobs, (model_fold(rna=self.rna, msi=self.msi, **job)
                                    for job in jobs))
        if self._pool is None:
            self._start()
        return Submitted(jobs, self._results(self._pool.map(_fit_in_worker, jobs)))

    def _results(self, results: Iterator[tuple]) -> Iterator[tuple]:
        from concurrent.futures.process import BrokenProcessPool

        try:
            yield from results
        except BrokenProcessPool as e:  # a worker killed, most often for memory
            raise MemoryError(
                f"impute: a worker process of the joint-model fits ended abruptly ({e}); "
                f"the usual cause is memory (each of the {self.workers} workers holds torch, "
                "the paired data and one fit; any other cause is printed above). Give the job "
                "more memory or fewer threads (snakemake --set-threads impute=1).") from e

    def close(self, abort: bool = False) -> None:
        """Stop the workers (``abort``: at once, their running fits lost) and remove the
        inputs' copies."""
        if self._pool is not None:
            if abort:
                _terminate_workers(self._pool)
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


def _terminate_workers(pool) -> None:
    """SIGTERM every worker process of ``pool`` (a ``ProcessPoolExecutor``), their running
    tasks lost. Python 3.14 has a public method for it; before that the executor has no public
    way to stop running tasks, and its process table is read instead."""
    stop = getattr(pool, "terminate_workers", None)
    if stop is not None:
        stop()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()
