"""Project exceptions: raised at the boundaries (config, ingest) with messages a user can act on."""

from __future__ import annotations

from pathlib import Path


class SpatialFuseError(Exception):
    """Base class of all errors the pipeline raises on purpose."""


class InputError(SpatialFuseError):
    """Bad user input: names the sample and the file, and says what is wrong."""

    def __init__(self, message: str, sample: str | None = None, path: str | Path | None = None):
        self.sample = sample
        self.path = str(path) if path is not None else None
        parts = []
        if sample is not None:
            parts.append(f"sample '{sample}'")
        if path is not None:
            parts.append(f"file '{path}'")
        prefix = ": ".join([", ".join(parts)]) + ": " if parts else ""
        super().__init__(prefix + message)


class ConfigError(SpatialFuseError):
    """Invalid configuration value; names the field."""


class AlignmentError(SpatialFuseError):
    """Registration impossible (e.g. no overlap between the sections)."""
