"""Checkpoints: Hugging Face LLaMA folders in and out, and training checkpoints for exact resume.

Hugging Face format (what ``LlamaForCausalLM.from_pretrained`` reads and writes): ``config.json`` plus
``model.safetensors`` (or shards listed in ``model.safetensors.index.json``). Tensor names are ours
unchanged (`model.py` uses Hugging Face's names); a tied ``lm_head.weight`` is not stored. Loading checks
every name and shape against config.json and names what is missing or differs. ``pytorch_model.bin``
(a pickle) is refused: nothing here ever unpickles, only safetensors and JSON are read.

A training checkpoint ``RUN/checkpoints/step-00000100/`` holds the model in HF format (fp32, exact),
``optimizer.safetensors`` (AdamW moments and step counts, keyed ``<param>/<name>``) and ``state.json``
(step, tokens, data-loader state, optimizer hyper-parameters, the run's config, the shards' identity),
written into a temporary folder that is then renamed: a folder named ``step-*`` is complete.

Checksums: every folder written here (training checkpoints, ``RUN/final``, `save_hf`) ends with
``checksums.json`` = ``{"algorithm": "sha256", "files": {name: {"bytes", "sha256"}}}`` over each file it
wrote, written last (atomically). Resume and evaluation call `verify_model_folder` /
`check_training_checkpoint` before reading anything: a file missing, of another size or with another SHA-256
(truncated, emptied, a flipped bit) is a `CheckpointError` naming the file and what to do. A folder without
checksums.json (a Hugging Face download, a checkpoint of an older lcdata) still loads, unverified; a
damaged safetensors or JSON file there is still a one-line `CheckpointError`, never a parser's traceback.
Cost: one extra read of each file (SHA-256, about 1 GB/s per core) at save and at load.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lcdata.errors import ConfigError, LcdataError
from lcdata.util.io import atomic_open, atomic_path

from .config import ModelConfig

_USED = {"architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
         "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings",
         "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters", "tie_word_embeddings", "attention_bias",
         "mlp_bias", "torch_dtype", "dtype", "initializer_range", "transformers_version"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CheckpointError(LcdataError):
    """A checkpoint folder is missing files, is damaged, or does not match its config / this run."""


CHECKSUMS = "checksums.json"


# ------------------------------------------------------------------------------------- checksums


def file_sha256(path: str, block: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file, read ``block`` bytes at a time."""
    h, buf = hashlib.sha256(), bytearray(block)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def write_checksums(folder: str, names: Iterable[str], known: dict | None = None) -> None:
    """Record size and SHA-256 of the files ``names`` of ``folder`` in its checksums.json (call it last).
    ``known``: entries ``{name: {"bytes", "sha256"}}`` already computed (by the ranks that wrote them)."""
    files = {n: {"bytes": os.path.getsize(os.path.join(folder, n)), "sha256": file_sha256(os.path.join(folder, n))}
             for n in names}
    files.update(known or {})
    write_json({"algorithm": "sha256", "files": dict(sorted(files.items()))}, os.path.join(folder, CHECKSUMS))


def verify_checksums(folder: str, need: Iterable[str], fix: str, part: tuple[int, int] = (0, 1)) -> bool:
    """Check the files of ``folder`` against its checksums.json: each listed file present with its size and
    SHA-256, and every name in ``need`` (the files the caller will read) listed. False when the folder has no
    checksums.json (nothing to verify); a failed check raises `CheckpointError` naming the file and ``fix``.
    ``part=(i, n)``: hash only the i-th of every n listed files (sorted by name; sizes are checked for all),
    so n processes share the reading of a sharded checkpoint."""
    path = os.path.join(folder, CHECKSUMS)
    if not os.path.isfile(path):
        return False
    try:
        with open(path) as fh:
            files = json.load(fh)["files"]
        sizes = {str(n): (int(e["bytes"]), str(e["sha256"])) for n, e in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a checksums file ({type(e).__name__}: {e}); {fix}") from None
    unlisted = [n for n in need if n not in sizes]
    if unlisted:
        raise CheckpointError(f"{path} does not list {unlisted}, which are read from this folder; {fix}")
    for j, (name, (size, digest)) in enumerate(sorted(sizes.items())):
        f = os.path.join(folder, name)
        if not os.path.isfile(f):
            raise CheckpointError(f"{f}: missing (listed in {CHECKSUMS}); {fix}")
        have = os.path.getsize(f)
        if have != size:
            raise CheckpointError(f"{f}: {have:,} bytes, but {CHECKSUMS} records {size:,} (truncated or replaced); "
                                  f"{fix}")
        if j % part[1] == part[0] and file_sha256(f) != digest:
            raise CheckpointError(f"{f}: SHA-256 differs from {CHECKSUMS} (the file changed after it was written: a "
                                  f"disk error or an edit); {fix}")
    return True


def verify_model_folder(folder: str, fix: str, extra: Iterable[str] = ()) -> bool:
    """`verify_checksums` of a Hugging Face folder: config.json, its weight files and ``extra`` must be listed."""
    if not os.path.isfile(os.path.join(folder, CHECKSUMS)):
        return False
    weights = [os.path.basename(f) for f in _weight_files(folder)]
    index = [] if weights == ["model.safetensors"] else ["model.safetensors.index.json"]
    return verify_checksums(folder, ["config.json", *weights, *index, *extra], fix)


RESTORE = "the file is damaged: restore the folder or re-create it"


def read_json(path: str, fix: str = RESTORE) -> dict:
    """A JSON object from ``path``; a damaged file is a `CheckpointError` naming it and ``fix``."""
    try:
        with open(path) as fh:
            obj = json.load(fh)
    except ValueError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); {fix}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: a JSON {type(obj).__name__}, not an object; {fix}")
    return obj


def _load_safetensors(path: str, fix: str = RESTORE) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a damaged (truncated, emptied) file is a `CheckpointError` naming it."""
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); {fix}") from None


# ------------------------------------------------------------------------------------- HF config


def read_hf_config(folder: str, fix: str = RESTORE) -> tuple[ModelConfig, str]:
    """(ModelConfig, stored dtype name) of a Hugging Face LLaMA folder (``fix``: see `load_hf_state`)."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        have = sorted(os.listdir(folder)) if os.path.isdir(folder) else None
        raise CheckpointError(f"{folder!r} has no config.json (it holds {have}); a Hugging Face LLaMA folder needs "
                              "config.json and model.safetensors" if have is not None else
                              f"{folder!r} is neither a model preset nor a folder")
    j = read_json(path, fix)
    if j.get("model_type", "llama") != "llama":
        raise CheckpointError(f"{path}: model_type {j.get('model_type')!r} is not 'llama'; only LLaMA-architecture "
                              "checkpoints load here")
    bad = {k: j.get(k) for k in ("attention_bias", "mlp_bias") if j.get(k)}
    if j.get("hidden_act", "silu") != "silu":
        bad["hidden_act"] = j["hidden_act"]
    if bad:
        raise CheckpointError(f"{path}: {bad} are not supported (LLaMA has no biases and uses silu)")
    rp = j.get("rope_parameters") or {}
    theta = rp.get("rope_theta", j.get("rope_theta", 10000.0))
    scaling = j.get("rope_scaling")
    if scaling is None and rp.get("rope_type", "default") != "default":
        scaling = {k: v for k, v in rp.items() if k != "rope_theta"}
    scaling = _rope_anchor(scaling, j)
    try:
        cfg = ModelConfig(vocab_size=j["vocab_size"], dim=j["hidden_size"], n_layers=j["num_hidden_layers"],
                          n_heads=j["num_attention_heads"],
                          n_kv_heads=j.get("num_key_value_heads") or j["num_attention_heads"],
                          ffn_dim=j["intermediate_size"], head_dim=j.get("head_dim") or 0,
                          norm_eps=j.get("rms_norm_eps", 1e-6), rope_theta=float(theta), rope_scaling=scaling,
                          max_seq_len=j.get("max_position_embeddings", 4096),
                          tie_embeddings=bool(j.get("tie_word_embeddings", False)),
                          init_std=j.get("initializer_range", 0.02),
                          hf_extra={k: v for k, v in j.items() if k not in _USED})
    except KeyError as e:
        raise CheckpointError(f"{path} lacks {e.args[0]!r}, which a LLaMA config needs") from None
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return cfg, j.get("dtype") or j.get("torch_dtype") or "float32"


def _rope_anchor(scaling: dict | None, j: dict) -> dict | None:
    """The length transformers anchors scaling at, made explicit: dynamic NTK uses max_position_embeddings
    (a key in the scaling dict is ignored there); llama3/yarn prefer a top-level original_max_position_embeddings."""
    if not isinstance(scaling, dict):
        return scaling
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "dynamic":
        return {**scaling, "original_max_position_embeddings": j.get("max_position_embeddings", 4096)}
    if kind in ("llama3", "yarn") and j.get("original_max_position_embeddings"):
        return {**scaling, "original_max_position_embeddings": j["original_max_position_embeddings"]}
    return scaling


def hf_config_dict(cfg: ModelConfig, dtype: str = "float32") -> dict:
    """config.json for ``cfg``; rope written both the classic way (transformers 4) and as rope_parameters (5).
    Dynamic NTK: transformers anchors it at max_position_embeddings, so that is written as the scaling's
    original_max_position_embeddings (not a raised ``max_seq_len``): transformers then computes what we do."""
    d = dict(cfg.hf_extra)
    rs, max_pos = cfg.rope_scaling, cfg.max_seq_len
    if rs is not None and rs["rope_type"] == "dynamic":
        rs = {k: v for k, v in rs.items() if k != "original_max_position_embeddings"}
        max_pos = cfg.rope_scaling["original_max_position_embeddings"]
    d.update(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=cfg.vocab_size, hidden_size=cfg.dim,
             intermediate_size=cfg.ffn_dim, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
             num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim, hidden_act="silu",
             max_position_embeddings=max_pos, rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
             rope_scaling=rs, tie_word_embeddings=cfg.tie_embeddings, attention_bias=False,
             mlp_bias=False, initializer_range=cfg.init_std, torch_dtype=dtype,
             rope_parameters={"rope_type": "default", **(rs or {}), "rope_theta": cfg.rope_theta})
    return d


# ------------------------------------------------------------------------------------- HF weights


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    from .model import Llama

    with torch.device("meta"):
        m = Llama(cfg)
    sd = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    if cfg.tie_embeddings:
        sd.pop("lm_head.weight")
    return sd


def _weight_files(folder: str) -> list[str]:
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(single):
        return [single]
    if os.path.isfile(index):
        try:
            files = sorted(set(read_json(index)["weight_map"].values()))
        except (KeyError, TypeError, AttributeError):
            raise CheckpointError(f"{index}: has no weight_map of tensor name -> file name") from None
        missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
        if missing:
            raise CheckpointError(f"{folder!r}: model.safetensors.index.json lists missing files {missing[:5]}")
        return [os.path.join(folder, f) for f in files]
    have = sorted(os.listdir(folder))
    extra = " (pytorch_model.bin is a pickle and is never loaded here: convert it to safetensors)" \
        if any(f.startswith("pytorch_model") for f in have) else ""
    raise CheckpointError(f"{folder!r} has no model.safetensors or model.safetensors.index.json (it holds "
                          f"{have}){extra}")


def check_state(cfg: ModelConfig, sd: dict[str, torch.Tensor], where: str) -> None:
    want = expected_shapes(cfg)
    missing = [k for k in want if k not in sd]
    extra = [k for k in sd if k not in want]
    shapes = [f"{k}: {tuple(sd[k].shape)} in the file, {want[k]} from config.json" for k in want
              if k in sd and tuple(sd[k].shape) != want[k]]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
        problems.append(f"unexpected tensors {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    if shapes:
        problems.append("shape mismatches: " + "; ".join(shapes[:5]))
    if problems:
        raise CheckpointError(f"{where} does not match its config (hidden_size={cfg.dim}, layers={cfg.n_layers}, "
                              f"heads={cfg.n_heads}/{cfg.n_kv_heads}, vocab={cfg.vocab_size}, "
                              f"intermediate={cfg.ffn_dim}, tied={cfg.tie_embeddings}): " + "; ".join(problems))


def load_hf_state(folder: str, cfg: ModelConfig, dtype: torch.dtype | None = torch.float32,
                  fix: str = RESTORE) -> dict[str, torch.Tensor]:
    """The checked state dict of a HF folder (CPU; ``dtype`` None keeps the stored one). A tied model's dict
    gets ``lm_head.weight`` as the embedding, so it loads into `Llama` with strict=True. ``fix``: what a
    `CheckpointError` about a damaged file tells the user to do."""
    sd: dict[str, torch.Tensor] = {}
    for f in _weight_files(folder):
        sd.update(_load_safetensors(f, fix))
    sd = {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}
    if cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)
    check_state(cfg, sd, repr(folder))
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    if cfg.tie_embeddings:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    return sd


def write_json(obj, path: str) -> None:
    """``obj`` as indented JSON at ``path``, atomically (temporary file, rename)."""
    with atomic_open(path) as fh:
        fh.write(json.dumps(obj, indent=2).encode())


def save_hf(sd: dict[str, torch.Tensor], cfg: ModelConfig, folder: str, dtype: str = "float32",
            tokenizer: str | None = None) -> None:
    """Write ``sd`` (full, CPU) as a Hugging Face LLaMA folder in ``dtype`` (with a copy of the ``tokenizer``
    file as tokenizer.json, if given), checksums.json last."""
    names = _write_hf_files(sd, cfg, folder, dtype)
    if tokenizer:
        with atomic_path(os.path.join(folder, "tokenizer.json")) as tmp:
            shutil.copyfile(tokenizer, tmp)
        names.append("tokenizer.json")
    write_checksums(folder, names)


def _write_hf_files(sd: dict[str, torch.Tensor], cfg: ModelConfig, folder: str, dtype: str) -> list[str]:
    """model.safetensors and config.json, each atomically; a stale checksums.json is removed first (a crash
    before the new one leaves a folder that loads unverified, never one that fails against old sums)."""
    if dtype not in DTYPES:
        raise ConfigError(f"save dtype {dtype!r} must be one of {sorted(DTYPES)}")
    os.makedirs(folder, exist_ok=True)
    out = {k: v.detach().to("cpu", DTYPES[dtype]).contiguous() for k, v in sd.items()
           if not (cfg.tie_embeddings and k == "lm_head.weight")}
    check_state(cfg, out, "the model to save")
    if os.path.exists(os.path.join(folder, CHECKSUMS)):
        os.remove(os.path.join(folder, CHECKSUMS))
    with atomic_path(os.path.join(folder, "model.safetensors")) as tmp:
        save_file(out, tmp, metadata={"format": "pt"})
    write_json(hf_config_dict(cfg, dtype), os.path.join(folder, "config.json"))
    return ["model.safetensors", "config.json"]


def load_pretrained(folder: str, **overrides):
    """A `Llama` with the weights of a HF LLaMA folder (fp32, CPU). ``overrides`` replace config fields
    (e.g. ``rope_theta=5e6``). The folder's checksums.json, if any, is verified first."""
    from .model import Llama

    verify_model_folder(folder, "the model folder is damaged: restore or re-create it")
    cfg, _ = read_hf_config(folder)
    sd = load_hf_state(folder, cfg)
    cfg = cfg.replace(**overrides) if overrides else cfg
    m = Llama(cfg)
    m.load_state_dict(sd, strict=True)
    return m


# ------------------------------------------------------------------------------- training checkpoints

_STEP = re.compile(r"^step-(\d{8})$")


def latest_checkpoint(run_dir: str) -> str | None:
    d = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(d):
        return None
    steps = sorted(n for n in os.listdir(d) if _STEP.match(n) and os.path.isfile(os.path.join(d, n, "state.json")))
    return os.path.join(d, steps[-1]) if steps else None


def save_training_checkpoint(run_dir: str, step: int, model_sd: dict, cfg: ModelConfig, optim_sd: dict,
                             state: dict, keep: int = 2) -> str:
    final, tmp = checkpoint_paths(run_dir, step)
    shutil.rmtree(tmp, ignore_errors=True)
    names = _write_hf_files(model_sd, cfg, tmp, "float32")
    tensors, scalars = {}, {}
    for name, st in optim_sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{name}/{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{name}/{k}"] = v
    save_file(tensors, os.path.join(tmp, "optimizer.safetensors"))
    state = dict(state, step=step, optimizer={"param_groups": optim_sd["param_groups"], "scalars": scalars})
    write_json(state, os.path.join(tmp, "state.json"))
    write_checksums(tmp, [*names, "optimizer.safetensors", "state.json"])
    return commit_checkpoint(tmp, final, keep)


def checkpoint_paths(run_dir: str, step: int) -> tuple[str, str]:
    """(final folder ``RUN/checkpoints/step-NNNNNNNN``, the temporary folder it is written in first)."""
    final = os.path.join(run_dir, "checkpoints", f"step-{step:08d}")
    return final, final + ".tmp"


def commit_checkpoint(tmp: str, final: str, keep: int) -> str:
    """Rename the complete folder ``tmp`` to ``final`` (a folder named ``step-*`` is complete) and delete all
    but the newest ``keep`` checkpoints beside it. Returns ``final``."""
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    root = os.path.dirname(final)
    done = sorted(n for n in os.listdir(root) if _STEP.match(n))
    for old in done[:-keep]:
        shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    return final


_TRAINING_FILES = ("config.json", "model.safetensors", "optimizer.safetensors", "state.json")
SHARDED_MARK = ".metadata"  # torch.distributed.checkpoint's index of a sharded checkpoint
SHARDED_FILES = ("config.json", "state.json", SHARDED_MARK)


def is_sharded(path: str) -> bool:
    """Whether ``path`` is a sharded (torch.distributed.checkpoint) training checkpoint (`sharded.py`)."""
    return os.path.isfile(os.path.join(path, SHARDED_MARK))


def resume_fix(path: str) -> str:
    """What to do about a damaged training checkpoint: fall back to the one before it, if any."""
    root, name = os.path.split(os.path.normpath(path))
    before = sorted(n for n in (os.listdir(root) if os.path.isdir(root) else []) if _STEP.match(n) and n < name)
    then = f"resume from {before[-1]}" if before else "start the run again from step 0"
    return f"delete {path} to {then} (keep a copy if you want to investigate)"


def check_training_checkpoint(path: str, part: tuple[int, int] = (0, 1)) -> dict:
    """Verify a training checkpoint folder, full or sharded (files present; checksums.json, when there is one)
    and return its state.json. Raises `CheckpointError` naming the first bad file. ``part``: see
    `verify_checksums` (each of n ranks hashes a share of the files)."""
    fix = resume_fix(path)
    need = SHARDED_FILES if is_sharded(path) else _TRAINING_FILES
    missing = [f for f in need if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise CheckpointError(f"training checkpoint {path} lacks {missing}; {fix}")
    verify_checksums(path, need, fix, part)
    return read_json(os.path.join(path, "state.json"), fix)


def check_same_model(path: str, cfg: ModelConfig) -> None:
    """Refuse a training checkpoint whose config.json describes another model than ``cfg``."""
    saved_cfg, _ = read_hf_config(path, resume_fix(path))
    diff = [f"{k}: {getattr(saved_cfg, k)!r} (checkpoint) != {getattr(cfg, k)!r} (now)"
            for k in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "head_dim", "rope_theta",
                      "rope_scaling", "tie_embeddings") if getattr(saved_cfg, k) != getattr(cfg, k)]
    if diff:
        raise CheckpointError(f"training checkpoint {path!r} is of another model: " + "; ".join(diff))


def load_training_checkpoint(path: str, cfg: ModelConfig, verify: bool = True) -> tuple[dict, dict, dict]:
    """(model state dict, optimizer state dict, state.json) of a training checkpoint folder. ``verify``:
    `check_training_checkpoint` it first (False: the caller just did)."""
    fix = resume_fix(path)
    state = check_training_checkpoint(path) if verify else read_json(os.path.join(path, "state.json"), fix)
    check_same_model(path, cfg)
    model_sd = load_hf_state(path, cfg, fix=fix)
    flat = _load_safetensors(os.path.join(path, "optimizer.safetensors"), fix)
    osd_state: dict[str, dict] = {}
    try:
        for key, v in list(flat.items()) + list(state["optimizer"]["scalars"].items()):
            name, k = key.rsplit("/", 1)
            osd_state.setdefault(name, {})[k] = v
        groups = state["optimizer"]["param_groups"]
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise CheckpointError(f"{path}: the optimizer state in state.json / optimizer.safetensors is not lcdata's "
                              f"({type(e).__name__}: {e}); {fix}") from None
    return model_sd, {"state": osd_state, "param_groups": groups}, state
