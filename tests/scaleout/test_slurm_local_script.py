"""scripts/slurm_local.sh (make slurm-up / slurm-down / slurm-status) without changing the machine: its usage
and non-root errors, and, when its cluster is up, that `up` and `status` leave the running daemons as they are
(idempotent). Starting and stopping a cluster is not done here (it needs root and changes /etc); the real-Slurm
tests (test_slurm_real.py) run on the cluster it starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm_local.sh"
RUN = Path("/run/slurm-lcdata")


def run(*args, user: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["bash", str(SCRIPT), *args]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_usage_error():
    r = run("start")
    assert r.returncode == 2 and "usage:" in r.stderr and "up|down|status" in r.stderr


@pytest.mark.parametrize("action", ["up", "down"])
def test_not_root_is_a_clear_error(action):
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("root without runuser: cannot run the script as another user")
        r = run(action, user="nobody")
    else:
        r = run(action)
    assert r.returncode == 1
    assert "must run as root" in r.stderr and f"sudo {SCRIPT} {action}" in r.stderr


def _ours_running() -> bool:
    def alive(name):
        f = RUN / f"{name}.pid"
        try:
            os.kill(int(f.read_text()), 0)
            return True
        except (OSError, ValueError):
            return False
    return alive("slurmctld") and alive("slurmd")


@pytest.mark.skipif(not (os.geteuid() == 0 and _ours_running()),
                    reason="the script's cluster is not running here as root (`make slurm-up` starts it)")
def test_up_and_status_on_a_running_cluster_change_nothing():
    pids = {n: (RUN / f"{n}.pid").read_text() for n in ("slurmctld", "slurmd")}
    r = run("up")
    assert r.returncode == 0 and "already up" in r.stdout and "PARTITION" in r.stdout, r.stdout
    s = run("status")
    assert s.returncode == 0 and "slurmctld running" in s.stdout and "PARTITION" in s.stdout
    assert {n: (RUN / f"{n}.pid").read_text() for n in pids} == pids  # the same daemons
