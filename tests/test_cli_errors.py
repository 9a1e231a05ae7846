"""A careful user's mistakes on the command line: each is one line on stderr and exit 2, never a traceback
(the commands run in-process through `lcdata.cli.main`, so a traceback would fail the test), and nothing is
written. Real folders: shards built from the demo corpus, a real training run for `report`."""

import json
import os

import pytest

from lcdata.cli import main


def _user_error(capsys, argv, *expect):
    """``argv`` exits 2 with one line ``lcdata CMD: error: ...`` holding every string of ``expect``."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"lcdata {argv[0]}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for s in expect:
        assert s in lines[0], (s, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------ inspect


@pytest.mark.parametrize("seq", ["50", "-1", "1000000"])
def test_inspect_out_of_range_names_the_range(train_shards, tokenizer_path, capsys, seq):
    _user_error(capsys, ["inspect", train_shards, "--seq", seq, "--tokenizer", tokenizer_path],
                f"--seq {seq} is out of range", "numbered 0 to 49")


def test_inspect_in_range_and_bad_max_chars(train_shards, tokenizer_path, capsys):
    assert main(["inspect", train_shards, "--seq", "49", "--tokenizer", tokenizer_path]) == 0
    assert capsys.readouterr().out.startswith("sequence 49 of 50")
    _user_error(capsys, ["inspect", train_shards, "--max-chars", "0"], "--max-chars 0 must be >= 1")


# ------------------------------------------------------------------------------------------ report


def test_report_refuses_what_is_not_a_run_folder(train_shards, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    _user_error(capsys, ["report", str(tmp_path / "missing")], "does not exist", "run folder")
    _user_error(capsys, ["report", str(tmp_path / "afile")], "is a file, not a folder")
    _user_error(capsys, ["report", "s3x://bucket/run"], "is a URL")
    _user_error(capsys, ["report", train_shards], "holds none of stats, plan, shards, run", "not a stage's own")
    _user_error(capsys, ["report", str(tmp_path), "--ablation", "natural", "global"], "holds none of natural, global")
    _user_error(capsys, ["report", str(tmp_path), "--seeds", "0", "1"], "--seeds only applies with --ablation")
    _user_error(capsys, ["report", str(tmp_path), "--ablation", "natural", "--name", "x"], "drop --name")
    assert sorted(os.listdir(tmp_path)) == ["afile"] and "report.md" not in os.listdir(train_shards)


def test_report_reads_a_log_with_a_torn_last_line(tmp_path, capsys):
    """A run killed mid-write: the report shows the steps that were written, not a JSONDecodeError."""
    run = tmp_path / "run"
    run.mkdir()
    recs = [{"step": s, "loss": 10.0 - s, "tokens": 512 * s, "tokens_per_s": 1000.0, "mfu": None} for s in (1, 2, 3)]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"step": 4, "lo')
    assert main(["report", str(tmp_path)]) == 0
    page = (tmp_path / "report.md").read_text()
    assert "3 steps (1,536 tokens)" in page and (tmp_path / "loss_curve.png").stat().st_size > 0
    (run / "log.jsonl").write_text('{"step": 1\n' + json.dumps(recs[1]) + "\n")
    _user_error(capsys, ["report", str(tmp_path)], "log.jsonl, line 1: not a JSON record")


def test_report_names_a_damaged_stage_file(tmp_path, capsys):
    (tmp_path / "eval-loss").mkdir()
    (tmp_path / "eval-loss" / "loss.parquet").write_bytes(b"PAR1 not really")
    _user_error(capsys, ["report", str(tmp_path)], "eval-loss/loss.parquet: not a readable Parquet file",
                "run that stage again")
    (tmp_path / "needle").mkdir()
    (tmp_path / "eval-loss" / "loss.parquet").unlink()
    (tmp_path / "needle" / "results.json").write_text('{"task": "needle"}')
    _user_error(capsys, ["report", str(tmp_path)], "needle: a file lacks what the report reads", "'cells'")
    assert not (tmp_path / "report.md").exists()


# ------------------------------------------------------------------------------------------ train / needle / eval-loss

TRAIN = ["--model", "debug", "--batch-tokens", "512", "--micro-batch", "2", "--tokens", "1024", "--quiet"]


@pytest.mark.parametrize("flags,expect", [
    (["--device", "foo"], "--device 'foo' is not a device"),
    (["--seed", "-1"], "seed=-1 must be >= 0"),
    (["--grad-clip", "-1"], "grad_clip=-1.0 must be >= 0"),
    (["--weight-decay", "-0.1"], "weight_decay=-0.1 must be >= 0"),
    (["--peak-tflops", "0"], "peak_tflops=0.0 must be > 0"),
    (["--out", "s3x://bucket/run"], "is a URL, but this command writes a local folder"),
    (["--out", "s3://bucket/run"], "is a URL, but this command writes a local folder"),
    (["--rope-scaling", "longrope:4"], "rope scaling type 'longrope' is not supported; use one of"),
    (["--rope-scaling", "dynamic:0.5"], "rope scaling 'dynamic' factor=0.5 must be a number >= 1"),
    (["--rope-scaling", '{"rope_type": "llama3", "factor": 8}'], "rope scaling 'llama3' needs")])
def test_train_flag_errors(train_shards, tmp_path, capsys, flags, expect):
    out = ["--out", str(tmp_path / "run")] if "--out" not in flags else []
    _user_error(capsys, ["train", "--shards", train_shards, *TRAIN, *out, *flags], expect)
    assert not (tmp_path / "run").exists() and not os.path.exists("s3x:")


def test_out_naming_a_file_is_refused_before_any_work(train_shards, tmp_path, tokenizer_path, capsys):
    f = tmp_path / "afile"
    f.write_text("mine")
    _user_error(capsys, ["train", "--shards", train_shards, *TRAIN, "--out", str(f)], "is a file, not a folder")
    _user_error(capsys, ["needle", "--model", str(tmp_path), "--tokenizer", tokenizer_path, "--lengths", "300",
                         "--depths", "0", "--out", str(f)], "is a file, not a folder")
    _user_error(capsys, ["eval-loss", "--model", str(tmp_path), "--shards", train_shards, "--out", str(f)],
                "is a file, not a folder")
    assert f.read_text() == "mine" and os.listdir(tmp_path) == ["afile"]


def test_a_run_folder_given_as_model_names_its_model(train_shards, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    _user_error(capsys, ["train", "--shards", train_shards, *TRAIN, "--out", str(tmp_path / "b"), "--model",
                         str(tmp_path / "run")], "is a run folder of `lcdata train`, not a model")


@pytest.mark.parametrize("flags,expect", [
    (["--seed", "-1"], "seed=-1 must be >= 0"),
    (["--lengths", "1e30"], "is beyond the 16,777,216 tokens"),
    (["--max-new-tokens", "0"], "max_new_tokens=0 must be >= 1"),
    (["--out", "s3x://bucket/n"], "Protocol not known: s3x")])
def test_needle_flag_errors(tmp_path, tokenizer_path, capsys, flags, expect):
    out = ["--out", str(tmp_path / "n")] if "--out" not in flags else []
    _user_error(capsys, ["needle", "--model", str(tmp_path), "--tokenizer", tokenizer_path, "--lengths", "300",
                         "--depths", "0", *out, *flags], expect)
    assert not (tmp_path / "n").exists()


@pytest.mark.parametrize("flags,expect", [
    (["--seq-len", "-3"], "seq_len=-3 must be >= 2"),
    (["--delta-threshold", "-1"], "threshold=-1.0 must be >= 0"),
    (["--position", "sequence", "--doc-mask"], "position='sequence' with doc_mask"),
    (["--out", "s3x://bucket/e"], "Protocol not known: s3x")])
def test_eval_loss_flag_errors(train_shards, tmp_path, capsys, flags, expect):
    _user_error(capsys, ["eval-loss", "--model", str(tmp_path), "--shards", train_shards, *flags], expect)
