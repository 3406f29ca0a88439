"""A throw-away one-node SLURM cluster on localhost, for testing the SLURM executor profile.

Uses Debian's packages (``slurmctld slurmd slurm-client munge``) and needs root (slurmd
launches jobs as the submitting user; munged runs as user ``munge``). Everything lives in one
state folder: config, keys, sockets, spool, logs and pid files; ports are picked free at start,
so a system SLURM, if any, is left alone. Clients find the cluster through ``SLURM_CONF`` (see
:meth:`Cluster.env`), except inside jobs: the executor's job step drops every ``SLURM_*``
variable before its nested ``srun``, which then reads only ``/etc/slurm/slurm.conf``. So that
path is made a symlink to this cluster's config while it runs (only where no such file exists;
removed at stop).

From a shell::

    python tests/slurm_localhost.py start /tmp/sf-slurm   # prints: export SLURM_CONF=...
    python tests/slurm_localhost.py stop /tmp/sf-slurm

No accounting storage is configured, so ``sacct`` cannot report jobs: the executor must use
``slurm-status-command: squeue`` (profiles/slurm does), and ``MinJobAge`` keeps finished jobs
visible to squeue for 5 minutes.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "srun")
#: node size; RealMemory is declared (slurmd's hardware check is overridden): jobs are not
#: memory-limited here (no cgroups), the number only lets rules' mem_mb requests schedule
NODE_CPUS = 2
NODE_MEM_MB = 16000


def missing_tools() -> list[str]:
    """SLURM/munge programs not found on PATH (or /usr/sbin), plus 'root' when not root."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    out = [t for t in DAEMONS + CLIENTS if shutil.which(t, path=path) is None]
    try:
        pwd.getpwnam("munge")
    except KeyError:
        out.append("user 'munge'")
    if os.geteuid() != 0:
        out.append("root")
    if SYSTEM_CONF.exists() and not SYSTEM_CONF.is_symlink():
        out.append(f"no system config at {SYSTEM_CONF} (one exists: not touching it)")
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sbin(name: str) -> str:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or name


SLURM_CONF = """\
# written by tests/slurm_localhost.py: one node, no accounting, no cgroups
ClusterName=spatialfuse
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=300
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    """Start/stop munged + slurmctld + slurmd with all state under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.munge_dir = self.root / "munge"
        self.munge_socket = self.munge_dir / "munge.socket"

    def env(self) -> dict:
        """Environment for clients (sbatch, squeue, snakemake) talking to this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _run(self, *cmd: str, timeout: float = 30, check: bool = True):
        return subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True,
                              timeout=timeout, check=check)

    def start(self, timeout: float = 60) -> "Cluster":
        missing = missing_tools()
        if missing:
            raise RuntimeError(f"cannot start a SLURM cluster: missing {missing}")
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # munge must reach its folder
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(exist_ok=True)
        munge = pwd.getpwnam("munge")
        self.munge_dir.mkdir(exist_ok=True)
        os.chmod(self.munge_dir, 0o711)  # munged wants its socket folder traversable by all
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        for p in (self.munge_dir, key):
            os.chown(p, munge.pw_uid, munge.pw_gid)
        os.chmod(key, 0o400)
        subprocess.run(
            ["runuser", "-u", "munge", "--", _sbin("munged"), f"--socket={self.munge_socket}",
             f"--key-file={key}", f"--pid-file={self.munge_dir}/munged.pid",
             f"--log-file={self.munge_dir}/munged.log", f"--seed-file={self.munge_dir}/seed"],
            check=True, capture_output=True, text=True, timeout=30)
        self.conf.write_text(SLURM_CONF.format(
            d=self.root, munge_socket=self.munge_socket, ctld_port=_free_port(),
            slurmd_port=_free_port(), cpus=NODE_CPUS, mem=NODE_MEM_MB))
        if SYSTEM_CONF.is_symlink():  # left over from a cluster that was not stopped
            SYSTEM_CONF.unlink()
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.symlink_to(self.conf)
        self._run(_sbin("slurmctld"), "-c", "-f", str(self.conf))
        self._run(_sbin("slurmd"), "-f", str(self.conf), "-N", "localhost")
        t0 = time.monotonic()
        state = ""
        while time.monotonic() - t0 < timeout:
            p = self._run("sinfo", "-h", "-n", "localhost", "-o", "%T", check=False, timeout=10)
            state = p.stdout.strip()
            if p.returncode == 0 and state.rstrip("*") in ("idle", "mixed", "allocated"):
                return self
            time.sleep(1)
        log = "\n".join(self.logs())
        self.stop()
        raise RuntimeError(f"SLURM node not idle after {timeout:.0f}s (state '{state}')\n{log}")

    def logs(self, tail: int = 30) -> list[str]:
        out = []
        for f in ("slurmctld.log", "slurmd.log", "munge/munged.log"):
            p = self.root / f
            if p.exists():
                lines = p.read_text(errors="replace").splitlines()[-tail:]
                out.append(f"--- {p}\n" + "\n".join(lines))
        return out

    def _kill_pidfile(self, pidfile: Path, timeout: float = 15) -> None:
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self, remove: bool = False) -> None:
        """Cancel leftover jobs, stop the three daemons (by their pid files)."""
        if self.conf.exists():
            self._run("scancel", "--full", "--quiet", "-u", pwd.getpwuid(os.getuid()).pw_name,
                      check=False, timeout=10)
        for pidfile in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            self._kill_pidfile(self.root / pidfile)
        if SYSTEM_CONF.is_symlink() and SYSTEM_CONF.resolve() == self.conf.resolve():
            SYSTEM_CONF.unlink()
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(__doc__)
        return 2
    c = Cluster(argv[1])
    if argv[0] == "start":
        c.start()
        print(f"export SLURM_CONF={c.conf}")
    else:
        c.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
