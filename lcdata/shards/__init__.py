"""Packed token shards: format and manifest schema (docs/format.md), packing, reader, verify, inspect, export to
peers' formats."""

from .reader import ShardSet, check_folder, inspect_sequence, open_shards, validate_folder
from .verify import verify_shards

__all__ = ["ShardSet", "open_shards", "check_folder", "validate_folder", "verify_shards", "inspect_sequence"]
