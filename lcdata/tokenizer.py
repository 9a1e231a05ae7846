"""Local Hugging Face `tokenizers` files: loading, identity (hash, vocab size) and fast token counting.

Only local paths (or fsspec URLs) are accepted: nothing is downloaded from a hub. Counting uses
`Tokenizer.encode_batch_fast` (no offsets) on sub-batches of about ``SUB_BATCH_CHARS`` characters so the
memory of the intermediate `Encoding` objects stays bounded; texts are encoded without special tokens, so
counts equal ``len(tok.encode(text, add_special_tokens=False).ids)`` exactly.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass

import fsspec
import numpy as np

from .errors import TokenizerError

SUB_BATCH_CHARS = 4 << 20


@dataclass(frozen=True, slots=True)
class TokenizerInfo:
    path: str
    sha256: str
    vocab_size: int


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
    return TokenizerInfo(path=path, sha256=hashlib.sha256(data).hexdigest(), vocab_size=tok.get_vocab_size())


def count_tokens(tok, texts: list[str]) -> np.ndarray:
    """Token count of each text (no special tokens), via the fast batch path, in bounded sub-batches."""
    out = np.empty(len(texts), dtype=np.int64)
    start = 0
    while start < len(texts):
        end, chars = start, 0
        while end < len(texts) and (chars < SUB_BATCH_CHARS or end == start):
            chars += len(texts[end])
            end += 1
        encs = tok.encode_batch_fast(texts[start:end], add_special_tokens=False)
        out[start:end] = [len(e) for e in encs]
        start = end
    return out


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


# ----------------------------------------------------------------------- encoding with safe splitting

SPLIT_CHARS = 1 << 16  # documents longer than this are encoded in pieces cut at safe points


def can_split(tok) -> bool:
    """True when cutting text before a single space between two non-space characters cannot change the
    tokens: a byte-level BPE whose pre-tokenizer is ByteLevel with its GPT-2-style regex (alone or after a
    Split regex that never crosses such a space), and no normalizer. Then every such space starts a new
    pre-token, and BPE never merges across pre-tokens."""
    d = json.loads(tok.to_str())
    if d.get("normalizer") is not None or (d.get("model") or {}).get("type") != "BPE":
        return False
    pre = d.get("pre_tokenizer") or {}
    items = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in items]
    if not kinds or kinds[-1] != "ByteLevel" or any(k not in ("ByteLevel", "Split") for k in kinds):
        return False
    bl = items[-1]
    return bl.get("use_regex", True) or "Split" in kinds


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


def encode_texts(tok, texts: list[str], split: bool, piece_chars: int = SPLIT_CHARS) -> list[np.ndarray]:
    """Token ids (int64 arrays, no special tokens) of each text, via `encode_batch_fast`.

    With ``split`` (see `can_split`), texts longer than ``piece_chars`` are cut at safe points and their
    pieces encoded as separate batch items, so BPE cost stays linear in the document length; the ids are
    identical to encoding the whole text (tested on the demo corpus and adversarial text).
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
    start = 0
    while start < len(items):
        end, chars = start, 0
        while end < len(items) and (chars < SUB_BATCH_CHARS or end == start):
            chars += len(items[end])
            end += 1
        for j, e in enumerate(tok.encode_batch_fast(items[start:end], add_special_tokens=False)):
            out[owners[start + j]].append(np.asarray(e.ids, dtype=np.int64))
        start = end
    return [parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, np.int64)
            for parts in out]
