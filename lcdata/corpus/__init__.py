"""Reading corpora: input resolution (`inputs`), decompression (`decode`), the streaming readers (`reader`) and `ReadConfig` (`config`)."""

from __future__ import annotations

from ..util.lazy import lazy_exports

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
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
