"""`lcdata build`: `BuildConfig` (`config`), the start shared with scale-out (`start.prepare_build`), phase 1
tokenize-and-spill (`tokenize`), phase 2 order, pack, permute and write the shards (`layout`), and the run (`run`)."""

from __future__ import annotations

from ..util.lazy import lazy_exports

# public name -> the module defining it, imported on first use (PEP 562): importing one module of this
# package (e.g. the CLI importing a light one) does not import the others
_EXPORTS = {
    "BuildConfig": "config",
    "build_identity": "start",
    "BuildResult": "start",
    "load_plan_for": "start",
    "build_protect": "start",
    "prepare_out": "start",
    "PreparedBuild": "start",
    "prepare_build": "start",
    "UNIT_SCHEMA": "tokenize",
    "tokenize_file": "tokenize",
    "spill_intact": "tokenize",
    "run_build": "run",
    "finish_build": "run",
    "PhaseClock": "run",
    "pack_manifest": "run",
    "PackOptions": "layout",
    "UNIT_NUMERIC": "layout",
    "Units": "layout",
    "load_units": "layout",
    "PackLayout": "layout",
    "pack_layout": "layout",
    "WRITE_BUFFER_BYTES": "layout",
    "write_shard": "layout",
    "write_shards": "layout",
    "save_layout": "layout",
    "load_layout": "layout",
    "Spills": "layout",
    "DOCS_ROWS_PER_GROUP": "layout",
    "unit_doc_ids": "layout",
    "write_documents": "layout",
    "build_layout": "spilled",
    "spilled_layout": "spilled",
    "default_memory_limit": "spilled",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
