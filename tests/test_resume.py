"""Resume: a run killed mid-way (SIGTERM, then SIGKILL) finishes on rerun with results
identical to an uninterrupted run, and no partially written output survives.

Snakemake marks every output of a running job in ``.snakemake/incomplete/``. On SIGTERM it
deletes the outputs of the jobs it had to stop; on SIGKILL it cannot, so the markers stay and
the next run refuses to start until told ``--rerun-incomplete`` (after ``--unlock``: the lock
of the killed run stays too), which deletes and recomputes those outputs.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from workflow_utils import assert_same_results, make_workdir, smk, smk_cmd

pytestmark = pytest.mark.workflow


def incomplete_markers(d: Path) -> set[str]:
    """Outputs Snakemake has flagged as being written by a job that has not finished."""
    inc = d / ".snakemake" / "incomplete"
    if not inc.exists():
        return set()
    return {base64.urlsafe_b64decode(f.name).decode() for f in inc.rglob("*") if f.is_file()}


def kill_when_partial(d: Path, stage: str, sig: int, log: Path, timeout: float = 300) -> set[str]:
    """Start the demo; as soon as a ``stage`` job has written some of its outputs but not
    finished, send ``sig`` to snakemake's whole process group. Returns the outputs that were
    flagged incomplete at that moment and existed on disk."""
    with open(log, "w") as fh:
        p = subprocess.Popen(smk_cmd(d, "--cores", "2"), stdout=fh, stderr=subprocess.STDOUT,
                             start_new_session=True)
    partial: set[str] = set()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout and p.poll() is None:
            partial = {f for f in incomplete_markers(d)
                       if f"/{stage}/" in f and (d / f).exists()}
            if partial:
                break
            time.sleep(0.02)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, sig)
        p.wait(timeout=120)
    assert partial, f"never saw a half-finished {stage} job:\n{log.read_text()[-3000:]}"
    return partial


def test_killed_run_resumes_to_identical_results(tmp_path, tiny_demo_run):
    d = make_workdir(tmp_path / "wd")

    # 1. SIGTERM while ingest is writing: snakemake stops and deletes what the job had written
    partial = kill_when_partial(d, "ingest", signal.SIGTERM, tmp_path / "sigterm.log")
    assert "Removing output files of failed job ingest" in (tmp_path / "sigterm.log").read_text()
    assert incomplete_markers(d) == set()
    left = [f for f in partial if (d / f).exists()]
    assert left == [], f"partial outputs survived SIGTERM: {left}"

    # 2. restart; SIGKILL while align is writing: nothing can clean up, but the half-written
    #    outputs stay flagged, and a plain rerun refuses to trust them
    partial = kill_when_partial(d, "align", signal.SIGKILL, tmp_path / "sigkill.log")
    assert partial <= incomplete_markers(d)
    smk(d, "--unlock")
    p = smk(d, "-n", check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "IncompleteFilesException" in out
    flagged = set(out.split("Incomplete files:")[1].split())
    assert partial <= flagged, (partial, flagged)

    # 3. resume: finishes, recomputes the flagged outputs, same numbers as never interrupted
    smk(d, "--cores", "2", "--rerun-incomplete")
    assert incomplete_markers(d) == set()
    assert (d / "results" / "report.html").exists()
    assert_same_results(tiny_demo_run, d)
    assert "Nothing to be done" in smk(d, "-n").stdout
