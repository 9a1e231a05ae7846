"""lcdata_train.memory: the estimate term by term against hand arithmetic, its parameter count against built
models, the refusal naming the numbers and the fixes, and the line `lcdata train` prints at its start."""

import json

import pytest

from lcdata.errors import ConfigError
from lcdata_train.config import ModelConfig, TrainConfig, preset
from lcdata_train.memory import GIB, activations_per_layer, check_fits, estimate_memory, usable_bytes

LLAMA2_7B = ModelConfig(vocab_size=32000, dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, ffn_dim=11008)
H100 = 80 * 10**9  # what torch reports for an H100 80GB: 79.6e9 or so; round here


def test_each_term_equals_hand_arithmetic():
    # vocab 1000, dim 64, 2 layers, 4 heads / 2 kv heads of 16, ffn 128, untied
    cfg = ModelConfig(vocab_size=1000, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128)
    # per layer: attention 64 x 16 x (2x4 + 2x2) = 12,288; MLP 3 x 64 x 128 = 24,576; norms 128 -> 36,992
    # model: 2 x 36,992 + final norm 64 + embedding and output 2 x 64,000 = 202,048
    e = estimate_memory(cfg, seq_len=100, micro_batch=2, world=4, parallel="fsdp", act_ckpt=True, compute_bytes=2,
                        loss_chunk=64)
    assert e.n_params == 202_048 and e.shards == 4
    assert (e.weights, e.gradients, e.optimizer) == (202_048, 202_048, 404_096)  # 4N/4, 4N/4, 8N/4
    assert e.compute_copies == 2 * (2 * 36_992 + 128_064)  # bf16: two blocks + root (embedding, output, norm)
    # per token per layer: 2 x (4x64 + 2x4x16 + 2x2x16 + 4x128 + 2x16) + 4 x (2x64 + 4 + 2) = 1,984 + 536
    per_layer, T = 2_520, 200
    assert activations_per_layer(cfg, 2) == per_layer
    # cos/sin, final norm, backward workspace
    shared = T * (2 * 4 * 16 + (4 + 4) * 64 + 4 + 3 * 128 * 2 + 2 * 64 * 4)
    assert shared == 384_800
    assert e.activations == 2 * T * 64 * 2 + T * per_layer + shared == 940_000  # block inputs + one block
    assert e.loss == 2 * 4 * 64 * 1000 + 2 * 64 * T + 4 * 1000 * 64 == 793_600  # logits chunk, dL/dh, dL/dW
    assert e.total == 202_048 * 2 + 404_096 + 404_096 + 940_000 + 793_600
    off = estimate_memory(cfg, 100, 2, 4, "fsdp", act_ckpt=False, compute_bytes=2, loss_chunk=64)
    assert off.activations == 2 * T * per_layer + shared == 1_392_800
    one = estimate_memory(cfg, 100, 2, 1, "fsdp", True, 2, 64)  # one process: nothing sharded, autocast copies
    assert (one.weights, one.optimizer, one.compute_copies) == (4 * 202_048, 8 * 202_048, 2 * (202_048 - 64_000))
    ddp = estimate_memory(cfg, 100, 2, 4, "ddp", True, 2, 64)
    assert ddp.gradients == 8 * 202_048 and ddp.shards == 1  # grads + DDP's bucket copies
    assert estimate_memory(cfg, 100, 2, 4, "fsdp", True, 4, 64).compute_copies == 0  # fp32: no copies


def _saved_bytes(cfg, tokens: int, dtype, act_ckpt: bool = False) -> int:
    """Bytes of the distinct tensors (not parameters) autograd saves in a forward of ``cfg`` on CPU."""
    torch = pytest.importorskip("torch")
    from lcdata_train.model import Llama

    torch.manual_seed(0)
    m = Llama(cfg).to(dtype)
    m.act_ckpt = act_ckpt
    params = {p.untyped_storage().data_ptr() for p in m.parameters()}
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    ids = torch.randint(0, cfg.vocab_size, (1, tokens))
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        m.hidden(ids)
    return sum(seen.values())


@pytest.mark.parametrize("dtype_name,act_ckpt", [("bfloat16", False), ("float32", False), ("bfloat16", True)])
def test_activations_per_layer_equal_what_autograd_saves(dtype_name, act_ckpt):
    """Measured: the bytes a block saves (3 layers minus 1 layer, halved) equal the formula exactly, in bf16
    weights (as FSDP's param_dtype) and fp32; with checkpointing only the block input (c x dim) stays."""
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, dtype_name)
    kw = dict(vocab_size=512, dim=64, n_heads=4, n_kv_heads=2, ffn_dim=160)
    T, c = 256, dtype.itemsize
    one, three = (_saved_bytes(ModelConfig(n_layers=n, **kw), T, dtype, act_ckpt) for n in (1, 3))
    want = c * 64 if act_ckpt else activations_per_layer(ModelConfig(n_layers=1, **kw), c)
    assert (three - one) / 2 / T == want


def _built_params(cfg) -> int:
    torch = pytest.importorskip("torch")
    from lcdata_train.model import Llama

    with torch.device("meta"):
        m = Llama(cfg)
    return sum(p.numel() for p in m.parameters())  # a tied weight once


@pytest.mark.parametrize("name", ["debug", "tiny", "small", "1b", "7b"])
def test_parameter_count_equals_a_built_model(name):
    cfg = LLAMA2_7B if name == "7b" else preset(name, 16384)
    n = _built_params(cfg)
    e = estimate_memory(cfg, 4096, world=8)
    assert e.n_params == n
    assert e.weights == -(-4 * n // 8) and e.optimizer == -(-8 * n // 8)
    if name == "7b":
        assert n == 6_738_415_616  # Llama-2-7B's published count


def test_llama2_7b_at_80k_on_8_gpus_fits_with_checkpointing_only():
    on = estimate_memory(LLAMA2_7B, 81920, world=8, act_ckpt=True)
    check_fits(LLAMA2_7B, on, H100, "H100", 8, "fsdp")  # fits: no error
    assert 40 * GIB < on.total < usable_bytes(H100)
    off = estimate_memory(LLAMA2_7B, 81920, world=8, act_ckpt=False)
    with pytest.raises(ConfigError) as e:
        check_fits(LLAMA2_7B, off, H100, "NVIDIA H100 80GB HBM3", 8, "fsdp")
    msg = str(e.value)
    assert f"needs about {off.total / GIB:.1f} GiB per GPU" in msg and "activation checkpointing off" in msg
    assert f"activations {off.activations / GIB:.1f} -> {on.activations / GIB:.1f} GiB" in msg
    assert "a shorter --seq-len (<= " in msg and "--no-memory-check" in msg
    with pytest.raises(ConfigError, match=r"use more GPUs \(FSDP shards weights, gradients and AdamW state: 8 GPUs"):
        check_fits(LLAMA2_7B, estimate_memory(LLAMA2_7B, 81920, world=1), H100, "H100", 1, "fsdp")
    with pytest.raises(ConfigError, match="must be 2"):
        estimate_memory(LLAMA2_7B, 1024, compute_bytes=3)


def test_train_prints_the_estimate_and_records_it(train_shards, tmp_path, capsys):
    pytest.importorskip("torch")
    from lcdata_train.train import train

    cfg = TrainConfig(shards=train_shards, out=str(tmp_path / "run"), model="debug", lr=1e-3, batch_tokens=512,
                      micro_batch=2, tokens=512, save_every=0, act_ckpt=False, device="cpu")
    train(cfg)
    est = estimate_memory(preset("debug", 16384, 4096), 256, 2, 1, "fsdp", False, 4, 4096)
    err = capsys.readouterr().err
    assert f"memory estimate per rank (CPU: not checked): {est.line()}; activation checkpointing off" in err
    assert json.loads((tmp_path / "run" / "run.json").read_text())["memory_estimate"] == est.to_dict()


def test_flags_map_to_the_config_and_a_resume_may_change_them():
    from lcdata_train.cli import build_parser, config_from_args
    from lcdata_train.config import config_changes

    a = build_parser().parse_args(["train", "--shards", "S", "--out", "R", "--checkpoint-format", "sharded",
                                   "--no-memory-check"])
    c = config_from_args(a)
    assert c.checkpoint_format == "sharded" and c.memory_check is False
    old = TrainConfig(shards="S", out="R").to_dict()
    del old["checkpoint_format"], old["memory_check"]  # a checkpoint of an earlier lcdata: no such keys
    assert config_changes(old, c) == []
    with pytest.raises(ConfigError, match=r"checkpoint_format='zip' must be one of \('auto', 'full', 'sharded'\)"):
        TrainConfig(shards="S", out="R", checkpoint_format="zip")
