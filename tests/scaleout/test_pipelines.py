"""lcdata's stages on datatrove executors give the single-process bytes, resume after a failure, and submit
the Slurm jobs asked for.

Demo corpus (11 files). Local runs use LocalPipelineExecutor with 3 tasks and 2 workers. Stats and plans use
the character estimate (fast); the build tokenizes the planned documents with the demo tokenizer. The Slurm
test puts a fake ``sbatch``/``scontrol`` on PATH, checks the sbatch scripts datatrove writes, then runs every
array task from the pickled executors in this process, as the cluster would.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lcdata.build import BuildConfig, run_build
from lcdata.errors import ConfigError, LcdataError
from lcdata.sample import SampleConfig, run_sample
from lcdata.sample.run import sample_table
from lcdata.scaleout import ExecutorConfig, add_executor_args, executor_from_args, parse_time
from lcdata.scaleout.pipelines import (
    FAIL_ENV,
    StageFailed,
    assign_files,
    run_build_distributed,
    run_sample_distributed,
    run_stats_distributed,
    stats_pipeline,
)
from lcdata.shards import verify_shards
from lcdata.stats import StatsConfig, run_stats

STATS_FRAMES = ["sources", "buckets", "histogram", "files", "skips", "doc_lengths"]
PLAN_FRAMES = ["plan", "report", "groups"]
SAMPLE = SampleConfig(strategy="per-source", budget_tokens=600_000)
LOCAL = {"tasks": 3, "workers": 2}
NATIVE = {}  # results of the single-process runs (the `native` fixture)


def build_cfg(tokenizer_path, plan) -> BuildConfig:
    return BuildConfig(tokenizer=tokenizer_path, seq_len=4096, shard_tokens=1 << 16, plan=str(plan))


def files_of(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file() and p.name != "manifest.json"}


def assert_same_build(ref: Path, got: Path, files_resumed: int = 0) -> None:
    a, b = files_of(ref), files_of(got)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], f"{name} differs"
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (ref, got))
    assert mb["read_report"].pop("files_resumed") == files_resumed
    ma["read_report"].pop("files_resumed")
    run_info = ("elapsed_s", "phase_s", "command", "manifest_sha256")  # how long, which command line (and the seal over them)
    assert {k: v for k, v in ma.items() if k not in run_info} == {k: v for k, v in mb.items() if k not in run_info}
    assert verify_shards(str(got)) == []


@pytest.fixture(scope="module")
def native(tmp_path_factory, demo_dir, tokenizer_path):
    d = tmp_path_factory.mktemp("native")
    run_stats([str(demo_dir)], str(d / "stats"), StatsConfig(), workers=1, figure=False)
    NATIVE["sample"] = run_sample([str(demo_dir)], str(d / "plan"), SAMPLE, stats_config=StatsConfig(), workers=1,
                                  figure=False)
    run_build([str(demo_dir)], str(d / "build"), build_cfg(tokenizer_path, d / "plan"), workers=1)
    return d


def test_assign_files_is_a_balanced_deterministic_partition():
    sizes = [420, 372, 261, 205, 165, 193, 234, 315, 292, 100, 90]
    parts = assign_files(sizes, 3)
    assert sorted(i for p in parts for i in p) == list(range(len(sizes)))
    assert all(p == sorted(p) for p in parts) and parts == assign_files(sizes, 3)
    loads = [sum(sizes[i] for i in p) for p in parts]
    assert max(loads) - min(loads) <= max(sizes)
    assert assign_files([1, 2], 4)[2:] == [[], []]  # more tasks than files: idle tasks


def test_stats_equal_single_process(native, demo_dir, tmp_path):
    out = tmp_path / "stats"
    res = run_stats_distributed([str(demo_dir)], str(out), StatsConfig(), "local", figure=False, **LOCAL)
    for name in STATS_FRAMES:
        assert_frame_equal(pl.read_parquet(out / f"{name}.parquet"), pl.read_parquet(native / "stats" / f"{name}.parquet"))
    a, b = (json.loads((d / "stats.json").read_text()) for d in (native / "stats", out))
    for key in ("fingerprint", "config", "inputs", "totals", "sources", "buckets", "files", "skips"):
        assert a[key] == b[key], key
    assert res.fingerprint == a["fingerprint"] and res.totals == a["totals"]
    assert not list((out / "_scaleout" / "partials").glob("*.parquet"))  # partials removed once merged


def test_sample_plan_equal_single_process(native, demo_dir, tmp_path):
    out = tmp_path / "plan"
    res = run_sample_distributed([str(demo_dir)], str(out), SAMPLE, "local", stats_config=StatsConfig(),
                                 figure=False, **LOCAL)
    for name in PLAN_FRAMES:
        assert_frame_equal(pl.read_parquet(out / f"{name}.parquet"), pl.read_parquet(native / "plan" / f"{name}.parquet"))
    want = json.loads((native / "plan" / "plan.json").read_text())
    assert res.manifest["plan_fingerprint"] == want["plan_fingerprint"]
    assert res.manifest["totals"] == want["totals"]
    assert (out / "stats" / "stats.json").exists()  # the merged stats it was solved from
    # the terminal shows the same tables, the recipe's (short rate, long share vs L/(L+0.1 S)) included
    assert_frame_equal(res.plan.recipe, NATIVE["sample"].plan.recipe)
    table = sample_table(res)
    assert table == sample_table(NATIVE["sample"]) and "length upsampling" in table and "L/(L+kS)" in table


def test_build_shards_byte_identical_and_written_per_task(native, demo_dir, tokenizer_path, tmp_path):
    out = tmp_path / "build"
    res = run_build_distributed([str(demo_dir)], str(out), build_cfg(tokenizer_path, native / "plan"), "local",
                                **LOCAL)
    assert_same_build(native / "build", out)
    n_shards = len(res.manifest["shards"])
    assert n_shards > 3
    per_task = []
    for t in range(3):  # datatrove's per-task stats: task t wrote the shards k with k % 3 == t
        st = json.loads((out / "_scaleout" / "logs" / "shards" / "stats" / f"{t:05d}.json").read_text())
        per_task.append(next(s["stats"]["shards"] for s in st if "shards" in s["stats"]))
    assert per_task == [len(range(t, n_shards, 3)) for t in range(3)]
    assert not (out / "_work").exists()


def test_build_with_memory_limit_byte_identical(native, demo_dir, tokenizer_path, tmp_path):
    """Issue #19: the pack task under a memory limit computes the layout through files (a plan with copies,
    16 buckets of instances) and hands its folder to the shard tasks: the same bytes as the native build."""
    out = tmp_path / "build"
    run_build_distributed([str(demo_dir)], str(out), build_cfg(tokenizer_path, native / "plan"), "local",
                          memory_limit=1, keep_work=True, **LOCAL)
    assert (out / "_work" / "layout" / "inst_unit.npy").exists() and not (out / "_work" / "layout-spill").exists()
    shutil.rmtree(out / "_work")
    assert_same_build(native / "build", out)


@pytest.mark.parametrize("stage", ["tokenize", "shards"])
def test_build_task_fails_midway_then_rerun_completes(native, demo_dir, tokenizer_path, tmp_path, monkeypatch, stage):
    out = tmp_path / "build"
    cfg = build_cfg(tokenizer_path, native / "plan")
    logs = out / "_scaleout" / "logs" / stage
    monkeypatch.setenv(FAIL_ENV, f"{stage}:1:1")  # test hook: task 1 raises after its first file / shard
    with pytest.raises(StageFailed, match=stage):
        run_build_distributed([str(demo_dir)], str(out), cfg, "local", tasks=3, workers=1)
    monkeypatch.delenv(FAIL_ENV)
    assert (logs / "completions" / "00000").exists()
    assert not (logs / "completions" / "00001").exists()
    done0 = (logs / "stats" / "00000.json").stat().st_mtime_ns
    work = sorted((out / "_work").glob("tok-*.units.parquet" if stage == "tokenize" else "shard-*.done.json"))
    kept = {p: p.stat().st_mtime_ns for p in work}
    with pytest.raises(ConfigError, match="--resume"):  # as run_build: a rerun must say it continues
        run_build_distributed([str(demo_dir)], str(out), cfg, "local", **LOCAL)
    run_build_distributed([str(demo_dir)], str(out), cfg, "local", resume=True, keep_work=True, **LOCAL)
    assert (logs / "stats" / "00000.json").stat().st_mtime_ns == done0  # finished task skipped
    assert all(p.stat().st_mtime_ns == m for p, m in kept.items())  # finished files / shards not redone
    assert_same_build(native / "build", out, files_resumed=1 if stage == "tokenize" else 0)
    docs = pl.read_parquet(out / "documents.parquet")
    assert docs.select("file", "row", "chunk", "copy").is_duplicated().sum() == 0


def test_stats_task_fails_then_rerun_completes(native, demo_dir, tmp_path, monkeypatch):
    out = tmp_path / "stats"
    monkeypatch.setenv(FAIL_ENV, "stats:2:1")
    with pytest.raises(StageFailed):
        run_stats_distributed([str(demo_dir)], str(out), StatsConfig(), "local", figure=False, **LOCAL)
    monkeypatch.delenv(FAIL_ENV)
    assert not (out / "stats.json").exists()
    done = out / "_scaleout" / "logs" / "stats" / "completions" / "00000"
    kept = done.stat().st_mtime_ns  # a failed stage keeps the folder: its completions are what a rerun skips
    run_stats_distributed([str(demo_dir)], str(out), StatsConfig(), "local", figure=False, **LOCAL)
    for name in STATS_FRAMES:
        assert_frame_equal(pl.read_parquet(out / f"{name}.parquet"), pl.read_parquet(native / "stats" / f"{name}.parquet"))
    assert pl.read_parquet(out / "doc_lengths.parquet")["doc_id"].is_duplicated().sum() == 0
    assert done.stat().st_mtime_ns == kept


def test_other_run_in_the_same_folder_does_not_reuse_completions(demo_dir, tmp_path):
    out = tmp_path / "stats"
    run_stats_distributed([str(demo_dir)], str(out), StatsConfig(), "local", figure=False, tasks=2, workers=1)
    cfg = StatsConfig(buckets=(0, 100, 1000))
    res = run_stats_distributed([str(demo_dir)], str(out), cfg, "local", figure=False, tasks=2, workers=1)
    assert res.buckets["bucket_min"].unique().sort().to_list() == [0, 100, 1000]
    logs = tmp_path / "logs"
    run_stats_distributed([str(demo_dir)], str(out), cfg, "local", figure=False, tasks=2, workers=1,
                          logging_dir=str(logs))
    with pytest.raises(ConfigError, match="another run"):
        run_stats_distributed([str(demo_dir)], str(out), cfg, "local", figure=False, tasks=3, workers=1,
                              logging_dir=str(logs))


def test_pipeline_steps_run_on_a_plain_local_executor(native, demo_dir, tmp_path):
    from datatrove.executor import LocalPipelineExecutor

    out = tmp_path / "stats"
    for st in stats_pipeline([str(demo_dir)], str(out), StatsConfig(), tasks=2, figure=False):
        LocalPipelineExecutor(st.pipeline, tasks=st.tasks, workers=1, logging_dir=str(tmp_path / "logs" / st.name)).run()
    assert_frame_equal(pl.read_parquet(out / "sources.parquet"), pl.read_parquet(native / "stats" / "sources.parquet"))


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch`` that keeps each script and its arguments and answers a job id; ``scontrol`` for hostnames."""
    bin_dir, jobs = tmp_path / "bin", tmp_path / "jobs"
    bin_dir.mkdir()
    jobs.mkdir()
    (bin_dir / "sbatch").write_text(
        "#!/bin/bash\n"
        f'n=$(( $(ls {jobs} | grep -c "\\.sh$") + 1 ))\n'
        f'cp "${{@: -1}}" {jobs}/job-$n.sh\n'
        f'echo "${{@:1:$#-1}}" > {jobs}/job-$n.args\n'
        'echo "Submitted batch job $((1000 + n))"\n')
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho localhost\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return jobs


def test_slurm_sbatch_scripts_then_array_tasks(native, demo_dir, tmp_path, fake_slurm):
    import dill

    out = tmp_path / "stats"
    res = run_stats_distributed([str(demo_dir)], str(out), StatsConfig(), "slurm", figure=False, tasks=3, workers=2,
                                partition="cpu-long", time="02:30:00", cpus_per_task=2, mem_per_cpu_gb=3,
                                job_name="lcd", sbatch_args={"account": "proj1"})
    assert res is None  # submitted, not run
    scripts = {p.stem: p.read_text() for p in fake_slurm.glob("*.sh")}
    args = {p.stem: p.read_text() for p in fake_slurm.glob("*.args")}
    logs = out / "_scaleout" / "logs"
    stats_job, merge_job = (next(k for k, s in sorted(scripts.items()) if f"{logs / name}/executor.pik" in s)
                            for name in ("stats", "stats-merge"))
    s = scripts[stats_job]
    for line in ("#SBATCH --partition=cpu-long", "#SBATCH --time=02:30:00", "#SBATCH --array=0-2%2",
                 "#SBATCH --cpus-per-task=2", "#SBATCH --mem-per-cpu=3G", "#SBATCH --job-name=lcd-stats",
                 "#SBATCH --account=proj1", f"launch_pickled_pipeline {logs / 'stats'}/executor.pik"):
        assert line in s.splitlines() or line in s, line
    assert "--qos" not in s
    m = scripts[merge_job]
    assert "#SBATCH --array=0-0" in m and "#SBATCH --job-name=lcd-stats-merge" in m
    first_id = 1000 + int(stats_job.split("-")[1])
    assert f"--dependency=afterok:{first_id}" in args[merge_job]
    assert not (out / "stats.json").exists()

    env, handler = dict(os.environ), signal.getsignal(signal.SIGUSR1)
    try:  # what the cluster does: each array task loads the pickled executor and runs its rank
        for name, n in (("stats", 3), ("stats-merge", 1)):
            for task in range(n):
                os.environ.update(SLURM_ARRAY_TASK_ID=str(task), SLURM_NODELIST="localhost", RUN_OFFSET="0")
                with open(logs / name / "executor.pik", "rb") as fh:
                    dill.load(fh).run()
    finally:
        os.environ.clear()
        os.environ.update(env)
        signal.signal(signal.SIGUSR1, handler)
    for name in STATS_FRAMES:
        assert_frame_equal(pl.read_parquet(out / f"{name}.parquet"), pl.read_parquet(native / "stats" / f"{name}.parquet"))


def test_executor_flags_map_to_config():
    p = argparse.ArgumentParser()
    add_executor_args(p)
    assert executor_from_args(p.parse_args([])) is None
    a = p.parse_args(["--executor", "slurm", "--tasks", "64", "--executor-workers", "16", "--partition", "cpu",
                      "--time", "04:00:00", "--cpus-per-task", "2"])
    ex = executor_from_args(a, logging_dir="logs/x")
    assert ex == ExecutorConfig(kind="slurm", tasks=64, workers=16, partition="cpu", time="04:00:00",
                                cpus_per_task=2, logging_dir="logs/x")
    with pytest.raises(ConfigError, match="--partition"):
        executor_from_args(p.parse_args(["--executor", "slurm"]))
    assert parse_time("1-02:00:00") == 26 * 3600 and parse_time("90") == 5400 and parse_time(None) is None


@pytest.mark.slow
def test_ray_local_build_byte_identical(native, demo_dir, tokenizer_path, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install ray): the Ray executor is not tested",
                              exc_type=ImportError)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "build"
        run_build_distributed([str(demo_dir)], str(out), build_cfg(tokenizer_path, native / "plan"), "ray",
                              tasks=2, workers=2)
    finally:
        ray.shutdown()
    assert_same_build(native / "build", out)


def test_slurm_memory_goes_to_sbatch_in_whole_units(tmp_path):
    whole, half = (ExecutorConfig(kind="slurm", partition="p", time="10", mem_per_cpu_gb=gb).make(
        [], 2, str(tmp_path / str(gb)), "stats").get_sbatch_args(2) for gb in (2.0, 1.5))
    assert whole["mem-per-cpu"] == "2G" and half["mem-per-cpu"] == "1536M"  # sbatch refuses "2.0G"


def test_sbatch_refusing_a_job_is_a_clear_error(demo_dir, tmp_path, fake_slurm):
    sbatch = Path(os.environ["PATH"].split(os.pathsep)[0]) / "sbatch"
    sbatch.write_text("#!/bin/bash\necho 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n")
    with pytest.raises(LcdataError, match="sbatch refused a job"):
        run_stats_distributed([str(demo_dir)], str(tmp_path / "stats"), StatsConfig(), "slurm", figure=False,
                              tasks=2, partition="nope", time="10")


def test_slurm_wait_reads_held_jobs_and_dependencies():
    from lcdata.scaleout.slurm import dependency_targets, held_for_ever

    assert dependency_targets("afterok:12_*(unfulfilled),afterany:13(failed)") == {"12", "13"}
    assert dependency_targets("(null)") == set()
    rows = [("16_0", "PENDING", "DependencyNeverSatisfied", "afterok:15_*(failed)"),  # after a failed stage
            ("19_0", "PENDING", "Dependency", "afterok:16_*(unfulfilled)"),  # after a held one: held too
            ("20", "PENDING", "Dependency", "afterok:21_*(unfulfilled)"),  # after a running one: waits
            ("21_1", "RUNNING", "None", "(null)")]
    assert held_for_ever(rows) == {"16_0", "19_0"}


def test_slurm_failure_names_task_array_index_and_logs(tmp_path):
    """Ranks to array indices as datatrove submits them: 5 tasks over arrays of at most 2 (3 array jobs)."""
    from datatrove.executor import SlurmPipelineExecutor

    from lcdata.scaleout.slurm import failure_report

    e = SlurmPipelineExecutor([], tasks=5, time="10", partition="p", max_array_size=2, logging_dir=str(tmp_path))
    (tmp_path / "ranks_to_run.json").write_text("[0, 1, 2, 3, 4]")
    text = failure_report(e, [1, 4], "999999", "00:05:00")  # a job no controller knows: state UNKNOWN
    assert "2 of 5 tasks did not complete" in text
    assert "task 1 (array index 1 of the stage's array job number 1 of 3) UNKNOWN" in text
    assert "task 4 (Slurm job 999999_0) UNKNOWN" in text and str(tmp_path / "slurm_logs" / "999999_0.out") in text
    assert str(tmp_path / "logs" / "task_00004.log") in text
