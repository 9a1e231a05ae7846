"""Streaming corpus reader: one input file -> Polars batches of documents (`iter_batches`), or `Lengths`.

Every batch has the columns ``doc_id, file, row, source, text`` (``row`` is the 0-based line of a JSONL
file, or the 0-based row of a Parquet file; ``doc_id`` is ``"{file}:{row}"`` unless an id field is set).
`iter_lengths` reads and skips the same documents but yields `Lengths` (rows, characters, sources, ids as
NumPy / Arrow arrays): what character-mode statistics need, with no copy of the text and no Polars query.

Algorithm. Compressed bytes are streamed through a frame-aware zstd / gzip decoder (`lcdata.corpus.decode`), cut
into chunks of about ``chunk_bytes`` that end at a newline, and each chunk is parsed by Arrow's JSON reader against an
explicit schema holding only the needed fields (strict types: ``"text": 5`` is an error, not "5"). Parquet
is read in record batches of only the needed columns. A ``.zst`` file of at most 16 MiB holding one frame
that declares a size of at most ``chunk_bytes`` is decompressed in one call instead (faster, and it releases
the GIL), and chunks are parsed from their buffer without a copy. Memory is O(chunk_bytes), independent of
file size.

Bad input. When the fast parse of a chunk fails (malformed JSON, invalid UTF-8, missing field, wrong
type, blank lines) the chunk is re-read line by line to find each bad line (as in the fast parse, only the
fields read must be valid UTF-8), so the documents kept do not depend on ``chunk_bytes``; with
``on_error="raise"`` the first one raises an `InputError` naming file, line and fix, with ``"skip"`` each
bad record is counted by reason in the file's `FileReport`. Invariant:
``n_read == n_counted + sum(skipped.values())`` where ``n_read`` counts non-blank lines / rows. A file that
cannot be read to its end (corrupt or truncated zstd/gzip, corrupt parquet, empty file) sets
``FileReport.error``, and where the break is: ``first_lost_row`` (the line / row of the first record lost)
and ``unread_bytes`` (the file's bytes from the break on; `lcdata.corpus.decode` gives the exact definition per
codec: the last whole zstd block, the first byte zlib rejects, the first Parquet row group that fails). In
skip mode the records before the break are kept: every complete line the decoder gives out before it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import fsspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from ..errors import InputError
from ..util import progress
from .config import ReadConfig
from .decode import Corrupt, gzip_pieces, line_chunks, plain_pieces, zstd_pieces
from .inputs import InputFile, resolve_inputs

_FIX = {
    "malformed_json": "fix or remove the line, or pass --on-error skip to skip bad records",
    "invalid_utf8": "re-encode the file as UTF-8, or pass --on-error skip",
    "missing_text": "set --text-field to the field holding the text, or pass --on-error skip",
    "non_string_text": "the text field must be a JSON string; fix the record or pass --on-error skip",
    "missing_source": "set --source-field, or use --source-from-path / --source NAME, or --on-error skip",
    "non_string_source": "the source field must be a string; fix the record or use --source NAME",
    "missing_id": "set --id-field to a field every record has, or leave it unset to use file:row ids",
    "corrupt_compressed": "the compressed stream is corrupt or truncated; re-download or re-compress the file, "
                          "or pass --on-error skip to keep the records before the break (reported as lost)",
    "corrupt_file": "the file cannot be decoded in its format; re-create it or remove it from the inputs, or pass "
                    "--on-error skip to keep the records before the break (reported as lost)",
    "empty_file": "remove the empty file from the inputs, or pass --on-error skip to ignore it",
}

BATCH_SCHEMA = {"doc_id": pl.String, "file": pl.String, "row": pl.Int64, "source": pl.String, "text": pl.String}


@dataclass
class FileReport:
    """What happened to one input file. Records: ``n_read == n_counted + sum(skipped.values())``. Bytes:
    ``bytes == (bytes - unread_bytes) + unread_bytes``, where ``bytes - unread_bytes`` is the part of the file
    decoded (`lcdata.corpus.decode` defines the break of each format exactly). A file read to its end has
    ``error is None``, ``first_lost_row is None`` and ``unread_bytes == 0``."""

    file: str
    bytes: int
    n_read: int = 0
    n_counted: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    error: str | None = None  # reason tag of a file-level failure (skip mode only)
    error_detail: str | None = None
    first_lost_row: int | None = None  # 0-based line / row of the first record after the break (lost)
    unread_bytes: int = 0  # bytes of the file (compressed) not decoded: from the break to its end

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())


def read_summary(reports: list[FileReport]) -> dict:
    """The read report of several files, as a build manifest's and a plan's ``read_report`` hold it: records
    read, counted and skipped by reason, and every file not read to its end (``errors``: file, reason, detail,
    first_lost_row, unread_bytes). It adds up: ``n_read == n_counted + sum(skipped.values())`` and
    ``unread_bytes == sum(e["unread_bytes"] for e in errors)``.

    >>> read_summary([FileReport("a.jsonl", 10, n_read=3, n_counted=2, skipped={"malformed_json": 1})])
    {'n_read': 3, 'n_counted': 2, 'skipped': {'malformed_json': 1}, 'files_with_errors': 0, 'unread_bytes': 0, 'errors': []}
    """
    skipped: dict[str, int] = {}
    for r in reports:  # the same reason in several files: summed
        for k, v in r.skipped.items():
            skipped[k] = skipped.get(k, 0) + v
    errors = [{"file": r.file, "reason": r.error, "detail": r.error_detail, "first_lost_row": r.first_lost_row,
               "unread_bytes": r.unread_bytes} for r in reports if r.error]
    return {"n_read": sum(r.n_read for r in reports), "n_counted": sum(r.n_counted for r in reports),
            "skipped": dict(sorted(skipped.items())), "files_with_errors": len(errors),
            "unread_bytes": sum(e["unread_bytes"] for e in errors), "errors": errors}


def empty_batch() -> pl.DataFrame:
    return pl.DataFrame(schema=BATCH_SCHEMA)


@dataclass(frozen=True)
class Lengths:
    """A batch of documents as character-mode statistics see them, in Arrow and NumPy (no text, no Polars):
    row numbers, lengths in characters (code points), sources, and ids when an id field is read (else the
    id is ``"{file}:{row}"``). All have one entry per document, in file order."""

    rows: np.ndarray  # int64
    n_chars: np.ndarray  # int64
    sources: pa.Array  # strings (a constant source is a one-value dictionary array)
    ids: pa.Array | None = None

    @classmethod
    def of_batch(cls, batch: pl.DataFrame) -> Lengths:
        """The `Lengths` of an `iter_batches` batch (its ``doc_id`` column is kept as ids)."""
        return cls(rows=batch["row"].to_numpy(), n_chars=batch["text"].str.len_chars().cast(pl.Int64).to_numpy(),
                   sources=batch["source"].to_arrow(), ids=batch["doc_id"].to_arrow())


# ------------------------------------------------------------------------------------------ parsing


def _tree(paths: dict[str, pa.DataType]) -> pa.Schema:
    tree: dict = {}
    for path, typ in paths.items():
        node = tree
        parts = path.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise InputError("<config>", "bad_field", f"field {path!r} conflicts with another field", "")
        node[parts[-1]] = typ

    def build(node) -> list[pa.Field]:
        return [pa.field(k, pa.struct(build(v)) if isinstance(v, dict) else v) for k, v in node.items()]

    return pa.schema(build(tree))


def _get_path(table, path: str):
    parts = path.split(".")
    col = table.column(parts[0])
    for p in parts[1:]:
        col = pc.struct_field(col, p)
    return col


def _valid_str(s: str) -> bool:
    """False if ``s`` holds a lone surrogate (an invalid UTF-8 byte, or an unpaired ``\\ud800`` escape)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_LEADING_NULL = re.compile(rb"(?:\xef\xbb\xbf)?\s*null")


def _scan_lines(chunk: bytes) -> tuple[int, bool]:
    """``(number of lines, whether a line may be blank or start with whitespace)`` in one vectorised pass over the bytes (NumPy, about
    5x faster than ``bytes.count`` plus the regex, and without holding the GIL)."""
    a = np.frombuffer(chunk, np.uint8)
    nl = np.flatnonzero(a == 10)
    n_lines = len(nl) + (0 if chunk.endswith(b"\n") else 1)
    after = nl[:-1] + 1 if chunk.endswith(b"\n") else nl + 1  # the byte after each newline, if any
    b = a[after]
    blank = chunk[:1].isspace() or bool(((b == 10) | (b == 13) | (b == 32) | (b == 9)).any())
    return n_lines, blank


def _dig(obj, path: str):
    """Return (found, value) for a dotted path into nested dicts."""
    for p in path.split("."):
        if not isinstance(obj, dict) or p not in obj:
            return False, None
        obj = obj[p]
    return True, obj


class _Parser:
    """Parses one file's chunks into batches, counting or raising on bad records."""

    def __init__(self, f: InputFile, cfg: ReadConfig, report: FileReport, lengths: bool = False):
        self.f, self.cfg, self.report, self.lengths = f, cfg, report, lengths
        fields = {cfg.text_field: pa.string()}
        if cfg.source_mode == "field":
            fields[cfg.source_field] = pa.string()
        if cfg.id_field:
            fields[cfg.id_field] = pa.string()
        self.schema = _tree(fields)
        self.const_source = cfg.source if cfg.source_mode == "constant" else (
            f.parent_name if cfg.source_mode == "path" else None
        )

    def bad(self, reason: str, detail: str, line: int | None) -> None:
        """Raise or count one bad record."""
        if self.cfg.on_error == "raise":
            raise InputError(self.f.url, reason, detail, _FIX[reason], line=line)
        self.report.skip(reason)

    def frame(self, rows, texts, sources, ids) -> pl.DataFrame | Lengths:
        """The batch: a frame (``BATCH_SCHEMA``) built in one Polars query, or `Lengths` if the parser reads
        lengths. ``rows``: a ``range``, list or Arrow array of row numbers; ``sources`` None means the
        constant source."""
        if self.lengths:
            return self.lengths_of(rows, texts, sources, ids)
        if isinstance(rows, range):
            rows_s = pl.int_range(rows.start, rows.stop, dtype=pl.Int64, eager=True).alias("row")
        else:
            rows_s = pl.Series("row", rows, dtype=pl.Int64)
        cols = [rows_s, pl.Series("text", texts, dtype=pl.String)]
        if sources is not None:
            cols.append(pl.Series("source", sources, dtype=pl.String))
        if ids is not None:
            cols.append(pl.Series("doc_id", ids, dtype=pl.String))
        rel = pl.lit(self.f.rel, pl.String)
        return pl.DataFrame(cols).lazy().select(
            doc_id=pl.col("doc_id") if ids is not None else pl.format("{}:{}", rel, pl.col("row")),
            file=rel, row="row",
            source=pl.col("source") if sources is not None else pl.lit(self.const_source, pl.String),
            text="text",
        ).collect()

    def lengths_of(self, rows, texts, sources, ids) -> Lengths:
        if isinstance(rows, range):
            rows = np.arange(rows.start, rows.stop, dtype=np.int64)
        elif isinstance(rows, (pa.Array, pa.ChunkedArray)):
            rows = rows.to_numpy().astype(np.int64, copy=False)
        else:
            rows = np.asarray(rows, dtype=np.int64)
        if isinstance(texts, (pa.Array, pa.ChunkedArray)):  # code points, as Polars' str.len_chars
            n_chars = pc.utf8_length(texts).to_numpy().astype(np.int64, copy=False)
        else:
            n_chars = np.fromiter((len(t) for t in texts), np.int64, len(texts))
        if sources is None:
            sources = pa.DictionaryArray.from_arrays(np.zeros(len(rows), np.int32), pa.array([self.const_source]))
        elif isinstance(sources, pa.ChunkedArray):
            sources = sources.combine_chunks()
        elif not isinstance(sources, pa.Array):
            sources = pa.array(sources, pa.string())
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        elif ids is not None and not isinstance(ids, pa.Array):
            ids = pa.array(ids, pa.string())
        return Lengths(rows=rows, n_chars=n_chars, sources=sources, ids=ids)

    # -- JSONL -------------------------------------------------------------------------------------
    def jsonl_chunk(self, chunk: bytes, first_line: int) -> pl.DataFrame | Lengths:
        n_lines, maybe_blank = _scan_lines(chunk)
        self.chunk_lines = n_lines  # iter_batches advances its line counter by this (one count per chunk)
        if _LEADING_NULL.match(chunk):  # pyarrow's JSON reader segfaults on a block whose first value is null
            return self.jsonl_slow(chunk, first_line)
        try:
            table = pj.read_json(
                pa.BufferReader(pa.py_buffer(chunk)),  # zero copy (BytesIO costs a copy: ~20% of the parse)
                read_options=pj.ReadOptions(block_size=len(chunk) + 1, use_threads=False),
                parse_options=pj.ParseOptions(explicit_schema=self.schema, unexpected_field_behavior="ignore"),
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
            return self.jsonl_slow(chunk, first_line)
        if table.num_rows != n_lines or maybe_blank:
            # rows no longer map to lines (blank lines, or two objects on one line next to a blank one)
            return self.jsonl_slow(chunk, first_line)
        cols = {"text": _get_path(table, self.cfg.text_field)}
        if self.const_source is None:
            cols["source"] = _get_path(table, self.cfg.source_field)
        if self.cfg.id_field:
            cols["id"] = _get_path(table, self.cfg.id_field)
        for col in cols.values():
            if col.null_count:
                return self.jsonl_slow(chunk, first_line)
            try:
                col.validate(full=True)
            except pa.ArrowInvalid:
                return self.jsonl_slow(chunk, first_line)
        self.report.n_read += n_lines
        self.report.n_counted += n_lines
        rows = range(first_line, first_line + n_lines)
        return self.frame(
            rows, cols["text"], cols.get("source"), cols["id"] if "id" in cols else None
        )

    def jsonl_slow(self, chunk: bytes, first_line: int) -> pl.DataFrame | Lengths:
        rows, texts, sources, ids = [], [], [], []
        cfg = self.cfg
        for i, raw in enumerate(chunk.split(b"\n")):
            line_no = first_line + i
            if not raw.strip():
                continue
            self.report.n_read += 1
            # Invalid UTF-8 only matters in the fields read (as in the fast path, which ignores other
            # fields): bad bytes become lone surrogates, caught by `_valid_str` on the fields kept.
            s = raw.decode("utf-8", "surrogateescape")
            if s.startswith("\ufeff"):  # a byte order mark, which the fast parse also skips
                s = s[1:]
            try:
                obj = json.loads(s)
            except json.JSONDecodeError as e:
                self.bad("malformed_json", f"malformed JSON ({e.msg} at column {e.colno})", line_no + 1)
                continue
            if not isinstance(obj, dict):
                self.bad("malformed_json", f"a JSON {type(obj).__name__} where an object is expected", line_no + 1)
                continue
            found, text = _dig(obj, cfg.text_field)
            if not found or text is None:
                self.bad("missing_text", f"no text field {cfg.text_field!r}", line_no + 1)
                continue
            if not isinstance(text, str):
                self.bad("non_string_text", f"text field {cfg.text_field!r} is a {type(text).__name__}", line_no + 1)
                continue
            if not _valid_str(text):
                self.bad("invalid_utf8", f"text field {cfg.text_field!r} holds invalid UTF-8 or a lone "
                         "surrogate escape", line_no + 1)
                continue
            if self.const_source is None:
                found, src = _dig(obj, cfg.source_field)
                if not found or src is None:
                    self.bad("missing_source", f"no source field {cfg.source_field!r}", line_no + 1)
                    continue
                if not isinstance(src, str):
                    self.bad("non_string_source", f"source field {cfg.source_field!r} is a {type(src).__name__}",
                             line_no + 1)
                    continue
                if not _valid_str(src):
                    self.bad("invalid_utf8", f"source field {cfg.source_field!r} holds invalid UTF-8 or a lone "
                             "surrogate escape", line_no + 1)
                    continue
                sources.append(src)
            if cfg.id_field:
                found, did = _dig(obj, cfg.id_field)
                if not found or did is None or isinstance(did, (dict, list)):
                    if sources and self.const_source is None:
                        sources.pop()
                    self.bad("missing_id", f"no scalar id field {cfg.id_field!r}", line_no + 1)
                    continue
                if not _valid_str(str(did)):
                    if sources and self.const_source is None:
                        sources.pop()
                    self.bad("invalid_utf8", f"id field {cfg.id_field!r} holds invalid UTF-8 or a lone "
                             "surrogate escape", line_no + 1)
                    continue
                ids.append(str(did))
            rows.append(line_no)
            texts.append(text)
            self.report.n_counted += 1
        return self.frame(rows, texts, None if self.const_source is not None else sources,
                          ids if cfg.id_field else None)

    # -- Parquet -----------------------------------------------------------------------------------
    def parquet_batches(self, fh) -> Iterator[pl.DataFrame | Lengths]:
        import pyarrow.parquet as pq

        cfg = self.cfg
        try:
            pf = pq.ParquetFile(fh)
        except (pa.ArrowInvalid, OSError) as e:
            raise Corrupt(f"parquet: {e}", 0, row=0) from None
        names = set(pf.schema_arrow.names)
        paths = {"text": cfg.text_field}
        if self.const_source is None:
            paths["source"] = cfg.source_field
        if cfg.id_field:
            paths["id"] = cfg.id_field
        missing = {k: p for k, p in paths.items() if p.split(".")[0] not in names}
        columns = sorted({p.split(".")[0] for p in paths.values()} & names)
        first = 0
        for rb in _row_group_batches(pf, columns or None):
            n = rb.num_rows
            self.report.n_read += n
            table = pa.Table.from_batches([rb])
            keep = pa.array([True] * n)
            cols = {}
            for key, path in paths.items():
                reason = {"text": "missing_text", "source": "missing_source", "id": "missing_id"}[key]
                if key in missing:
                    col = pa.nulls(n, pa.string())
                else:
                    try:
                        col = _get_path(table, path)
                    except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError):
                        col = pa.nulls(n, pa.string())
                    if key == "id" and not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
                        col = pc.cast(col, pa.string())
                    elif not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
                        r = "non_string_text" if key == "text" else "non_string_source"
                        if cfg.on_error == "raise":
                            raise InputError(self.f.url, r, f"column {path!r} has type {col.type}", _FIX[r], line=None)
                        n_kept = pc.sum(keep).as_py() or 0  # rows not already skipped for another reason
                        if n_kept:
                            self.report.skip(r, n_kept)
                        keep = pa.array([False] * n)
                        continue
                valid = pc.is_valid(col)
                bad = pc.and_(keep, pc.invert(valid))
                nbad = pc.sum(bad).as_py() or 0
                if nbad:
                    if cfg.on_error == "raise":
                        idx = pc.index(bad, True).as_py()
                        raise InputError(self.f.url, reason, f"row {first + idx} (0-based) has no {path!r}",
                                         _FIX[reason])
                    self.report.skip(reason, nbad)
                    keep = pc.and_(keep, valid)
                cols[key] = col
            rows = pa.array(range(first, first + n), pa.int64())
            first += n
            if len(cols) < len(paths):  # a whole column had the wrong type and was skipped
                continue
            if not pc.all(keep).as_py():
                rows = rows.filter(keep)
                cols = {k: v.filter(keep) for k, v in cols.items()}
            self.report.n_counted += len(rows)
            yield self.frame(rows, cols["text"], cols.get("source"), cols.get("id"))


def _row_group_batches(pf, columns) -> Iterator[pa.RecordBatch]:
    """The record batches of a Parquet file, row group by row group (a batch never spans two, so the rows of
    the groups before a corrupt one are all given out); raises `Corrupt` at the offset of the row group
    that cannot be decoded (its first page): it and every group after it are lost."""
    row = 0
    for k in range(pf.metadata.num_row_groups):
        try:
            for rb in pf.iter_batches(batch_size=4096, row_groups=[k], columns=columns):
                row += rb.num_rows
                yield rb
        except (pa.ArrowInvalid, OSError) as e:
            rg = pf.metadata.row_group(k)
            cols = [rg.column(j) for j in range(rg.num_columns)]
            starts = [c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset for c in cols]
            raise Corrupt(f"parquet: row group {k}: {e}", min((s for s in starts if s), default=0), row=row) from None


def iter_batches(f: InputFile, cfg: ReadConfig, report: FileReport | None = None) -> Iterator[pl.DataFrame]:
    """Stream the documents of one file as Polars batches (see the module docstring for the contract).

    >>> from lcdata.corpus.inputs import resolve_inputs
    >>> f = resolve_inputs("data/demo/web")[0]  # doctest: +SKIP
    >>> next(iter_batches(f, ReadConfig())).columns  # doctest: +SKIP
    ['doc_id', 'file', 'row', 'source', 'text']
    """
    report = report if report is not None else FileReport(file=f.rel, bytes=f.size)
    return _read(f, cfg, report, _Parser(f, cfg, report))


def iter_lengths(f: InputFile, cfg: ReadConfig, report: FileReport | None = None) -> Iterator[Lengths]:
    """Stream the documents of one file as `Lengths` (what character-mode statistics need): the same
    documents as `iter_batches`, read and skipped the same way, but the text is never copied out of Arrow
    (only its length in code points is kept) and no Polars query runs."""
    report = report if report is not None else FileReport(file=f.rel, bytes=f.size)
    return _read(f, cfg, report, _Parser(f, cfg, report, lengths=True))


def _tell(raw, size: int) -> int:
    try:
        return min(int(raw.tell()), size)
    except (OSError, ValueError, AttributeError):
        return 0


def _read(f: InputFile, cfg: ReadConfig, report: FileReport, parser: _Parser) -> Iterator:
    """The batches of ``f`` (`iter_batches` / `iter_lengths`); each chunk's compressed byte span and documents
    go to `lcdata.util.progress` (a no-op unless a progress meter is bound to this thread)."""
    produced = False
    counted = report.n_counted

    def fail(reason: str, detail: str, line: int | None = None, lost: Corrupt | None = None):
        if lost is not None:
            report.first_lost_row = lost.row
            report.unread_bytes = max(0, f.size - lost.offset)
            where = f"row {lost.row} (0-based)" if f.format == "parquet" else f"line {lost.row + 1}"
            detail = f"{detail}; records from {where} on are lost: {report.unread_bytes:,} of {f.size:,} bytes unread"
            if lost.checksum:
                detail += "; a checksum failure: the records read from that frame or member may be corrupt"
        if cfg.on_error == "raise":
            raise InputError(f.url, reason, detail, _FIX[reason], line=line)
        report.error, report.error_detail = reason, detail

    try:
        with fsspec.open(f.url, "rb") as raw:
            if f.format == "parquet":
                try:
                    for batch in parser.parquet_batches(raw):
                        produced = True
                        progress.chunk_read(0, 0, report.n_counted - counted)  # bytes: when the file ends
                        counted = report.n_counted
                        yield batch
                        progress.chunk_done()
                except Corrupt as e:
                    fail("corrupt_file", str(e), lost=e)
                    return
                except (pa.ArrowInvalid, OSError) as e:  # where the break is is unknown: count all bytes unread
                    fail("corrupt_file", f"parquet: {e}", lost=Corrupt("", 0, row=report.n_read))
                    return
            else:
                source = [raw]  # the object whose tell() is the compressed bytes consumed (the zstd decoder's)
                if f.format == "jsonl.zst":
                    pieces = zstd_pieces(raw, f.url, cfg.chunk_bytes, source)
                else:
                    pieces = {"jsonl.gz": gzip_pieces, "jsonl": plain_pieces}[f.format](raw, f.url)
                line = start = 0
                try:
                    for chunk in line_chunks(pieces, cfg.chunk_bytes):
                        produced = True
                        batch = parser.jsonl_chunk(chunk, line)
                        line += parser.chunk_lines
                        end = _tell(source[-1], f.size)  # compressed bytes decoded so far
                        progress.chunk_read(start, end, report.n_counted - counted)
                        start, counted = end, report.n_counted
                        yield batch
                        progress.chunk_done()
                except Corrupt as e:
                    # Complete lines before the break were yielded; the first line lost is the next one.
                    e.row = line
                    fail("corrupt_compressed", str(e), line=line + 1, lost=e)
                    return
    except FileNotFoundError:
        raise InputError(f.url, "not_found", "no such file", "check the path or URL") from None
    if not produced and report.n_read == 0:
        fail("empty_file", "the file holds no records")


def read_corpus(inputs, cfg: ReadConfig | None = None) -> pl.DataFrame:
    """Read a whole (small) corpus into one frame. For large corpora iterate `iter_batches` per file.

    >>> df = read_corpus(["data/demo"])  # doctest: +SKIP
    """
    cfg = cfg or ReadConfig()
    files = resolve_inputs(inputs)
    frames = [b for f in files for b in iter_batches(f, cfg)]
    return pl.concat(frames) if frames else empty_batch()
