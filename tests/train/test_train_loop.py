"""lcdata_train.train end to end on CPU: the loss falls well below the unigram entropy, resume is exact, bad
input fails with the values named, the CLI runs, and 2 processes (gloo; FSDP2 and DDP) match 1 process."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from lcdata.errors import ConfigError  # noqa: E402
from lcdata.shards.reader import open_shards  # noqa: E402
from lcdata_train.checkpoint import CheckpointError, save_hf  # noqa: E402
from lcdata_train.config import ModelConfig, TrainConfig  # noqa: E402
from lcdata_train.model import init_state_dict  # noqa: E402
from lcdata_train.train import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _cfg(shards, out, **kw):
    base = dict(shards=shards, out=str(out), model="debug", lr=1e-2, batch_tokens=512, micro_batch=2, tokens=512 * 4,
                save_every=0, act_ckpt=False, quiet=True)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def deterministic():
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


def unigram_entropy(shards) -> float:
    s = open_shards(shards)
    counts = np.zeros(s.manifest["tokenizer"]["vocab_size"])
    for i in range(len(s)):
        for p in s.segments(i):
            counts += np.bincount(s[i][int(p["start"]): int(p["start"]) + int(p["length"])], minlength=len(counts))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def test_loss_falls_well_below_unigram_entropy(train_shards, tmp_path):
    """~10 epochs over the 12,800-token slice (240 steps of 512 tokens); then the final model's loss over every
    sequence is compared with the unigram entropy of the same tokens (the best loss without context)."""
    from lcdata_train.checkpoint import load_pretrained
    from lcdata_train.data import ShardDataset, collate

    h = unigram_entropy(train_shards)
    res = train(_cfg(train_shards, tmp_path / "run", lr=3e-2, schedule="cosine", warmup_steps=10, tokens=512 * 240))
    model = load_pretrained(str(tmp_path / "run" / "final")).eval()
    ds = ShardDataset(train_shards)
    b = collate([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        total, n = model(b["input_ids"], b["position_ids"], labels=b["labels"])
    final = float(total / n)
    start = float(np.mean(res.losses[:5]))
    print(f"unigram entropy {h:.3f} nats; loss {start:.3f} (first 5 steps) -> {np.mean(res.losses[-10:]):.3f} "
          f"(last 10) -> {final:.3f} (final model, all {len(ds)} sequences)")
    assert start > h + 1.5  # starts near ln(vocab) = 9.70
    assert final < h - 0.5, (h, final)
    log = [json.loads(ln) for ln in open(tmp_path / "run" / "log.jsonl")]
    assert [r["step"] for r in log] == list(range(1, 241))
    assert all(r["tokens_per_s"] > 0 and r["mfu"] is None and 0 <= r["data_share"] < 1 for r in log)


def test_resume_reproduces_losses_exactly(train_shards, tmp_path, deterministic):
    kw = dict(doc_mask=True, schedule="cosine", warmup_steps=2, tokens=512 * 6, act_ckpt=True)
    full = train(_cfg(train_shards, tmp_path / "a", save_every=3, **kw))
    first = train(_cfg(train_shards, tmp_path / "b", stop_after=3, **kw))
    assert first.step == 3 and first.final_dir is None
    rest = train(_cfg(train_shards, tmp_path / "b", resume=True, **kw))
    assert rest.first_step == 3 and rest.step == 6
    assert first.losses + rest.losses == full.losses  # bitwise
    log = [json.loads(ln)["loss"] for ln in open(tmp_path / "b" / "log.jsonl")]
    assert log == full.losses
    a = (tmp_path / "a" / "final" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "final" / "model.safetensors").read_bytes()
    assert sorted(os.listdir(tmp_path / "b" / "checkpoints")) == ["step-00000003", "step-00000006"]


def test_save_false_writes_no_checkpoint_and_no_final_model(train_shards, tmp_path):
    """Benchmarks time the steps only (`save=False`): the log and run.json are written, nothing else."""
    res = train(_cfg(train_shards, tmp_path / "a", tokens=512 * 2, save=False))
    assert res.step == 2 and res.final_dir is None and len(res.losses) == 2
    assert sorted(f for f in os.listdir(tmp_path / "a") if not f.startswith(".")) == ["log.jsonl", "run.json"]


def test_shorter_seq_len_uses_every_token_reports_it_and_resumes_exactly(train_shards, tmp_path, deterministic,
                                                                        capsys):
    """seq_len 96 on shards of 256 (not a divisor): run.json and the start line report windows, tokens used and
    unused and epochs, equal to a count from the shards; a run past one epoch warns; resume is exact."""
    s = open_shards(train_shards)
    N = len(s) * s.seq_len
    docs = sum(int(p["length"]) for i in range(len(s)) for p in s.segments(i))
    windows = -(-N // 96)  # ceil: the last window padded
    kw = dict(seq_len=96, batch_tokens=384, doc_mask=True, tokens=384 * 4, quiet=False)
    full = train(_cfg(train_shards, tmp_path / "a", save_every=2, **kw))
    first = train(_cfg(train_shards, tmp_path / "b", stop_after=2, **kw))
    rest = train(_cfg(train_shards, tmp_path / "b", resume=True, **kw))
    assert first.losses + rest.losses == full.losses  # bitwise
    d = json.loads((tmp_path / "a" / "run.json").read_text())["data"]
    assert d == {"windowing": "stream", "seq_len": 96, "shards_seq_len": 256, "windows": windows, "shard_tokens": N,
                 "document_tokens": docs, "tokens_used": N, "tokens_unused": 0, "window_padding": windows * 96 - N,
                 "sequences": 16, "epochs": 16 / windows}
    err = capsys.readouterr().err
    assert (f"data: {windows} windows of 96 per epoch use {N:,} of the {N:,} shard tokens ({docs:,} document tokens; "
            f"sequences of 256, the last window padded by {windows * 96 - N}); this run reads 16 windows = "
            f"{16 / windows:.2f} epoch(s)") in err
    assert "warning" not in err
    steps = windows // 4 + 1  # one step past an epoch
    train(_cfg(train_shards, tmp_path / "c", seq_len=96, batch_tokens=384, tokens=384 * steps, stop_after=1))
    err = capsys.readouterr().err
    assert (f"warning: {384 * steps:,} tokens ({steps} steps) are {steps * 4 / windows:.2f} epochs of the shards "
            f"({windows} windows of 96): the data repeats; lower --tokens to <= {windows // 4 * 384:,}") in err
    assert json.loads((tmp_path / "c" / "run.json").read_text())["data"]["epochs"] == steps * 4 / windows


def test_dynamic_rope_scaling_trains_resumes_and_saves_its_anchor(train_shards, tmp_path, deterministic):
    """A 64-position HF model trained at 256 with dynamic NTK: the scaling is in effect (other losses than
    without it), resume is exact, and final/config.json keeps transformers' anchor (max_position_embeddings 64)."""
    cfg = ModelConfig(vocab_size=16384, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64, max_seq_len=64)
    save_hf(init_state_dict(cfg, 0), cfg, str(tmp_path / "hf"))
    kw = dict(model=str(tmp_path / "hf"), rope_scaling={"rope_type": "dynamic", "factor": 4.0})
    full = train(_cfg(train_shards, tmp_path / "a", **kw))
    first = train(_cfg(train_shards, tmp_path / "b", stop_after=2, **kw))
    rest = train(_cfg(train_shards, tmp_path / "b", resume=True, **kw))
    assert first.losses + rest.losses == full.losses
    assert train(_cfg(train_shards, tmp_path / "c", model=str(tmp_path / "hf"))).losses != full.losses
    j = json.loads((tmp_path / "a" / "final" / "config.json").read_text())
    assert j["max_position_embeddings"] == 64 and j["rope_scaling"] == {"rope_type": "dynamic", "factor": 4.0}


def test_bad_input_names_the_values(train_shards, tmp_path):
    with pytest.raises(ConfigError, match=r"seq_len 512 is larger than the shards' sequences \(256"):
        train(_cfg(train_shards, tmp_path / "x", seq_len=512))
    with pytest.raises(ConfigError, match=r"batch_tokens \(1,000\) must be a multiple of seq_len x world_size x "
                                          r"micro_batch \(256 x 1 x 2 = 512\); use 512 or 1,024"):
        train(_cfg(train_shards, tmp_path / "x", batch_tokens=1000))
    small = ModelConfig(vocab_size=1000, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64)
    save_hf(init_state_dict(small, 0), small, str(tmp_path / "small"))
    with pytest.raises(ConfigError, match=r"tokenizer of 16,384 ids but the model .* vocabulary of 1,000"):
        train(_cfg(train_shards, tmp_path / "x", model=str(tmp_path / "small")))

    run = tmp_path / "run"
    train(_cfg(train_shards, run, tokens=512 * 2))
    with pytest.raises(ConfigError, match="holds a complete lcdata train folder; pass --resume or --overwrite"):
        train(_cfg(train_shards, run, tokens=512 * 2))
    with pytest.raises(ConfigError, match="is the shard folder"):  # never into the shards it reads
        train(_cfg(train_shards, train_shards, tokens=512 * 2))
    with pytest.raises(ConfigError, match="inside the input folder"):
        train(_cfg(train_shards, os.path.join(train_shards, "run"), tokens=512 * 2))
    other = tmp_path / "other"
    train(_cfg(train_shards, other, tokens=512 * 2))
    (other / "notes.md").write_text("mine")
    with pytest.raises(ConfigError, match="notes.md"):  # --overwrite never removes what train did not write
        train(_cfg(train_shards, other, tokens=512 * 2, overwrite=True))
    (other / "notes.md").unlink()
    assert train(_cfg(train_shards, other, tokens=512 * 2, overwrite=True, seed=1)).first_step == 0
    with pytest.raises(ConfigError, match=r"changed config: lr: 0.01 \(checkpoint\) -> 0.02 \(now\); "
                                          r"micro_batch: 2 \(checkpoint\) -> 1 \(now\)"):
        train(_cfg(train_shards, run, tokens=512 * 4, resume=True, lr=0.02, micro_batch=1))
    os.remove(run / "checkpoints" / "step-00000002" / "optimizer.safetensors")
    with pytest.raises(CheckpointError, match=r"lacks \['optimizer.safetensors'\]"):
        train(_cfg(train_shards, run, tokens=512 * 4, resume=True))


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def test_cli_trains_from_a_hf_folder_with_a_new_rope_base(train_shards, tmp_path):
    cfg = ModelConfig(vocab_size=16384, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64, rope_theta=1e4)
    save_hf(init_state_dict(cfg, 0), cfg, str(tmp_path / "hf"), "bfloat16")
    cmd = [sys.executable, "-m", "lcdata_train", "train", "--shards", train_shards, "--model", str(tmp_path / "hf"),
           "--seq-len", "256", "--rope-theta", "5e6", "--lr", "1e-3", "--batch-tokens", "512", "--tokens", "1K",
           "--out", str(tmp_path / "run"), "--no-act-ckpt"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert p.returncode == 0, p.stderr
    assert "step 2/2 | loss" in p.stderr and "MFU n/a" in p.stderr
    lines = p.stderr.splitlines()
    assert lines[0].startswith("lcdata train: reading ")  # printed before the model and the data load
    steps = [ln for ln in lines if ln.startswith("step ")]
    assert [s.split()[1] for s in steps] == ["1/2", "2/2"]  # the first step is always shown
    assert all(re.search(r"\| [\d.]+ steps/s \| [\d,]+ tok/s \|.*\| ETA \d+s$", s) for s in steps), steps
    assert steps[-1].endswith("ETA 0s")
    final = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert final["rope_theta"] == 5e6 and final["torch_dtype"] == "bfloat16"
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["batch_tokens"] == 512 and run["total_steps"] == 2
    bad = subprocess.run(cmd[:-3] + ["--batch-tokens", "1000", "--out", str(tmp_path / "bad")], capture_output=True,
                         text=True, env=_env(), timeout=300)
    assert bad.returncode == 2 and "lcdata train: error: batch_tokens (1,000)" in bad.stderr
    assert "Traceback" not in bad.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("parallel", ["fsdp", "ddp"])
def test_two_processes_match_one(train_shards, tmp_path, parallel):
    """FSDP2 with the (tied) debug preset; DDP with an untied model from a HF folder."""
    model = "debug"
    if parallel == "ddp":
        cfg = ModelConfig(vocab_size=16384, dim=32, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=64)
        save_hf(init_state_dict(cfg, 0), cfg, str(tmp_path / "hf"))
        model = str(tmp_path / "hf")
    flags = ["--shards", train_shards, "--model", model, "--lr", "1e-2", "--batch-tokens", "1024", "--tokens", "3K",
             "--micro-batch", "2", "--doc-mask", "--save-every", "0", "--quiet", "--device", "cpu"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "lcdata_train", "train", *flags, "--parallel", parallel,
           "--out", str(tmp_path / "two")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    two = [json.loads(ln) for ln in open(tmp_path / "two" / "log.jsonl")]
    one = train(TrainConfig(shards=train_shards, out=str(tmp_path / "one"), model=model, lr=1e-2, batch_tokens=1024,
                            tokens="3K", micro_batch=2, doc_mask=True, save_every=0, quiet=True, device="cpu"))
    assert len(two) == len(one.losses) == 3
    np.testing.assert_allclose([r["loss"] for r in two], one.losses, rtol=1e-5)
    assert all(r["scored_tokens"] == o["scored_tokens"] for r, o in zip(two, one.records))
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "two" / "final" / "model.safetensors"), load_file(tmp_path / "one" / "final" /
                                                                                    "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
