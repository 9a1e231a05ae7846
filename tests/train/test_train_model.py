"""lcdata_train.model / attention / checkpoint: logits equal transformers' LlamaForCausalLM on the same random
weights, the HF round trip is lossless, backends agree, document masking equals documents run alone."""

import inspect
import json
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from safetensors.torch import load_file  # noqa: E402

from lcdata_train import attention as A  # noqa: E402
from lcdata_train.checkpoint import (  # noqa: E402
    CheckpointError,
    hf_config_dict,
    load_pretrained,
    read_hf_config,
    save_hf,
)
from lcdata_train.config import ModelConfig  # noqa: E402
from lcdata_train.infer import load_model  # noqa: E402
from lcdata_train.model import KVCache, Llama, init_state_dict, rope_inv_freq  # noqa: E402

CUDA = torch.cuda.is_available()
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _cfg(**kw):
    base = dict(vocab_size=101, dim=48, n_layers=2, n_heads=6, n_kv_heads=2, ffn_dim=80, rope_theta=5e6,
                max_seq_len=128, norm_eps=1e-6)
    base.update(kw)
    return ModelConfig(**base)


def _model(cfg, seed=0):
    m = Llama(cfg)
    m.load_state_dict(init_state_dict(cfg, seed))
    # non-trivial norm weights, so a mix-up of the two norms would show
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(n))))
    return m.eval()


def _hf_model(cfg, sd):
    from transformers import LlamaConfig, LlamaForCausalLM

    d = hf_config_dict(cfg)
    hf = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in d.items() if k not in ("architectures", "model_type")}))
    hf.load_state_dict({k: v for k, v in sd.items()}, strict=not cfg.tie_embeddings)
    return hf.eval()


@pytest.mark.parametrize("kw", [{}, {"tie_embeddings": True, "rope_scaling": LLAMA3},
                                {"rope_scaling": {"rope_type": "linear", "factor": 4.0}, "n_kv_heads": 6}],
                         ids=["gqa-untied", "tied-llama3", "mha-linear"])
def test_logits_match_transformers(kw):
    pytest.importorskip("transformers")
    cfg = _cfg(**kw)
    m = _model(cfg)
    hf = _hf_model(cfg, m.state_dict())
    ids = torch.randint(0, cfg.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = m(ids)
        theirs = hf(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


# Every rope_scaling type Llama checkpoints use, against transformers' own RoPE. The config's max_seq_len (16)
# is what transformers reads as max_position_embeddings; ours is then raised to 64 (as `load_model` and the
# trainer do), which must not move any anchor. Lengths below, at and above the original 16.
ROPE_SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 4.0},
    "dynamic-legacy-type": {"type": "dynamic", "factor": 10.0},  # the paper's checkpoints' form
    "llama3": {**LLAMA3, "original_max_position_embeddings": 8},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    "yarn-options": {"rope_type": "yarn", "factor": 3.0, "original_max_position_embeddings": 12, "beta_fast": 8,
                     "beta_slow": 2, "mscale": 1.0, "mscale_all_dim": 0.5, "truncate": False},
    "yarn-attention-factor": {"rope_type": "yarn", "factor": 4.0, "attention_factor": 1.3},
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("name", list(ROPE_SCALINGS))
def test_rope_scaling_logits_match_transformers(name, dtype):
    pytest.importorskip("transformers")
    cfg = _cfg(rope_theta=1e4, max_seq_len=16, rope_scaling=ROPE_SCALINGS[name])
    m = _model(cfg)
    ours = Llama(cfg.replace(max_seq_len=64))
    ours.load_state_dict(m.state_dict())
    ours = ours.to(dtype).eval()
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    for L in (11, 16, 17, 40, 64):
        ids = torch.randint(0, cfg.vocab_size, (2, L), generator=torch.Generator().manual_seed(L))
        with torch.no_grad():
            theirs = _hf_model(cfg, m.state_dict()).to(dtype)(input_ids=ids).logits  # fresh: no remembered length
            torch.testing.assert_close(ours(ids), theirs, rtol=tol, atol=tol, msg=lambda s, L=L: f"L={L}: {s}")


def test_dynamic_ntk_changes_only_beyond_the_original_length():
    """Below and at the original length dynamic NTK is plain RoPE bit for bit; beyond it every token's logits
    change with the input's length (the base grows with it), also those of the first 16 tokens."""
    plain = _cfg(rope_theta=1e4, max_seq_len=64)
    dyn = _cfg(rope_theta=1e4, max_seq_len=16, rope_scaling={"rope_type": "dynamic", "factor": 4.0})
    dyn = dyn.replace(max_seq_len=64)
    assert dyn.rope_scaling["original_max_position_embeddings"] == 16  # pinned once set
    a, b = _model(plain), Llama(dyn)
    b.load_state_dict(a.state_dict())
    b.eval()
    ids = torch.randint(0, plain.vocab_size, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(ids[:, :16]), b(ids[:, :16]))
        long_a, long_b = a(ids), b(ids)
    assert not torch.allclose(long_a[:, :16], long_b[:, :16], atol=1e-4)
    assert torch.equal(long_a[:, 0], long_b[:, 0])  # position 0: no rotation at any base


def test_dynamic_ntk_base_of_the_papers_checkpoints():
    """PAPER.md: factor 10 over 4,096 positions is about a 2.08M base at 81,920 tokens (head_dim 128)."""
    cfg = ModelConfig(vocab_size=32000, dim=4096, n_layers=1, n_heads=32, n_kv_heads=32, ffn_dim=11008,
                      max_seq_len=4096, rope_scaling={"type": "dynamic", "factor": 10.0})
    base = 1e4 * (10 * 81920 / 4096 - 9) ** (128 / 126)
    assert 2.07e6 < base < 2.09e6
    inv = rope_inv_freq(cfg, 81920)
    torch.testing.assert_close(inv, 1.0 / base ** (torch.arange(0, 128, 2).double() / 128), rtol=1e-5, atol=0,
                               check_dtype=False)
    assert torch.equal(rope_inv_freq(cfg, 4096), rope_inv_freq(cfg.replace(rope_scaling=None)))


def test_dynamic_ntk_decoding_with_a_cache_matches_transformers():
    """Greedy decoding across the original length: each step's length is its last position + 1 and the cached
    keys keep the frequencies they were computed with, as in transformers' generation."""
    pytest.importorskip("transformers")
    from transformers import DynamicCache

    cfg = _cfg(rope_theta=1e4, max_seq_len=16, rope_scaling={"rope_type": "dynamic", "factor": 4.0})
    m = _model(cfg)
    hf = _hf_model(cfg, m.state_dict())
    ours = Llama(cfg.replace(max_seq_len=32))
    ours.load_state_dict(m.state_dict())
    ours.eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 24), generator=torch.Generator().manual_seed(5))
    cache = KVCache(ours.cfg, 1, 32, "cpu", torch.float32)
    # transformers 5 names the argument `cache` (4.x: `past_key_values`, deprecated in 5)
    arg = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
    hf_cache = {arg: DynamicCache()}
    with torch.no_grad():
        for a, b in [(0, 12)] + [(i, i + 1) for i in range(12, 24)]:
            mine = ours.lm_head(ours.hidden(ids[:, a:b], cache=cache))
            theirs = hf(input_ids=ids[:, a:b], use_cache=True, **hf_cache).logits
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5,
                                       msg=lambda s, a=a, b=b: f"tokens {a}:{b}: {s}")


def test_papers_dynamic_checkpoint_loads_and_evaluates_beyond_its_length(tmp_path):
    """A folder transformers saved with the paper's rope_scaling ({"type": "dynamic", "factor": 10}) loads,
    evaluates at 4x its max_position_embeddings like transformers, and our save is read back the same by both."""
    pytest.importorskip("transformers")
    from transformers import LlamaForCausalLM

    cfg = _cfg(rope_theta=1e4, max_seq_len=16, rope_scaling={"type": "dynamic", "factor": 10.0})
    hf = _hf_model(cfg, _model(cfg).state_dict())
    hf.save_pretrained(tmp_path / "hf")
    j = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert j["max_position_embeddings"] == 16
    m, _ = load_model(str(tmp_path / "hf"), "cpu", max_seq_len=64)
    assert m.cfg.rope_scaling == {"rope_type": "dynamic", "factor": 10.0, "original_max_position_embeddings": 16}
    ids = torch.randint(0, cfg.vocab_size, (1, 64), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(m(ids), hf(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    save_hf(m.state_dict(), m.cfg, str(tmp_path / "ours"))  # max_seq_len 64, anchor 16
    j = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert j["max_position_embeddings"] == 16 and j["rope_scaling"] == {"rope_type": "dynamic", "factor": 10.0}
    back = LlamaForCausalLM.from_pretrained(tmp_path / "ours").eval()
    again, _ = load_model(str(tmp_path / "ours"), "cpu", max_seq_len=64)
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=ids).logits, again(ids), rtol=1e-5, atol=1e-5)


def test_unsupported_rope_scaling_in_config_json_is_named(tmp_path):
    cfg = _cfg()
    save_hf(_model(cfg).state_dict(), cfg, str(tmp_path / "m"))
    j = json.loads((tmp_path / "m" / "config.json").read_text())
    j["rope_scaling"] = {"rope_type": "longrope", "factor": 4.0}
    os.remove(tmp_path / "m" / "checksums.json")
    (tmp_path / "m" / "config.json").write_text(json.dumps(j))
    with pytest.raises(CheckpointError, match=r"config.json: rope scaling type 'longrope' is not supported; use "
                                              r"one of \('default', 'linear', 'dynamic', 'llama3', 'yarn'\)"):
        load_pretrained(str(tmp_path / "m"))


def test_rope_scaling_flag_is_anchored_at_the_models_length(tmp_path):
    """`lcdata train --model HF --seq-len 64 --rope-scaling dynamic:4` on a 16-position model: the scaling's
    original length is the model's 16, not the raised 64 (else dynamic NTK would never engage)."""
    from lcdata_train.cli import build_parser, config_from_args
    from lcdata_train.train import resolve_model

    cfg = _cfg(max_seq_len=16)
    save_hf(_model(cfg).state_dict(), cfg, str(tmp_path / "m"))
    for flag, want in [("dynamic:4", {"rope_type": "dynamic", "factor": 4.0}),
                       ("yarn:2", {"rope_type": "yarn", "factor": 2.0}),
                       ('{"rope_type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4}',
                        {"rope_type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4})]:
        a = build_parser().parse_args(["train", "--shards", "S", "--model", str(tmp_path / "m"), "--out",
                                       str(tmp_path / "run"), "--rope-scaling", flag])
        tc = config_from_args(a)
        assert tc.rope_scaling == want
        mcfg, _, _ = resolve_model(tc, cfg.vocab_size, 64)
        assert mcfg.max_seq_len == 64
        assert mcfg.rope_scaling == {**want, "original_max_position_embeddings": 16}


def test_hf_round_trip_is_lossless(tmp_path):
    pytest.importorskip("transformers")
    from transformers import LlamaForCausalLM

    cfg = _cfg(tie_embeddings=True, rope_scaling=LLAMA3)
    hf = _hf_model(cfg, _model(cfg).state_dict())
    hf.config.bos_token_id = 7
    hf.save_pretrained(tmp_path / "hf")  # transformers' own files
    m = load_pretrained(str(tmp_path / "hf"))
    assert m.cfg.tie_embeddings and m.cfg.rope_scaling["rope_type"] == "llama3" and m.cfg.rope_theta == 5e6
    save_hf(m.state_dict(), m.cfg, str(tmp_path / "ours"))
    again = load_pretrained(str(tmp_path / "ours"))
    a, b = load_file(tmp_path / "hf" / "model.safetensors"), load_file(tmp_path / "ours" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_hf_config(str(tmp_path / "ours"))[0] == m.cfg == again.cfg
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["bos_token_id"] == 7
    back = LlamaForCausalLM.from_pretrained(tmp_path / "ours").eval()  # and transformers reads ours
    ids = torch.arange(30)[None] % cfg.vocab_size
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=ids).logits, again(ids), rtol=1e-5, atol=1e-5)


def test_bf16_save_round_trip(tmp_path):
    cfg = _cfg()
    m = _model(cfg)
    save_hf(m.state_dict(), cfg, str(tmp_path / "a"), "bfloat16")
    m2 = load_pretrained(str(tmp_path / "a"))
    save_hf(m2.state_dict(), m2.cfg, str(tmp_path / "b"), "bfloat16")
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(a[k].dtype == torch.bfloat16 and torch.equal(a[k], b[k]) for k in a)
    assert read_hf_config(str(tmp_path / "a"))[1] == "bfloat16"


def test_bad_checkpoints_are_named(tmp_path):
    cfg = _cfg()
    save_hf(_model(cfg).state_dict(), cfg, str(tmp_path / "ok"))
    os.makedirs(tmp_path / "nofile")
    (tmp_path / "nofile" / "config.json").write_text((tmp_path / "ok" / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_pretrained(str(tmp_path / "nofile"))
    (tmp_path / "nofile" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="pickle"):
        load_pretrained(str(tmp_path / "nofile"))
    j = json.loads((tmp_path / "ok" / "config.json").read_text())
    j["intermediate_size"] = 96
    (tmp_path / "ok" / "config.json").write_text(json.dumps(j))
    with pytest.raises(CheckpointError, match=r"ok/config.json: \d+ bytes, but checksums.json records"):
        load_pretrained(str(tmp_path / "ok"))  # an edit after save_hf: its checksums.json tells
    os.remove(tmp_path / "ok" / "checksums.json")  # as a folder from elsewhere: the shapes tell
    with pytest.raises(CheckpointError, match=r"mlp.gate_proj.weight: \(80, 48\) in the file, \(96, 48\) from config"):
        load_pretrained(str(tmp_path / "ok"))
    with pytest.raises(CheckpointError, match="no config.json"):
        load_pretrained(str(tmp_path))


def _qkv(B=2, L=24, H=4, Hkv=2, D=8, seed=0, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, L, h, D, generator=g).to(device, dtype) for h in (H, Hkv, Hkv)]


def test_cpu_backends_match_reference():
    q, k, v = _qkv()
    cu = torch.tensor([0, 5, 17, 24, 30, 48], dtype=torch.int32)
    ref = A.reference_attention(q, k, v)
    torch.testing.assert_close(A.attention(q, k, v, backend="sdpa"), ref, rtol=1e-5, atol=1e-5)
    ref_docs = A.reference_attention(q, k, v, cu)
    torch.testing.assert_close(A.attention(q, k, v, cu, 18, backend="sdpa_docs"), ref_docs, rtol=1e-5, atol=1e-5)
    assert A.pick_backend(torch.device("cpu"), False) == "sdpa"
    assert A.pick_backend(torch.device("cpu"), True) == "sdpa_docs"


def test_varlen_arguments_follow_the_installed_signature():
    """torch.nn.attention.varlen.varlen_attn took is_causal in torch 2.9, window_size later, enable_gqa later still:
    the call asks for causal attention in whichever form the signature has, and repeats KV heads without
    enable_gqa. The installed torch's real signature first (read on CPU too), then the older forms."""
    if _has_varlen_module():
        kw, rep = A.varlen_arguments(A.varlen_parameters(), 8, 2)
        assert ("window_size" in kw) != ("is_causal" in kw) and (rep == 1) == ("enable_gqa" in kw), kw
    assert A.varlen_arguments({"is_causal", "return_aux"}, 8, 2) == ({"is_causal": True}, 4)
    assert A.varlen_arguments({"is_causal", "window_size"}, 8, 8) == ({"window_size": (-1, 0)}, 1)
    assert A.varlen_arguments({"window_size", "enable_gqa"}, 8, 2) == ({"window_size": (-1, 0), "enable_gqa": True}, 1)


def _has_varlen_module() -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (flash-attn / SDPA flash / varlen kernels)")
@pytest.mark.parametrize("backend", ["flash_attn", "sdpa", "torch_varlen"])
@pytest.mark.parametrize("masked", [False, True])
def test_cuda_backends_match_cpu(backend, masked):
    if backend == "flash_attn" and not A.has_flash_attn():
        pytest.skip("flash-attn is not installed")
    if backend == "torch_varlen" and not A.has_torch_varlen():
        pytest.skip("torch.nn.attention.varlen is not available")
    if backend == "sdpa" and masked:
        pytest.skip("plain SDPA has no document mask (routed to sdpa_docs)")
    q, k, v = _qkv(L=256, H=8, Hkv=2, D=64, device="cuda", dtype=torch.bfloat16)
    cu = torch.tensor([0, 100, 256, 300, 512], dtype=torch.int32, device="cuda") if masked else None
    out = A.attention(q, k, v, cu, 212 if masked else None, backend=backend).float()
    ref = A.reference_attention(q.float(), k.float(), v.float(), cu)
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)


def test_doc_mask_equals_documents_alone():
    cfg = _cfg(max_seq_len=64)
    m = _model(cfg)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, cfg.vocab_size, (2, 32), generator=g)
    docs = [(0, 0, 10), (0, 10, 25), (0, 25, 32), (1, 0, 32)]
    cu = torch.tensor([0, 10, 25, 32, 64], dtype=torch.int32)
    pos = torch.zeros(2, 32, dtype=torch.long)
    for r, a, b in docs:
        pos[r, a:b] = torch.arange(b - a)
    with torch.no_grad():
        packed = m(ids, pos, cu)
        unmasked = m(ids)
        for r, a, b in docs:
            alone = m(ids[r: r + 1, a:b])
            torch.testing.assert_close(packed[r: r + 1, a:b], alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(packed[0, 10:25], unmasked[0, 10:25], atol=1e-3)  # the mask matters


def test_activation_checkpointing_same_gradients():
    cfg = _cfg()
    ids = torch.randint(0, cfg.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    labels = torch.roll(ids, -1, 1)
    grads = []
    for ckpt in (False, True):
        m = _model(cfg).train()
        m.act_ckpt, m.loss_chunk = ckpt, 7
        loss, n = m(ids, labels=labels)
        (loss / n).backward()
        grads.append({k: p.grad.clone() for k, p in m.named_parameters()})
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-6, atol=1e-7)
