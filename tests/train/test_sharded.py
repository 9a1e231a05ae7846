"""Sharded (torch.distributed.checkpoint) training checkpoints under FSDP2 with 2 processes on CPU (torchrun,
gloo), and the Hugging Face export written shard by shard: kill -> resume equals the uninterrupted run, a
checkpoint of 2 ranks resumes on 1, a full (1-process) checkpoint resumes on 2 FSDP ranks, and a sharded
checkpoint loads into one process and exports to safetensors whose logits equal transformers'."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from lcdata.errors import ConfigError  # noqa: E402
from lcdata_train.checkpoint import CheckpointError, load_pretrained  # noqa: E402
from lcdata_train.config import ModelConfig, TrainConfig  # noqa: E402
from lcdata_train.infer import load_model  # noqa: E402
from lcdata_train.sharded import (  # noqa: E402
    export_hf,
    load_sharded_model_state,
    plan_hf_shards,
    sharded_to_hf,
)
from lcdata_train.train import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STEPS = 4
FLAGS = ["--model", "debug", "--lr", "1e-2", "--batch-tokens", "1024", "--tokens", f"{STEPS}K", "--micro-batch", "2",
         "--doc-mask", "--save-every", "2", "--quiet", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(shards, out, *extra, fault=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    env.pop("LCDATA_FAULT", None)
    if fault:
        env["LCDATA_FAULT"] = fault
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_port()), "-m", "lcdata_train", "train", "--shards", shards, *FLAGS, *extra,
           "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _ok(p) -> None:
    """The torchrun run succeeded; else the ranks' own messages (not torchrun's launcher noise)."""
    noise = ("W1", "E1", "I1", "  File", "    ", "Traceback", "torch.distributed.elastic")
    assert p.returncode == 0, "\n".join(ln for ln in p.stderr.splitlines() if not ln.startswith(noise))[-4000:]


def _losses(run):
    return [json.loads(ln)["loss"] for ln in open(Path(run) / "log.jsonl")]


def _cfg(shards, out, **kw):
    return TrainConfig(shards=shards, out=str(out), model="debug", lr=1e-2, batch_tokens="1024", tokens=f"{STEPS}K",
                       micro_batch=2, doc_mask=True, save_every=2, quiet=True, device="cpu", **kw)


@pytest.fixture(scope="module")
def runs(train_shards, tmp_path_factory):
    """``full``: 2 FSDP ranks, 4 steps uninterrupted; ``cut``: the same killed (SIGKILL, rank 0) after logging
    step 3, whose newest checkpoint is then step 2 (sharded), resumed by 2 ranks."""
    root = tmp_path_factory.mktemp("sharded")
    p = _torchrun(train_shards, root / "full")
    _ok(p)
    killed = _torchrun(train_shards, root / "cut", fault="train.step@3")
    assert killed.returncode != 0
    return root, killed


def test_checkpoints_are_sharded_atomic_and_checksummed(runs):
    root, killed = runs
    ckpt = root / "cut" / "checkpoints" / "step-00000002"
    assert sorted(os.listdir(root / "cut" / "checkpoints")) == ["step-00000002"]  # no step-3 yet, no .tmp
    names = sorted(os.listdir(ckpt))
    assert names == [".metadata", "__0_0.distcp", "__1_0.distcp", "checksums.json", "config.json", "state.json"]
    sums = json.loads((ckpt / "checksums.json").read_text())["files"]
    assert sorted(sums) == [n for n in names if n != "checksums.json"]
    state = json.loads((ckpt / "state.json").read_text())
    assert state["format"] == "dcp" and state["world"] == 2 and state["step"] == 2
    assert not (ckpt / "model.safetensors").exists()  # no rank gathered the model
    # each rank wrote its half: the two shard files are of similar size, not one holding everything
    a, b = (os.path.getsize(ckpt / f"__{r}_0.distcp") for r in (0, 1))
    assert 0.5 < a / b < 2


def test_kill_then_resume_equals_the_uninterrupted_run(train_shards, runs):
    root, _ = runs
    p = _torchrun(train_shards, root / "cut", "--resume")
    _ok(p)
    assert _losses(root / "cut") == _losses(root / "full")  # bitwise
    for name in ("model.safetensors", "config.json"):
        assert (root / "cut" / "final" / name).read_bytes() == (root / "full" / "final" / name).read_bytes()
    assert sorted(os.listdir(root / "cut" / "checkpoints")) == ["step-00000002", "step-00000004"]


def test_a_two_rank_checkpoint_resumes_in_one_process(train_shards, runs, tmp_path):
    """DCP reshards: the step-2 checkpoint of 2 ranks continues in 1 process (same sequences per step, so the
    same losses up to the order of the gradient reduction)."""
    import shutil

    root, _ = runs
    run = tmp_path / "one"
    shutil.copytree(root / "full", run)
    shutil.rmtree(run / "checkpoints" / "step-00000004")
    shutil.rmtree(run / "final")
    res = train(_cfg(train_shards, run, resume=True))
    assert res.first_step == 2 and res.step == STEPS
    np.testing.assert_allclose(res.losses, _losses(root / "full")[2:], rtol=1e-5)
    names = sorted(os.listdir(run / "checkpoints" / "step-00000004"))
    assert "model.safetensors" in names  # 1 process, auto: the full format


def test_a_full_one_process_checkpoint_resumes_on_two_fsdp_ranks(train_shards, runs, tmp_path):
    """The existing format keeps working: 2 steps in 1 process (full checkpoint), then 2 FSDP ranks resume it
    and write sharded checkpoints; the losses equal the 2-rank uninterrupted run's."""
    root, _ = runs
    first = train(_cfg(train_shards, tmp_path / "mix", stop_after=2))
    assert first.step == 2 and (tmp_path / "mix" / "checkpoints" / "step-00000002" / "model.safetensors").exists()
    p = _torchrun(train_shards, tmp_path / "mix", "--resume")
    _ok(p)
    np.testing.assert_allclose(_losses(tmp_path / "mix"), _losses(root / "full"), rtol=1e-5)
    assert (tmp_path / "mix" / "checkpoints" / "step-00000004" / ".metadata").exists()


def test_sharded_checkpoint_loads_in_one_process_and_exports_to_transformers(runs, tmp_path):
    """The step-4 checkpoint of 2 ranks: its state in one process equals the run's final model (gathered from
    FSDP and exported); converted shard by shard (small shards: several files and an index), transformers'
    LlamaForCausalLM gives the same logits as our model."""
    transformers = pytest.importorskip("transformers")
    root, _ = runs
    ckpt = str(root / "full" / "checkpoints" / "step-00000004")
    sd = load_sharded_model_state(ckpt)
    final = load_pretrained(str(root / "full" / "final")).state_dict()
    assert sd.keys() == final.keys()
    for k in sd:
        assert torch.equal(sd[k], final[k]), k
    files = sharded_to_hf(ckpt, str(tmp_path / "hf"), max_shard_bytes=1 << 20)
    shards = [f for f in files if f.startswith("model-")]
    assert len(shards) >= 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == 4 * sum(v.numel() for k, v in sd.items() if k != "lm_head.weight")
    ours, _ = load_model(ckpt, device="cpu")  # evaluation reads a sharded checkpoint directly
    hf = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "hf"), attn_implementation="eager").eval()
    ids = torch.randint(0, ours.cfg.vocab_size, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(load_pretrained(str(tmp_path / "hf"))(ids), ours(ids), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="is not empty"):
        sharded_to_hf(ckpt, str(tmp_path / "hf"))
    with pytest.raises(ConfigError, match="is not a sharded checkpoint"):
        sharded_to_hf(str(root / "full" / "final"), str(tmp_path / "x"))


def test_a_damaged_shard_is_named_before_loading(runs, tmp_path):
    import shutil

    root, _ = runs
    ckpt = tmp_path / "step-00000004"
    shutil.copytree(root / "full" / "checkpoints" / "step-00000004", ckpt)
    b = bytearray((ckpt / "__1_0.distcp").read_bytes())
    b[len(b) // 2] ^= 1
    (ckpt / "__1_0.distcp").write_bytes(bytes(b))
    with pytest.raises(CheckpointError, match=r"__1_0.distcp: SHA-256 differs"):
        load_model(str(ckpt), device="cpu")


def test_shard_plan_covers_every_tensor_once_within_the_limit():
    cfg = ModelConfig(vocab_size=1000, dim=64, n_layers=3, n_heads=4, n_kv_heads=2, ffn_dim=128)
    limit = 100_000
    plan = plan_hf_shards(cfg, "bfloat16", limit)
    names = [n for g in plan for n, _ in g]
    from lcdata_train.checkpoint import expected_shapes

    assert names == list(expected_shapes(cfg))
    for g in plan:
        size = sum(2 * int(np.prod(s)) for _, s in g)
        assert size <= limit or len(g) == 1  # the 128,000-byte embedding alone
    assert len(plan_hf_shards(cfg, "float32")) == 1


def test_export_replaces_its_own_files_and_refuses_foreign_ones(tmp_path):
    from lcdata_train.model import init_state_dict

    cfg = ModelConfig(vocab_size=256, dim=32, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=64)
    sd = init_state_dict(cfg, 0)

    def fetch(group):
        return {k: sd[k] for k, _ in group}

    out = str(tmp_path / "m")
    several = export_hf(fetch, cfg, out, max_shard_bytes=20_000)
    assert "model.safetensors.index.json" in several
    one = export_hf(fetch, cfg, out)  # the sharded files of the first export are replaced, not left beside
    assert sorted(os.listdir(out)) == sorted([*one, "checksums.json"]) == [
        "checksums.json", "config.json", "model.safetensors"]
    for k, v in load_pretrained(out).state_dict().items():
        assert torch.equal(v, sd[k])
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ConfigError, match="lcdata did not write"):
        export_hf(fetch, cfg, str(tmp_path / "theirs"))


def test_export_cli_writes_bf16_shards(runs, tmp_path):
    from safetensors.torch import load_file

    root, _ = runs
    ckpt = str(root / "full" / "checkpoints" / "step-00000004")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "lcdata_train", "export-hf", "--checkpoint", ckpt, "--out", str(tmp_path / "bf16"),
           "--max-shard-size", "1M"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "model.safetensors.index.json" in p.stdout
    sd = load_sharded_model_state(ckpt)
    got = {}
    for f in sorted(os.listdir(tmp_path / "bf16")):
        if f.startswith("model-"):
            got.update(load_file(tmp_path / "bf16" / f))
    assert got.keys() == sd.keys() - {"lm_head.weight"}  # tied: stored once
    assert all(torch.equal(v, sd[k].to(torch.bfloat16)) for k, v in got.items())
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 2 and "is not empty" in again.stderr and "Traceback" not in again.stderr
