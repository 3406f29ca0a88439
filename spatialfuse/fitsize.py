"""How many spots a joint-model fit's mini-batch holds, and so how many optimiser steps an epoch
takes.

Torch-free on purpose: the fits (:func:`spatialfuse.models.api.fit`) use it, and so does the job
cost model that the Snakefile imports (:func:`spatialfuse.jobcost.impute_fit_steps`) to size an
impute job's runtime request, without loading torch to build the DAG. One rule in one place, so
the request counts the steps the fits will take.
"""

from __future__ import annotations

import math

#: The models' default ``batch_size`` (the largest mini-batch; the config schema carries it too).
DEFAULT_BATCH = 128
#: Mini-batches per epoch at least: a small section takes a smaller batch rather than one or
#: two optimiser steps per epoch.
MIN_STEPS_PER_EPOCH = 8
#: Smallest mini-batch, whatever the section's size.
MIN_BATCH = 16


def fit_batch_size(n_train: int, largest: int) -> int:
    """Mini-batch of a fit on ``n_train`` training spots: the configured ``largest`` (the
    models' ``batch_size``), smaller when that gives fewer than :data:`MIN_STEPS_PER_EPOCH`
    steps per epoch, never below :data:`MIN_BATCH`."""
    return int(min(int(largest), max(MIN_BATCH, math.ceil(max(int(n_train), 0) / MIN_STEPS_PER_EPOCH))))


def steps_per_epoch(n_train: int, batch: int) -> int:
    """Optimiser steps of one epoch over ``n_train`` training spots in batches of ``batch``
    (the last one partial)."""
    return max(1, math.ceil(max(int(n_train), 0) / int(batch)))
