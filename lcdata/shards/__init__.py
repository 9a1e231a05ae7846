"""Packed token shards: format (docs/format.md), packing, reader/verify/inspect, export to peers' formats."""

from .reader import ShardSet, inspect_sequence, open_shards, verify_shards

__all__ = ["ShardSet", "open_shards", "verify_shards", "inspect_sequence"]
