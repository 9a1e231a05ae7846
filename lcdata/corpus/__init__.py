"""Reading corpora: input resolution (`inputs`), decompression (`decode`), the streaming readers (`reader`) and `ReadConfig` (`config`)."""

from __future__ import annotations

# public name -> the module defining it, imported on first use (PEP 562): importing one module of this
# package (e.g. the CLI importing a light one) does not import the others
_EXPORTS = {
    "ON_ERROR": "config",
    "ReadConfig": "config",
    "ONE_SHOT_BYTES": "decode",
    "READ_BLOCK": "decode",
    "Corrupt": "decode",
    "gzip_pieces": "decode",
    "line_chunks": "decode",
    "plain_pieces": "decode",
    "zstd_pieces": "decode",
    "FORMATS": "inputs",
    "InputFile": "inputs",
    "detect_format": "inputs",
    "resolve_inputs": "inputs",
    "BATCH_SCHEMA": "reader",
    "FileReport": "reader",
    "Lengths": "reader",
    "empty_batch": "reader",
    "iter_batches": "reader",
    "iter_lengths": "reader",
    "read_corpus": "reader",
    "read_summary": "reader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
