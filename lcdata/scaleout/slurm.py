"""Waiting for the Slurm jobs of a run (``--wait``) and saying how each stage ended.

`run_stages` submits a run's stages as datatrove job arrays chained by ``--dependency=afterok``; with
``wait=True`` it then calls `wait_for_stages`, which:

1. polls ``squeue -h -r -j IDS`` (the stages' array jobs and datatrove's ``merge_stats`` job of each stage)
   every ``poll`` seconds until none is pending or running, printing a line of task states per stage when
   it changes (a reason a job cannot start, e.g. ``PENDING (PartitionTimeLimit)``, shows there); a job held on a dependency that can no longer be
   satisfied (reason ``DependencyNeverSatisfied``: the stage before it failed) does not count as waiting;
2. cancels (``scancel``) those held jobs, so that nothing of the run is left in the queue for ever;
3. takes each stage in order and reads datatrove's completion markers (``LOGS/<stage>/completions``): the
   first stage with a task not completed is the failure. Its tasks' Slurm states come from ``sacct`` where the
   cluster keeps accounting, else from ``scontrol show job`` (finished jobs stay there ``MinJobAge`` seconds),
   and the failure (raised by `run_stages` as `StageFailed`) names every such task with its state (FAILED,
   TIMEOUT, CANCELLED, OUT_OF_MEMORY, NODE_FAIL...), its datatrove log (``LOGS/<stage>/logs/task_NNNNN.log``)
   and its Slurm log (``LOGS/<stage>/slurm_logs/JOB_INDEX.out``), what to do, and the stages that never
   started.

Completion markers, not Slurm states, decide success: a task requeued by Slurm that completed later counts as
done, and a task Slurm reports COMPLETED without a marker (it did not run its rank) counts as not done.
Nothing is re-submitted here: the rerun of the same command submits the incomplete tasks only.

Cost: one ``squeue`` call per poll (a few ms on the controller), one ``sacct``/``scontrol`` call per failed
stage at the end. A stage of more than datatrove's ``max_array_size`` (1001) tasks is several array jobs, each
after the one before (``afterany``): waiting for the last waits for all, but the states of tasks in the
earlier ones are not looked up (the message gives their array index; `sacct` has them).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
import time

from ..errors import LcdataError

ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING",
          "SUSPENDED", "STAGE_OUT", "SIGNALING"}
HINTS = {
    "TIMEOUT": "the time limit (--time {time}) was reached: rerun the same command with a longer --time (or more "
               "--tasks, so that each task has less to do)",
    "CANCELLED": "cancelled (scancel, or the cluster): rerun the same command",
    "FAILED": "the task raised an error: read its log, fix the cause and rerun the same command",
    "OUT_OF_MEMORY": "out of memory: rerun the same command with a larger --mem-per-cpu-gb (or more --tasks)",
    "NODE_FAIL": "its node failed: rerun the same command",
    "PREEMPTED": "preempted: rerun the same command",
    "BOOT_FAIL": "its node did not boot: rerun the same command",
    "DEADLINE": "its deadline passed: rerun the same command",
}


def _slurm(args: list[str], what: str, tries: int = 5, gone: str | None = None) -> str:
    """stdout of a Slurm command; retried a few times (a busy controller answers late), then a clear error.
    An error message holding ``gone`` reads as an empty answer (squeue -j on jobs the controller forgot)."""
    if shutil.which(args[0]) is None:
        raise LcdataError(f"{args[0]!r} is not on PATH: waiting for Slurm jobs needs the Slurm client commands "
                          "(run on a login node of the cluster)")
    err = ""
    for i in range(tries):
        p = subprocess.run(args, capture_output=True, text=True)
        if p.returncode == 0:
            return p.stdout
        err = (p.stderr or p.stdout).strip()
        if gone and gone in err:
            return ""
        time.sleep(min(5.0, 0.5 * 2**i))
    raise LcdataError(f"{what}: `{' '.join(args)}` failed: {err}")


def queue(job_ids: list[str]) -> list[tuple[str, str, str, str]]:
    """(job id, state, reason, dependency) of every pending or running task of ``job_ids`` (arrays one row per
    task; finished jobs are not listed)."""
    if not job_ids:
        return []
    out = _slurm(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i|%T|%r|%E"], "polling the jobs",
                 gone="Invalid job id")  # every job ended longer ago than the cluster's MinJobAge
    return [tuple(line.split("|", 3)) for line in out.splitlines() if line.count("|") >= 3]


def dependency_targets(dependency: str) -> set[str]:
    """The job ids a ``%E`` dependency names: ``afterok:12_*(unfulfilled),afterany:13(failed)`` -> {12, 13}."""
    out = set()
    for part in dependency.replace("?", ",").split(","):
        kind, _, target = part.partition(":")
        if kind.startswith("after") and target:
            out.add(target.split("_")[0].split("(")[0])
    return out


def held_for_ever(rows: list[tuple[str, str, str, str]]) -> set[str]:
    """The pending jobs (ids as listed) that will never start: their dependency failed, or names a job that will
    never start itself (a chain: a stage after a failed one, and that stage's merge_stats job)."""
    held = {r[0] for r in rows if r[1] == "PENDING" and (r[2] == "DependencyNeverSatisfied" or "(failed)" in r[3])}
    while True:
        held_jobs = {h.split("_")[0] for h in held}
        more = {r[0] for r in rows if r[1] == "PENDING" and r[0] not in held and r[2] == "Dependency"
                and dependency_targets(r[3]) & held_jobs}
        if not more:
            return held
        held |= more


def merge_jobs(job_ids: list[str]) -> list[str]:
    """datatrove's ``merge_stats`` jobs of these array jobs: the queued jobs whose dependency names one of them
    (``afterok:ID``, pending); a merge job already running or finished is not waited for."""
    if not job_ids:
        return []
    out = _slurm(["squeue", "-h", "-u", getpass.getuser(), "-o", "%i|%E"], "listing the queue")  # ours only
    ids = set(job_ids)
    found: set[str] = set()
    while True:  # and the merge_stats jobs of those merge_stats jobs' ... (none today; cheap to follow)
        more = set()
        for line in out.splitlines():
            jid, _, dep = line.partition("|")
            jid = jid.split("_")[0]
            if jid not in ids and jid not in found and dependency_targets(dep) & (ids | found):
                more.add(jid)
        if not more:
            return sorted(found)
        found |= more


def task_states(job_id: str) -> dict[int, tuple[str, str]]:
    """Array index -> (state, reason or exit code) of the finished tasks of array job ``job_id``: ``sacct`` where
    accounting is kept, else ``scontrol show job`` (within MinJobAge); {} when neither knows it."""
    states: dict[int, tuple[str, str]] = {}
    if shutil.which("sacct"):
        p = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,ExitCode"],
                           capture_output=True, text=True)
        if p.returncode == 0:
            for line in p.stdout.splitlines():
                jid, state, code = (line.split("|") + ["", ""])[:3]
                idx = jid.partition("_")[2]
                if idx.isdigit():
                    states[int(idx)] = (state.split()[0] if state else "UNKNOWN", f"exit code {code}")
            if states:
                return states
    if shutil.which("scontrol") is None:
        return states
    p = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True)
    if p.returncode == 0:
        for line in p.stdout.splitlines():
            kv = dict(w.split("=", 1) for w in line.split() if "=" in w)
            idx = kv.get("ArrayTaskId", "")
            if idx.isdigit():
                states[int(idx)] = (kv.get("JobState", "UNKNOWN"),
                                    f"reason {kv.get('Reason', '?')}, exit code {kv.get('ExitCode', '?')}")
    return states


def wait_for_stages(stages: list, executors: list, *, time_limit: str | None = None, poll: float = 1.0,
                    log=None) -> tuple[str, str] | None:
    """Block until the submitted stages have ended; None when every task completed, else (the first stage with
    incomplete tasks, what happened: each task's state and logs, the stages that did not start), after
    cancelling the jobs that can no longer start (`run_stages` raises it as `StageFailed`)."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    arrays = {st.name: str(e.job_id) for st, e in zip(stages, executors) if e.job_id not in (None, -1, "-1")}
    ids = list(arrays.values())
    if not ids:
        return None
    ids += merge_jobs(ids)
    log("lcdata: waiting for Slurm jobs " + ", ".join(f"{j} ({n})" for n, j in arrays.items())
        + f" (and {len(ids) - len(arrays)} merge_stats)")
    last = ""
    try:
        while True:
            rows = queue(ids)
            held = held_for_ever(rows)
            if not [r for r in rows if r[1] in ACTIVE and r[0] not in held]:
                break
            now = progress(rows, arrays)
            if now != last:  # a line when something changed: a reason a job cannot start is seen here
                log(f"lcdata: {time.strftime('%H:%M:%S')} {now}")
                last = now
            time.sleep(poll)
    except KeyboardInterrupt:
        log(f"lcdata: stopped waiting; the jobs keep running (squeue; scancel {' '.join(ids)} stops them)")
        raise
    if held:
        subprocess.run(["scancel", *sorted({h.split("_")[0] for h in held})], capture_output=True)
    for i, (st, e) in enumerate(zip(stages, executors)):
        left = e.get_incomplete_ranks(skip_completed=True)
        if not left:
            continue
        later = _not_started(stages[i + 1:])
        return st.name, failure_report(e, left, arrays.get(st.name), time_limit) + (f"\n{later}" if later else "")
    return None


def progress(rows: list[tuple[str, str, str, str]], arrays: dict[str, str]) -> str:
    """One line of the stages' task states, e.g. ``stats: 2 RUNNING; stats-merge: 1 PENDING (Dependency)``."""
    stage_of = {j: name for name, j in arrays.items()}
    parts = []
    for name in arrays:
        mine = [r for r in rows if stage_of.get(r[0].split("_")[0]) == name]
        if not mine:
            continue
        counts: dict[str, int] = {}
        for r in mine:
            key = r[1] if r[1] != "PENDING" else f"PENDING ({r[2]})"
            counts[key] = counts.get(key, 0) + 1
        parts.append(f"{name}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return "; ".join(parts) or "the merge_stats jobs (run statistics)"


def failure_report(e, left: list[int], job_id: str | None, time_limit: str | None) -> str:
    """What happened to the incomplete tasks ``left`` of the stage run by executor ``e`` (array job ``job_id``):
    per task (at most 10), its Slurm array task, state, a hint, its datatrove log and its Slurm log."""
    logs = e.logging_dir.resolve_paths("")
    if job_id is None:
        return f"tasks {left} have no completion marker in {logs} and no job was submitted for them"
    try:
        with e.logging_dir.open("ranks_to_run.json", "r") as fh:
            ranks = json.load(fh)
    except OSError:
        ranks = []
    states = task_states(job_id)
    # datatrove's submission: array index i runs ranks_to_run[i*tasks_per_job ...]; more than max_array_size
    # indices are split over several array jobs (RUN_OFFSET k), of which e.job_id is the last
    per_job = max(1, getattr(e, "tasks_per_job", 1))
    n_idx = -(-len(ranks) // per_job)
    width = min(n_idx, e.max_array_size) if e.max_array_size != -1 else n_idx
    last_part = (n_idx - 1) // max(1, width)
    lines = []
    for rank in left[:10]:
        where, state, detail, slurm_log = "", "NOT SUBMITTED", "not in this submission", "-"
        if rank in ranks:
            part, idx = divmod(ranks.index(rank) // per_job, max(1, width))
            if part == last_part:
                where = f" (Slurm job {job_id}_{idx})"
                state, detail = states.get(idx, ("UNKNOWN", "not known to Slurm any more"))
                slurm_log = os.path.join(e.slurm_logs_folder, f"{job_id}_{idx}.out")
            else:
                where = f" (array index {idx} of the stage's array job number {part + 1} of {last_part + 1})"
                state, detail = "UNKNOWN", "an earlier array job of this stage: see sacct"
                slurm_log = os.path.join(e.slurm_logs_folder, f"*_{idx}.out")
        hint = HINTS.get(state, "read its logs, then rerun the same command").format(time=time_limit)
        lines.append(f"task {rank}{where} {state} ({detail}): {hint}; log "
                     f"{os.path.join(logs, f'logs/task_{rank:05d}.log')}, Slurm log {slurm_log}")
    more = f"; and {len(left) - 10} more" if len(left) > 10 else ""
    return f"{len(left)} of {e.world_size} tasks did not complete:\n  " + "\n  ".join(lines) + more


def _not_started(later: list) -> str:
    if not later:
        return ""
    names = ", ".join(repr(s.name) for s in later)
    if len(later) == 1:
        return f"stage {names} did not start (it waits for this one, afterok; its jobs are cancelled)"
    return f"stages {names} did not start (they wait for this one, afterok; their jobs are cancelled)"
