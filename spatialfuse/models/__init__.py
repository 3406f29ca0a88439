"""Stage 4: joint latent models of RNA + MSI per spot.

Every model is called through :func:`run_model` and returns the same things (the training
contract): an embedding (n_spots × d), a checkpoint (dict for ``torch.save``), a training log
table (epoch, losses, seconds) and a metrics dict.
"""

from .data import prepare_inputs
from .registry import MODEL_REGISTRY, run_model

__all__ = ["prepare_inputs", "MODEL_REGISTRY", "run_model"]
