"""Tokenizers: Hugging Face `tokenizers` loading, info and encoding (`hf`, the public API), and the exact tiktoken engine (`tiktoken_engine`), resolved once per run (`hf.resolve_engine`)."""

from __future__ import annotations

from ..util.lazy import lazy_exports

# public name -> the module defining it, imported on first use (PEP 562): importing one module of this
# package (e.g. the CLI importing a light one) does not import the others
_EXPORTS = {
    "BOS_NAMES": "hf",
    "EOS_NAMES": "hf",
    "HF_SUB_BATCH_CHARS": "hf",
    "PAD_NAMES": "hf",
    "SPLIT_CHARS": "hf",
    "SUB_BATCH_CHARS": "hf",
    "Specials": "hf",
    "TokenizerInfo": "hf",
    "can_split": "hf",
    "can_split_file": "hf",
    "count_tokens": "hf",
    "encode_texts": "hf",
    "engine_threads": "hf",
    "find_special": "hf",
    "get_engine": "hf",
    "load_tokenizer": "hf",
    "max_token_id": "hf",
    "resolve_engine": "hf",
    "resolve_specials": "hf",
    "token_id": "hf",
    "tokenizer_info": "hf",
    "BYTE_TO_CHAR": "tiktoken_engine",
    "CHAR_TO_BYTE": "tiktoken_engine",
    "GPT2_PATTERN": "tiktoken_engine",
    "KNOWN_PATTERNS": "tiktoken_engine",
    "TiktokenEngine": "tiktoken_engine",
    "check_equivalence": "tiktoken_engine",
    "require_tiktoken": "tiktoken_engine",
    "tiktoken_available": "tiktoken_engine",
    "tiktoken_engine": "tiktoken_engine",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
