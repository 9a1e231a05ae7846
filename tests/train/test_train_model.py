"""lcdata_train.model / attention / checkpoint: logits equal transformers' LlamaForCausalLM on the same random
weights, the HF round trip is lossless, backends agree, document masking equals documents run alone."""

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
from lcdata_train.model import Llama, init_state_dict  # noqa: E402

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
