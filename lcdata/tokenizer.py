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
