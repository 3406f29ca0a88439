"""One logging set-up shared by every rule adapter (log file + excepthook)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from .errors import SpatialFuseError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(log_path: str | Path | None = None, level: int = logging.INFO) -> logging.Logger:
    """Send log records to ``log_path`` (the rule's ``log:``) and stderr; install an excepthook.

    The excepthook writes any uncaught traceback into the log. A :class:`SpatialFuseError` (bad
    input, bad config) is reported as one clear line, since it is the user's to fix.
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(level)
    fmt = logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S")
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_path, mode="w")
        fh.setFormatter(fmt)
        root.addHandler(fh)
    sh = logging.StreamHandler(sys.stderr)
    sh.setFormatter(fmt)
    root.addHandler(sh)
    for noisy in ("matplotlib", "numba", "h5py", "fontTools", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    def _hook(exc_type, exc, tb):
        log = logging.getLogger("spatialfuse")
        if issubclass(exc_type, SpatialFuseError):
            log.error("%s: %s", exc_type.__name__, exc)
            sys.stderr.write(f"\nSpatialFuse error: {exc}\n")
        else:
            log.critical("uncaught exception", exc_info=(exc_type, exc, tb))
        sys.exit(1)

    sys.excepthook = _hook
    return logging.getLogger("spatialfuse")


class Progress:
    """Periodic progress lines (``every`` seconds) for long loops: step, total, elapsed, extras."""

    def __init__(self, name: str, total: int | None = None, every: float = 5.0, logger=None):
        self.name, self.total, self.every = name, total, every
        self.log = logger or logging.getLogger("spatialfuse")
        self.t0 = time.perf_counter()
        self._last = -1e9

    def update(self, step: int, force: bool = False, **info) -> None:
        now = time.perf_counter()
        if force or now - self._last >= self.every:
            self._last = now
            extra = " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items()
            )
            tot = f"/{self.total}" if self.total else ""
            self.log.info("%s %d%s elapsed=%.1fs %s", self.name, step, tot, now - self.t0, extra)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0
