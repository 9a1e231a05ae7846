"""`ReadConfig`: how documents are read from a corpus (text field, source, ids, what to do with a bad record).

Frozen and validated on construction (a `ConfigError` naming the value and the fix), shared by the Python
API and the CLI; `to_dict()` is what output manifests record.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..util.config import as_dict

ON_ERROR = ("raise", "skip")


@dataclass(frozen=True, kw_only=True, slots=True)
class ReadConfig:
    """How documents are read from a corpus.

    Source of each document, in order of precedence: ``source`` (one name for all), else
    ``source_from_path`` (the file's parent folder name), else ``source_field`` (a dotted path into
    nested JSON / struct columns, SlimPajama's ``meta.redpajama_set_name`` by default).
    """

    text_field: str = "text"
    source_field: str = "meta.redpajama_set_name"
    source_from_path: bool = False
    source: str | None = None
    id_field: str | None = None
    on_error: str = "raise"
    chunk_bytes: int = 32 << 20  # decompressed bytes parsed at once; memory per worker ~4x this

    def __post_init__(self):
        if self.on_error not in ON_ERROR:
            raise ConfigError(f"on_error={self.on_error!r} is not one of {ON_ERROR}; use 'raise' or 'skip'")
        for name in ("text_field", "source_field"):
            v = getattr(self, name)
            if not v or any(not p for p in v.split(".")):
                raise ConfigError(f"{name}={v!r} is not a dotted field path like 'text' or 'meta.source'")
        if self.id_field is not None and not self.id_field:
            raise ConfigError("id_field='' is empty; give a field name or leave it unset")
        if self.source is not None and not self.source:
            raise ConfigError("source='' is empty; give a source name or leave it unset")
        if self.source is not None and self.source_from_path:
            raise ConfigError("give either source (one name for all) or source_from_path, not both")
        if self.chunk_bytes < 1024:
            raise ConfigError(f"chunk_bytes={self.chunk_bytes} is too small; use at least 1024 (default 32 MiB)")

    @property
    def source_mode(self) -> str:
        if self.source is not None:
            return "constant"
        return "path" if self.source_from_path else "field"

    def to_dict(self) -> dict:
        return as_dict(self)
