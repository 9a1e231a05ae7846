"""Faults in a training run's files, made on real runs (CPU, debug preset): a torn last line of log.jsonl, and
checkpoints / final models truncated, emptied or with one flipped byte. Resume and evaluation either
continue exactly (a torn log line is the crash it records) or stop with one `CheckpointError` naming the
file and what to do; a Hugging Face folder without checksums.json still loads."""

import json
import os
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from lcdata.errors import InputError  # noqa: E402
from lcdata.util.jsonlog import read_log  # noqa: E402
from lcdata_train.checkpoint import (  # noqa: E402
    CHECKSUMS,
    CheckpointError,
    load_pretrained,
    save_hf,
)
from lcdata_train.config import ModelConfig, TrainConfig  # noqa: E402
from lcdata_train.infer import load_model  # noqa: E402
from lcdata_train.model import init_state_dict  # noqa: E402
from lcdata_train.train import train  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")
STEPS = 6  # a whole run; the interrupted one stops after 4, with checkpoints at steps 2 and 4


def _cfg(shards, out, **kw):
    base = dict(shards=shards, out=str(out), model="debug", lr=1e-2, batch_tokens=512, micro_batch=2,
                tokens=512 * STEPS, save_every=2, act_ckpt=False, quiet=True)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def runs(train_shards, tmp_path_factory):
    """(whole run's losses, folder of a run interrupted after step 4, whole run's folder)."""
    root = tmp_path_factory.mktemp("faults")
    torch.use_deterministic_algorithms(True)
    try:
        full = train(_cfg(train_shards, root / "full"))
        part = train(_cfg(train_shards, root / "part", stop_after=4))
    finally:
        torch.use_deterministic_algorithms(False)
    assert part.step == 4 and sorted(os.listdir(root / "part" / "checkpoints")) == ["step-00000002", "step-00000004"]
    return full.losses, root / "part", root / "full"


@pytest.fixture
def run(runs, tmp_path):
    """A private copy of the interrupted run."""
    shutil.copytree(runs[1], tmp_path / "run")
    return tmp_path / "run"


def _resume(shards, run, **kw):
    torch.use_deterministic_algorithms(True)
    try:
        return train(_cfg(shards, run, resume=True, **kw))
    finally:
        torch.use_deterministic_algorithms(False)


def _log(run):
    return [json.loads(ln) for ln in open(run / "log.jsonl")]


# ------------------------------------------------------------------------------------- log.jsonl


def test_a_torn_last_log_line_is_dropped_and_the_run_resumes_exactly(train_shards, runs, run, tmp_path):
    """A kill while step 5's record was appended (after checkpoint 4): the torn line is dropped, steps 5-6 are
    redone, and the log and losses equal the uninterrupted run's. The trimmed log and run.json are replaced
    by a rename (hard links to the old files keep the old bytes), never rewritten in place."""
    with open(run / "log.jsonl", "a") as fh:
        fh.write('{"step": 5, "loss": 9.1')
    for name in ("log.jsonl", "run.json"):
        os.link(run / name, tmp_path / f"old-{name}")
    before = {n: (tmp_path / f"old-{n}").read_bytes() for n in ("log.jsonl", "run.json")}
    res = _resume(train_shards, run)
    assert res.first_step == 4 and res.step == STEPS
    log = _log(run)
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in log] == runs[0]  # bitwise, as an uninterrupted run
    for n, data in before.items():
        assert (tmp_path / f"old-{n}").read_bytes() == data
        assert os.stat(run / n).st_ino != os.stat(tmp_path / f"old-{n}").st_ino
    assert json.loads((run / "run.json").read_text())["resumed_from"].endswith("step-00000004")
    assert not [n for n in os.listdir(run) if ".tmp" in n]


def test_a_log_cut_inside_a_checkpointed_step_names_the_steps_it_lost(train_shards, run, capsys):
    """Step 4's record cut short (step 4 is checkpointed, so it is not redone): resume continues, and says
    which step the log has no record of, instead of crashing on the JSON."""
    data = (run / "log.jsonl").read_bytes()
    (run / "log.jsonl").write_bytes(data[:-30])
    _resume(train_shards, run)
    assert "has no record of step(s) 4" in capsys.readouterr().err
    assert [r["step"] for r in _log(run)] == [1, 2, 3, 5, 6]


def test_a_damaged_line_before_the_last_is_an_error_naming_it(train_shards, run):
    lines = (run / "log.jsonl").read_text().splitlines(keepends=True)
    lines[1] = lines[1][:20] + "\n"
    (run / "log.jsonl").write_text("".join(lines))
    with pytest.raises(InputError, match=r"log.jsonl, line 2: not a JSON record"):
        _resume(train_shards, run)
    assert read_log.__module__ == "lcdata.util.jsonlog"


# ------------------------------------------------------------------------------------- checkpoints


def _empty(p):
    p.write_bytes(b"")


def _truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p):
    b = bytearray(p.read_bytes())
    b[len(b) - 7] ^= 0x01  # in the data (safetensors) or near the end (JSON): still parses
    p.write_bytes(bytes(b))


@pytest.mark.parametrize("name,damage", [
    ("model.safetensors", _empty), ("model.safetensors", _truncate), ("model.safetensors", _flip),
    ("optimizer.safetensors", _empty), ("optimizer.safetensors", _flip), ("state.json", _flip),
    ("config.json", _flip)])
def test_a_damaged_checkpoint_file_is_named_before_anything_loads(train_shards, run, name, damage):
    ckpt = run / "checkpoints" / "step-00000004"
    damage(ckpt / name)
    with pytest.raises(CheckpointError) as e:
        _resume(train_shards, run)
    msg = str(e.value)
    assert f"{ckpt / name}:" in msg and "\n" not in msg
    assert "bytes, but checksums.json records" in msg or "SHA-256 differs from checksums.json" in msg
    assert f"delete {ckpt} to resume from step-00000002" in msg


def test_following_the_fix_resumes_from_the_checkpoint_before(train_shards, runs, run):
    ckpt = run / "checkpoints" / "step-00000004"
    _flip(ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match="SHA-256 differs"):
        _resume(train_shards, run)
    shutil.rmtree(ckpt)
    res = _resume(train_shards, run)
    assert res.first_step == 2 and [r["loss"] for r in _log(run)] == runs[0]


@pytest.mark.parametrize("name,damage,match", [
    ("model.safetensors", _truncate, "not a readable safetensors file"),
    ("optimizer.safetensors", _empty, "not a readable safetensors file"),
    ("state.json", _truncate, "not valid JSON")])
def test_a_checkpoint_without_checksums_still_gets_a_one_line_error(train_shards, run, name, damage, match):
    """A checkpoint of an older lcdata (no checksums.json) loads unverified; a damaged file is still named."""
    ckpt = run / "checkpoints" / "step-00000004"
    os.remove(ckpt / CHECKSUMS)
    damage(ckpt / name)
    with pytest.raises(CheckpointError, match=match) as e:
        _resume(train_shards, run)
    assert str(e.value).startswith(f"{ckpt / name}:") and "to resume from step-00000002" in str(e.value)


# ------------------------------------------------------------------------------------- evaluation


def test_final_model_lists_every_file_and_evaluation_verifies_it(runs, tmp_path):
    final = runs[2] / "final"
    sums = json.loads((final / CHECKSUMS).read_text())["files"]
    assert sorted(sums) == sorted(n for n in os.listdir(final) if n != CHECKSUMS)
    assert "tokenizer.json" in sums and "model.safetensors" in sums
    load_model(str(runs[2]), "cpu")  # intact: loads
    shutil.copytree(runs[2], tmp_path / "run")
    _flip(tmp_path / "run" / "final" / "model.safetensors")
    for call in (lambda: load_model(str(tmp_path / "run"), "cpu"),
                 lambda: load_pretrained(str(tmp_path / "run" / "final"))):
        with pytest.raises(CheckpointError, match=r"final/model.safetensors: SHA-256 differs") as e:
            call()
    assert "evaluate the run's last training checkpoint" in str(e.value) or "damaged" in str(e.value)


def test_a_hugging_face_folder_without_checksums_loads_and_names_a_damaged_file(tmp_path):
    cfg = ModelConfig(vocab_size=256, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64)
    hf = tmp_path / "hf"
    save_hf(init_state_dict(cfg, 0), cfg, str(hf), "bfloat16")
    os.remove(hf / CHECKSUMS)  # as downloaded from elsewhere
    model, folder = load_model(str(hf), "cpu")
    assert folder == str(hf) and model.cfg.dim == 32
    _truncate(hf / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.safetensors: not a readable safetensors file") as e:
        load_model(str(hf), "cpu")
    assert "\n" not in str(e.value)
    (hf / "config.json").write_text('{"vocab_size": 25')
    with pytest.raises(CheckpointError, match=r"config.json: not valid JSON"):
        load_model(str(hf), "cpu")


def test_the_cli_evaluations_name_a_damaged_model_in_one_line(train_shards, runs, tmp_path, tokenizer_path, capsys):
    from lcdata.cli import main

    shutil.copytree(runs[2], tmp_path / "run")
    _empty(tmp_path / "run" / "final" / "model.safetensors")
    needle = ["needle", "--model", str(tmp_path / "run"), "--tokenizer", tokenizer_path, "--lengths", "300",
              "--depths", "0", "--mode", "teacher-forced", "--quiet", "--device", "cpu", "--out", str(tmp_path / "n")]
    evl = ["eval-loss", "--model", str(tmp_path / "run" / "final"), "--shards", train_shards, "--max-sequences", "1",
           "--device", "cpu"]
    def one_line(argv, what):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"final/model.safetensors: {what}" in err, err
        assert err.startswith(f"lcdata {argv[0]}: error: ")

    for argv in (needle, evl):
        one_line(argv, "0 bytes, but checksums.json records")
    os.remove(tmp_path / "run" / "final" / CHECKSUMS)  # unverified: the safetensors reader's error, in one line
    for argv in (needle, evl):
        one_line(argv, "not a readable safetensors file")
    assert not (tmp_path / "n").exists()
