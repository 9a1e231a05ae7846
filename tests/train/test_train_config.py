"""lcdata_train.config (torch-free): sizes, batch arithmetic, presets, validation, resume comparison."""

import subprocess
import sys

import pytest

from lcdata.errors import ConfigError
from lcdata_train.config import (
    ModelConfig,
    TrainConfig,
    config_changes,
    parse_count,
    preset,
    resolve_batch,
)


def test_parse_count():
    assert parse_count("4M") == (4_000_000, True)
    assert parse_count("5B") == (5_000_000_000, True)
    assert parse_count(4194304) == (4194304, False)
    assert parse_count("4194304") == (4194304, False)
    with pytest.raises(ConfigError, match="'4X' is not a token count"):
        parse_count("4X")


def test_paper_batch_is_rounded_and_exact_batches_must_divide():
    # the paper's 4M tokens at 80K: 49 sequences of 81,920 on one GPU, 48 on 8
    assert resolve_batch("4M", 81920, 1, 1) == (49, 49)
    assert resolve_batch("4M", 81920, 8, 1) == (48, 6)
    assert resolve_batch(81920 * 16, 81920, 8, 1) == (16, 2)
    with pytest.raises(ConfigError, match=r"batch_tokens \(4,194,304\) must be a multiple of seq_len x world_size x "
                                          r"micro_batch \(81,920 x 8 x 1 = 655,360\); use 3,932,160 or 4,587,520"):
        resolve_batch(4194304, 81920, 8, 1)


def test_presets():
    big = preset("1b", 128256)
    assert big.n_params() == 1_235_814_400  # Llama-3.2-1B
    assert preset("debug", 16384).vocab_size == 16384 and preset("debug", 1000).vocab_size == 1024
    with pytest.raises(ConfigError, match="unknown model preset 'huge'"):
        preset("huge", 100)


def test_model_config_validation():
    with pytest.raises(ConfigError, match=r"n_heads \(6\) must be a multiple of n_kv_heads \(4\)"):
        ModelConfig(vocab_size=10, dim=48, n_layers=1, n_heads=6, n_kv_heads=4, ffn_dim=8)
    with pytest.raises(ConfigError, match="rope scaling 'llama3' needs"):
        ModelConfig(vocab_size=10, dim=48, n_layers=1, n_heads=6, n_kv_heads=2, ffn_dim=8,
                    rope_scaling={"rope_type": "llama3", "factor": 8})
    c = ModelConfig(vocab_size=10, dim=48, n_layers=1, n_heads=6, n_kv_heads=2, ffn_dim=8,
                    rope_scaling={"type": "linear", "factor": 2})
    assert c.head_dim == 8 and c.rope_scaling == {"rope_type": "linear", "factor": 2}


def test_rope_scaling_validation():
    def cfg(rs, max_seq_len=4096):
        return ModelConfig(vocab_size=10, dim=48, n_layers=1, n_heads=6, n_kv_heads=2, ffn_dim=8,
                           max_seq_len=max_seq_len, rope_scaling=rs)

    with pytest.raises(ConfigError, match=r"rope scaling type 'longrope' is not supported; use one of \('default', "
                                          r"'linear', 'dynamic', 'llama3', 'yarn'\)"):
        cfg({"rope_type": "longrope", "factor": 4.0})
    with pytest.raises(ConfigError, match=r"rope scaling 'yarn' needs \['factor'\]"):
        cfg({"rope_type": "yarn"})
    with pytest.raises(ConfigError, match="rope scaling 'dynamic' factor=0.5 must be a number >= 1"):
        cfg({"type": "dynamic", "factor": 0.5})
    with pytest.raises(ConfigError, match="partial_rotary_factor=0.5 is not supported"):
        cfg({"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5})
    assert cfg({"rope_type": "default", "rope_theta": 1e4}).rope_scaling is None
    # dynamic, llama3 and yarn are anchored at max_seq_len when built, and stay there when it is raised
    c = cfg({"type": "dynamic", "factor": 10.0})
    assert c.rope_scaling == {"rope_type": "dynamic", "factor": 10.0, "original_max_position_embeddings": 4096}
    assert c.replace(max_seq_len=81920).rope_scaling == c.rope_scaling
    y = cfg({"rope_type": "yarn", "factor": 4.0, "beta_fast": 16}, max_seq_len=8192)
    assert y.rope_scaling == {"rope_type": "yarn", "factor": 4.0, "beta_fast": 16,
                              "original_max_position_embeddings": 8192}
    assert "original_max_position_embeddings" not in cfg({"rope_type": "linear", "factor": 2.0}).rope_scaling


def test_train_config_validation_and_resume_changes():
    with pytest.raises(ConfigError, match="schedule='linear' must be one of"):
        TrainConfig(shards="s", out="o", schedule="linear")
    with pytest.raises(ConfigError, match="lr=0 must be > 0"):
        TrainConfig(shards="s", out="o", lr=0)
    a = TrainConfig(shards="s", out="o", lr=2e-5)
    saved = a.to_dict()
    assert config_changes(saved, TrainConfig(shards="s", out="o2", lr=2e-5, tokens="6B", resume=True)) == []
    assert config_changes(saved, TrainConfig(shards="s", out="o", lr=3e-5, doc_mask=True)) == [
        "doc_mask: False (checkpoint) -> True (now)", "lr: 2e-05 (checkpoint) -> 3e-05 (now)"]
    cos = TrainConfig(shards="s", out="o", schedule="cosine").to_dict()
    assert config_changes(cos, TrainConfig(shards="s", out="o", schedule="cosine", tokens="6B")) == [
        "tokens: '5B' (checkpoint) -> '6B' (now)"]


def test_cli_parsing_needs_no_torch():
    code = ("import sys; from lcdata_train.cli import build_parser, config_from_args; "
            "a = build_parser().parse_args(['train', '--shards', 'S', '--model', 'tiny', '--seq-len', '81920', "
            "'--rope-theta', '5e6', '--lr', '2e-5', '--batch-tokens', '4M', '--tokens', '5B', '--out', 'R', "
            "'--resume']); c = config_from_args(a); "
            "print(c.seq_len, c.rope_theta, c.batch_tokens, c.tokens, c.resume, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["81920", "5000000.0", "4M", "5B", "True", "False"]
