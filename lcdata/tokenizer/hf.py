"""Local Hugging Face `tokenizers` files: loading, identity (hash, vocab size) and fast token counting.

Only local paths (or fsspec URLs) are accepted: nothing is downloaded from a hub. Counting uses
`Tokenizer.encode_batch_fast` (no offsets) on sub-batches of about ``HF_SUB_BATCH_CHARS`` characters so the
memory of the intermediate `Encoding` objects stays bounded, and small: with 4M-character sub-batches the HF
encoder used 20-30% more CPU than with 0.5-1M (measured on the bench corpus), for hundreds of MB of
`Encoding` objects alive at once. Texts are encoded without special tokens, so counts equal
``len(tok.encode(text, add_special_tokens=False).ids)`` exactly.

Engines: ``hf`` (`tokenizers`, the reference) or ``tiktoken`` (`lcdata.tokenizer.tiktoken_engine`, the ``[fast]`` extra:
the same ids, faster, only for byte-level BPE tokenizers where equivalence is proven from the definition).
``auto`` takes tiktoken when it is installed and equivalent, else HF. The engine never changes a result.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass

import fsspec
import numpy as np

from ..errors import ConfigError, TokenizerError
from ..util import progress
from ..util.config import check_engine, default_workers
from .tiktoken_engine import check_equivalence, require_tiktoken, tiktoken_available, tiktoken_engine

SUB_BATCH_CHARS = 4 << 20  # characters per engine (tiktoken) call
HF_SUB_BATCH_CHARS = 1 << 20  # characters per HF `encode_batch_fast` call (see the module docstring)


@dataclass(frozen=True, slots=True)
class TokenizerInfo:
    """``vocab_size``: the number of ids (``get_vocab_size``); ``max_id``: the largest id the tokenizer can emit
    (vocabulary and added tokens). They differ when ids are not contiguous: dtypes and bounds use ``max_id``."""

    path: str
    sha256: str
    vocab_size: int
    max_id: int


def _read(path: str) -> bytes:
    try:
        with fsspec.open(path, "rb") as fh:
            return fh.read()
    except (FileNotFoundError, IsADirectoryError):
        raise TokenizerError(
            f"tokenizer file {path!r} not found; pass the path of a local tokenizer.json "
            "(e.g. data/demo/tokenizer.json); nothing is downloaded from a hub"
        ) from None


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str):
    """Load a `tokenizers.Tokenizer` from a local JSON file, with a clear error if it is not one."""
    from tokenizers import Tokenizer

    data = _read(path)
    try:
        json.loads(data)
        return Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # tokenizers raises plain Exception subclasses
        raise TokenizerError(
            f"{path!r} is not a Hugging Face tokenizers JSON file ({type(e).__name__}: {str(e)[:200]}); "
            "pass a tokenizer.json saved by `tokenizers` or `transformers` (save_pretrained)"
        ) from None


@functools.lru_cache(maxsize=4)
def tokenizer_info(path: str) -> TokenizerInfo:
    data = _read(path)
    tok = load_tokenizer(path)
    return TokenizerInfo(path=path, sha256=hashlib.sha256(data).hexdigest(), vocab_size=tok.get_vocab_size(),
                         max_id=max_token_id(tok))


def max_token_id(tok) -> int:
    """The largest id ``tok`` can emit: of its vocabulary and its added tokens (O(vocabulary))."""
    return max([*tok.get_vocab(with_added_tokens=True).values(), *tok.get_added_tokens_decoder(), 0])


def _sub_batches(texts: list[str], limit: int | None = None):
    limit = SUB_BATCH_CHARS if limit is None else limit
    start = 0
    while start < len(texts):
        end, chars = start, 0
        while end < len(texts) and (chars < limit or end == start):
            chars += len(texts[end])
            end += 1
        yield start, end
        start = end


def count_tokens(tok, texts: list[str], engine=None) -> np.ndarray:
    """Token count of each text (no special tokens), via the fast batch path, in bounded sub-batches.
    ``engine``: None for HF, or an engine from `get_engine` (same counts)."""
    out = np.empty(len(texts), dtype=np.int64)
    for start, end in _sub_batches(texts, None if engine is not None else HF_SUB_BATCH_CHARS):
        if engine is not None:
            out[start:end] = engine.count_batch(texts[start:end])
        else:
            out[start:end] = [len(e) for e in tok.encode_batch_fast(texts[start:end], add_special_tokens=False)]
        progress.partial(end / len(texts))
    return out


# ------------------------------------------------------------------------------------------- engines


def resolve_engine(path: str, engine: str = "auto") -> tuple[str, str]:
    """``(engine to use, why)`` for the tokenizer at ``path``: 'hf' or 'tiktoken'.

    ``auto``: tiktoken when installed and provably equivalent, else hf. ``tiktoken`` forced: raises
    `MissingDependencyError` (naming the ``[fast]`` extra) if tiktoken is missing, `ConfigError` with the
    reason if this tokenizer is not equivalent."""
    check_engine(engine)
    if engine == "hf":
        return "hf", "requested"
    if engine == "tiktoken":
        require_tiktoken()
    ok, why = _equivalence(path)
    if engine == "tiktoken" and not ok:
        raise ConfigError(f"engine 'tiktoken' cannot reproduce {path!r} exactly: {why}; use engine 'hf' or 'auto'")
    if ok and not tiktoken_available():
        return "hf", "tiktoken is not installed (pip install 'lcdata[fast]' for the faster exact engine)"
    return ("tiktoken", why) if ok else ("hf", f"tiktoken not equivalent: {why}")


@functools.lru_cache(maxsize=8)
def _equivalence(path: str) -> tuple[bool, str]:
    return check_equivalence(load_tokenizer(path))


def engine_threads() -> int:
    """Threads for one process's encoder: the Rayon size the worker pool gives each process (cores //
    workers, `lcdata.util.parallel`), else all cores."""
    try:
        return max(1, int(os.environ["RAYON_NUM_THREADS"]))
    except (KeyError, ValueError):
        return default_workers()


@functools.lru_cache(maxsize=4)
def _engine(path: str, name: str, threads: int):
    if name == "hf":
        return None
    eng, why = tiktoken_engine(load_tokenizer(path), threads=threads)
    if eng is None:
        raise ConfigError(f"engine 'tiktoken' cannot reproduce {path!r} exactly: {why}")
    return eng


def get_engine(path: str, name: str, threads: int | None = None):
    """The engine object to pass to `encode_texts` / `count_tokens`: None for 'hf', a `TiktokenEngine` for
    'tiktoken'. Cached per process. Pass the name `resolve_engine` gave (resolved once per run); 'auto' is
    resolved here again."""
    if name == "auto":
        name = resolve_engine(path, "auto")[0]
    return _engine(path, check_engine(name), threads or engine_threads())


# ------------------------------------------------------------------------------------ special tokens

BOS_NAMES = ("<|bos|>", "<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>")
EOS_NAMES = ("<|eos|>", "</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "<|im_end|>")
PAD_NAMES = ("<|pad|>", "<pad>", "[PAD]", "<|finetune_right_pad_id|>")


def find_special(tok, names) -> int | None:
    """Id of the first of ``names`` that is an added special token of ``tok`` (None if none)."""
    added = {t.content: i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    for n in names:
        if n in added:
            return added[n]
    return None


def token_id(tok, token: str) -> int:
    i = tok.token_to_id(token)
    if i is None:
        raise TokenizerError(f"token {token!r} is not in the tokenizer's vocabulary; name an existing token or 'none'")
    return i


@dataclass(frozen=True, slots=True)
class Specials:
    """The special token ids a build writes: BOS before each document, EOS after it (None: not written),
    and the padding id."""

    bos: int | None
    eos: int | None
    pad: int


def resolve_specials(tok, bos: str = "auto", eos: str = "auto") -> Specials:
    """The ids of ``bos`` / ``eos`` ('auto': the tokenizer's BOS at each document start if it has one, else its
    EOS after each document; 'none'; or a token string) and the padding id (the tokenizer's PAD, else EOS,
    else 0)."""
    bos_id = find_special(tok, BOS_NAMES) if bos == "auto" else None if bos == "none" else token_id(tok, bos)
    if eos == "auto":
        eos_id = None if bos_id is not None else find_special(tok, EOS_NAMES)
    else:
        eos_id = None if eos == "none" else token_id(tok, eos)
    pad = find_special(tok, PAD_NAMES)
    if pad is None:
        pad = eos_id if eos_id is not None else find_special(tok, EOS_NAMES)
    return Specials(bos=bos_id, eos=eos_id, pad=0 if pad is None else pad)


# ----------------------------------------------------------------------- encoding with safe splitting

SPLIT_CHARS = 1 << 16  # documents longer than this are encoded in pieces cut at safe points


def can_split(tok) -> bool:
    """True when cutting text before a single space between two non-space characters cannot change the
    tokens: a byte-level BPE whose pre-tokenizer is ByteLevel with its GPT-2-style regex (alone or after a
    Split regex that never crosses such a space), no normalizer, and no added token that could span such a
    space (``rstrip``, which swallows the spaces after the token, or a space inside its content). Then every
    such space starts a new pre-token, and BPE never merges across pre-tokens."""
    d = json.loads(tok.to_str())
    if d.get("normalizer") is not None or (d.get("model") or {}).get("type") != "BPE":
        return False
    for t in d.get("added_tokens") or []:
        c = t.get("content", "")
        if t.get("rstrip") or any(c[k] == " " and not c[k - 1].isspace() for k in range(1, len(c))):
            return False
    pre = d.get("pre_tokenizer") or {}
    items = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in items]
    if not kinds or kinds[-1] != "ByteLevel" or any(k not in ("ByteLevel", "Split") for k in kinds):
        return False
    bl = items[-1]
    return bl.get("use_regex", True) or "Split" in kinds


@functools.lru_cache(maxsize=8)
def can_split_file(path: str) -> bool:
    """`can_split` of the tokenizer file at ``path``, once per process (it parses the tokenizer's JSON)."""
    return can_split(load_tokenizer(path))


def _safe_cuts(text: str, piece: int) -> list[int]:
    """Cut positions (each before a single ' ' with non-space on both sides), about ``piece`` chars apart."""
    cuts, n, pos = [], len(text), piece
    while pos < n:
        lo = max(pos - piece // 2, (cuts[-1] if cuts else 0) + 1)
        j = text.rfind(" ", lo, pos)
        while j > 0 and not (text[j - 1] not in " \t\r\n\v\f" and j + 1 < n and not text[j + 1].isspace()
                             and not text[j - 1].isspace()):
            j = text.rfind(" ", lo, j)
        if j <= 0:  # no safe point in the window: look forward instead (never cut unsafely)
            j = pos
            while j < n and not (text[j] == " " and not text[j - 1].isspace() and j + 1 < n
                                 and not text[j + 1].isspace()):
                j = text.find(" ", j + 1)
                if j < 0:
                    j = n
            if j >= n:
                break
        cuts.append(j)
        pos = j + piece
    return cuts


def encode_texts(tok, texts: list[str], split: bool, piece_chars: int = SPLIT_CHARS,
                 engine=None) -> list[np.ndarray]:
    """Token ids (int64 arrays, no special tokens) of each text, via `encode_batch_fast`.

    With ``split`` (see `can_split`), texts longer than ``piece_chars`` are cut at safe points and their
    pieces encoded as separate batch items, so BPE cost stays linear in the document length; the ids are
    identical to encoding the whole text (tested on the demo corpus and adversarial text). ``engine``: None
    for HF, or an engine from `get_engine` (same ids).
    """
    items: list[str] = []
    owners: list[int] = []
    for i, t in enumerate(texts):
        if split and len(t) > piece_chars:
            cuts = [0, *_safe_cuts(t, piece_chars), len(t)]
            for a, b in zip(cuts, cuts[1:]):
                items.append(t[a:b])
                owners.append(i)
        else:
            items.append(t)
            owners.append(i)
    out: list[list[np.ndarray]] = [[] for _ in texts]
    for start, end in _sub_batches(items, None if engine is not None else HF_SUB_BATCH_CHARS):
        if engine is not None:
            encoded = engine.encode_batch(items[start:end])
        else:
            encoded = [np.asarray(e.ids, dtype=np.int64)
                       for e in tok.encode_batch_fast(items[start:end], add_special_tokens=False)]
        for j, ids in enumerate(encoded):
            out[owners[start + j]].append(ids)
        progress.partial(end / len(items))
    return [parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, np.int64)
            for parts in out]
