"""`lcdata stats`: run the length statistics over a corpus, merge partials, read/write the stats folder.

Flow: `resolve_inputs` -> for each file, in a worker (`parallel.ordered_map`: threads of this process in
character mode, worker processes with a tokenizer): stream the documents (`corpus.iter_lengths` in
character mode: lengths only, Arrow and NumPy; `corpus.iter_batches` with a tokenizer), count tokens (exact
with a tokenizer, else the char estimate), keep the per-file histogram and per-document lengths
(`stats.doc_table`, an Arrow table) -> fold the per-file results *in file order* (so results do not depend
on ``workers``) -> summaries -> the stats folder.

The stats folder (schema in docs/stats.md; these names are a contract):
``sources.parquet``, ``buckets.parquet``, ``histogram.parquet`` (the exact mergeable partial),
``files.parquet`` and ``skips.parquet`` (per-file read / counted / skipped-by-reason, and where a file
that could not be read to its end broke: error, first lost row, unread bytes), ``doc_lengths.parquet``
(one row per document: doc_id, file, row, source, n_chars, n_tokens, n_est_tokens; used by `lcdata sample`),
``stats.json`` (all of it plus config, inputs and fingerprint) and ``length_distribution.png``.

Memory: the per-document table of one file at a time plus the histogram (bounded by distinct lengths).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from ..corpus.inputs import InputFile, resolve_inputs
from ..corpus.reader import FileReport, Lengths, iter_batches, iter_lengths, read_summary
from ..errors import LcdataError
from ..tokenizer.hf import count_tokens, get_engine, load_tokenizer, resolve_engine, tokenizer_info
from ..util.config import check_workers
from ..util.io import command_line, join, make_dirs, read_json, write_bytes, write_json, write_parquet
from ..util.outdir import check_outputs, claim_out, input_roots, outputs_record
from ..util.parallel import ordered_map, resolve_workers
from ..util.progress import Stage
from ..version import VERSION
from .config import StatsConfig
from .lengths import (
    DOC_ARROW,
    DOC_SCHEMA,
    doc_table,
    histogram,
    merge_histograms,
    summarize_buckets,
    summarize_sources,
)

FILES_SCHEMA = {"file": pl.String, "bytes": pl.Int64, "n_read": pl.Int64, "n_counted": pl.Int64,
                "n_skipped": pl.Int64, "error": pl.String, "error_detail": pl.String, "first_lost_row": pl.Int64,
                "unread_bytes": pl.Int64}
SKIPS_SCHEMA = {"file": pl.String, "reason": pl.String, "n_docs": pl.Int64}


@dataclass
class StatsResult:
    """Everything `lcdata stats` computes. Frames are Polars; see docs/stats.md for columns."""

    config: StatsConfig
    inputs: list[InputFile]
    histogram: pl.DataFrame
    files: pl.DataFrame
    skips: pl.DataFrame
    fingerprint: str
    tokenizer: dict | None = None
    doc_lengths: pl.DataFrame | None = None
    elapsed_s: float = 0.0
    engine: dict | None = None  # the tokenizer engine used: {"name": "hf" | "tiktoken", "reason": ...}
    outputs: dict | None = None  # read back from a stats folder: its files' sizes and SHA-256 (`outdir.check_outputs`)
    sources: pl.DataFrame = field(init=False)
    buckets: pl.DataFrame = field(init=False)

    def __post_init__(self):
        self.sources = summarize_sources(self.histogram, self.config.long_threshold, self.config.calibrate)
        self.buckets = summarize_buckets(self.histogram, self.config.buckets)

    @property
    def totals(self) -> dict:
        f = self.files
        return {
            "n_files": f.height,
            "bytes": int(f["bytes"].sum()),
            "n_read": int(f["n_read"].sum()),
            "n_counted": int(f["n_counted"].sum()),
            "n_skipped": int(f["n_skipped"].sum()),
            "n_file_errors": int(f["error"].is_not_null().sum()),
            "unread_bytes": int(f["unread_bytes"].sum()),
            "n_docs": int(self.sources["n_docs"].sum()),
            "n_chars": int(self.sources["n_chars"].sum()),
            "n_tokens": int(self.sources["n_tokens"].sum()),
        }

    @property
    def read_report(self) -> dict:
        """What was not read, as `corpus.read_summary` gives it (a build manifest's ``read_report``)."""
        skipped: dict[str, dict[str, int]] = {}
        for file, reason, n in self.skips.select("file", "reason", "n_docs").iter_rows():
            skipped.setdefault(file, {})[reason] = n
        return read_summary([
            FileReport(file=r["file"], bytes=r["bytes"], n_read=r["n_read"], n_counted=r["n_counted"],
                       skipped=skipped.get(r["file"], {}), error=r["error"], error_detail=r["error_detail"],
                       first_lost_row=r["first_lost_row"], unread_bytes=r["unread_bytes"] or 0)
            for r in self.files.iter_rows(named=True)])

    def to_json(self) -> dict:
        return {
            "lcdata_version": VERSION,
            "kind": "lcdata.stats.lengths",
            "fingerprint": self.fingerprint,
            "length_unit": "tokens" if self.config.tokenizer else f"estimated tokens (chars / {self.config.chars_per_token})",
            "config": self.config.to_dict(),
            "tokenizer": self.tokenizer,
            "engine": self.engine,
            "inputs": [{"url": f.url, "rel": f.rel, "bytes": f.size, "format": f.format, "version": f.version}
                       for f in self.inputs],
            "totals": self.totals,
            "sources": self.sources.to_dicts(),
            "buckets": self.buckets.to_dicts(),
            "files": self.files.to_dicts(),
            "skips": self.skips.to_dicts(),
            "elapsed_s": round(self.elapsed_s, 3),
            "command": command_line(),
        }


def fingerprint(inputs: list[InputFile], config: StatsConfig, tokenizer_sha: str | None) -> str:
    """Identity of (corpus files: name, size and version, read config, length unit): what a stats folder was
    computed from."""
    r = config.read
    ident = {
        "files": sorted((f.rel, f.size, f.version) for f in inputs),
        "read": [r.text_field, r.source_field, r.source_from_path, r.source, r.id_field],
        "length": tokenizer_sha or f"chars/{config.chars_per_token}",
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def stats_tokenizer(config: StatsConfig) -> tuple[dict | None, dict | None]:
    """(tokenizer record, engine record ``{"name", "reason"}``) of a stats run, both None without a tokenizer.
    The engine is resolved here, once per run (a forced engine that cannot run fails here); workers get
    its name."""
    if not config.tokenizer:
        return None, None
    info = tokenizer_info(config.tokenizer)
    name, why = resolve_engine(config.tokenizer, config.engine)
    return {"path": info.path, "sha256": info.sha256, "vocab_size": info.vocab_size}, {"name": name, "reason": why}


def stats_one_file(args) -> tuple[FileReport, pl.DataFrame, pa.Table]:
    """One file -> (its report, its histogram, its per-document table as Arrow, ``DOC_ARROW``). ``args``:
    (`InputFile`, `StatsConfig`, the engine name resolved once by the caller: 'hf' or 'tiktoken', or None
    without a tokenizer)."""
    f, config, engine_name = args
    report = FileReport(file=f.rel, bytes=f.size)
    cpt = config.chars_per_token
    if config.tokenizer:
        tok, engine = load_tokenizer(config.tokenizer), get_engine(config.tokenizer, engine_name)
        tables = [doc_table(f.rel, Lengths.of_batch(b), cpt, count_tokens(tok, b["text"].to_list(), engine))
                  for b in iter_batches(f, config.read, report) if b.height]
    else:  # character mode: lengths only, on Arrow and NumPy
        tables = [doc_table(f.rel, lengths, cpt) for lengths in iter_lengths(f, config.read, report)]
    docs = pa.concat_tables(tables) if tables else DOC_ARROW.empty_table()
    return report, histogram(docs), docs


def compute_stats(inputs, config: StatsConfig | None = None, *, workers: int | None = None,
                  progress: bool = False, doc_sink=None) -> StatsResult:
    """Compute length statistics of a corpus.

    ``inputs``: files, directories, globs or fsspec URLs. ``doc_sink``: optional callable receiving each
    file's per-document length frame in file order (the CLI streams them to parquet); without it, and with
    ``config.doc_lengths``, they are returned in ``result.doc_lengths``.

    >>> r = compute_stats(["data/demo"], StatsConfig(tokenizer="data/demo/tokenizer.json"))  # doctest: +SKIP
    >>> r.sources.select("source", "n_docs", "token_share")  # doctest: +SKIP
    """
    config = config or StatsConfig()
    t0 = time.perf_counter()
    files = resolve_inputs(inputs)
    tok_info, engine = stats_tokenizer(config)  # fails here, before any worker starts
    n_workers = resolve_workers(workers, len(files), (f.protocol for f in files))
    prog = Stage("stats", sum(f.size for f in files), enabled=progress, items=len(files))
    reports, hists, keep = [], [], []
    # Character mode is zstd + Arrow's JSON parser + Polars: threads of this process (no interpreter start
    # and imports per worker, no pickling of the results); a tokenizer runs in worker processes.
    results = ordered_map(stats_one_file, [(f, config, engine and engine["name"]) for f in files], n_workers, threads=not config.tokenizer,
                          describe=lambda a: a[0].url, meter=prog.meter)
    with prog:
        for i, (f, (report, hist, docs)) in enumerate(zip(files, results)):
            reports.append(report)
            hists.append(hist)
            if isinstance(doc_sink, DocWriter):
                doc_sink.write_arrow(docs)
            elif doc_sink is not None:
                doc_sink(pl.from_arrow(docs))
            elif config.doc_lengths:
                keep.append(docs)
            prog.item_done(i, f.size, report.n_counted)
    files_df, skips_df = reports_to_frames(reports)
    return StatsResult(
        config=config, inputs=files, histogram=merge_histograms(hists), files=files_df, skips=skips_df,
        fingerprint=fingerprint(files, config, tok_info and tok_info["sha256"]), tokenizer=tok_info,
        doc_lengths=pl.from_arrow(pa.concat_tables(keep)) if keep else None, elapsed_s=time.perf_counter() - t0, engine=engine,
    )


def reports_to_frames(reports: list[FileReport]) -> tuple[pl.DataFrame, pl.DataFrame]:
    files = pl.DataFrame(
        [{"file": r.file, "bytes": r.bytes, "n_read": r.n_read, "n_counted": r.n_counted,
          "n_skipped": r.n_skipped, "error": r.error, "error_detail": r.error_detail,
          "first_lost_row": r.first_lost_row, "unread_bytes": r.unread_bytes} for r in reports],
        schema=FILES_SCHEMA,
    )
    skips = pl.DataFrame(
        [{"file": r.file, "reason": k, "n_docs": v} for r in reports for k, v in sorted(r.skipped.items())],
        schema=SKIPS_SCHEMA,
    )
    return files, skips


def merge_stats(parts: list[StatsResult]) -> StatsResult:
    """Exact merge of stats computed on disjoint sets of files (same config and length unit)."""
    if not parts:
        raise LcdataError("merge_stats needs at least one StatsResult")
    base = parts[0]
    for p in parts[1:]:
        if dataclasses.replace(p.config, engine=base.config.engine) != base.config or (p.tokenizer or {}).get("sha256") != (base.tokenizer or {}).get("sha256"):
            raise LcdataError("cannot merge stats computed with different configs or tokenizers; rerun with one config")
    inputs = sorted({f.rel: f for p in parts for f in p.inputs}.values(), key=lambda f: f.rel)
    if len(inputs) != sum(len(p.inputs) for p in parts):
        raise LcdataError("cannot merge stats whose inputs overlap: the same file would be counted twice")
    order = {f.rel: i for i, f in enumerate(inputs)}
    files = pl.concat([p.files for p in parts]).sort(pl.col("file").replace_strict(order, default=None))
    skips = pl.concat([p.skips for p in parts]).sort("file", "reason")
    docs = [p.doc_lengths for p in parts if p.doc_lengths is not None]
    return StatsResult(
        config=base.config, inputs=inputs, histogram=merge_histograms([p.histogram for p in parts]),
        files=files, skips=skips, fingerprint=fingerprint(inputs, base.config, (base.tokenizer or {}).get("sha256")),
        tokenizer=base.tokenizer,
        doc_lengths=pl.concat(docs).sort(pl.col("file").replace_strict(order, default=None), "row") if docs else None,
        elapsed_s=sum(p.elapsed_s for p in parts),
        engine=base.engine if all(p.engine == base.engine for p in parts) else
        {"name": "mixed", "reason": "parts counted with different engines (the same counts)"},
    )


class DocWriter:
    """Streams per-file document-length frames into one parquet file (atomic on close)."""

    def __init__(self, path: str):
        import pyarrow.parquet as pq

        from ..util.io import atomic_open

        self._path = path
        self._ctx = atomic_open(path)
        self._fh = self._ctx.__enter__()
        # Dictionary pages only for the repeated columns: doc_id is unique, so a dictionary would be built
        # and thrown away for every row group (about a third of the writing time).
        self._w = pq.ParquetWriter(self._fh, DOC_ARROW, compression="zstd", use_dictionary=["file", "source"])

    def __call__(self, docs: pl.DataFrame) -> None:
        if docs.height:
            self.write_arrow(docs.select(list(DOC_SCHEMA)).cast(DOC_SCHEMA).to_arrow())

    def write_arrow(self, docs: pa.Table) -> None:
        if docs.num_rows:
            try:
                self._w.write_table(docs)
            except OSError as e:  # disk full, file-size limit: name the file (its temp is removed by close)
                if e.filename is None:
                    e.filename = self._path
                raise

    def close(self, ok: bool) -> None:
        """Finish the file (``ok``) or drop it; either way its temp file does not outlive this call."""
        try:
            self._w.close()  # writes the footer: can fail (disk full) like any write
        except BaseException as e:
            self._ctx.__exit__(type(e), e, e.__traceback__)  # removes the temp file
            if ok:
                raise
            return  # already failing: the first error is the one reported
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


def stats_protect(inputs, config: StatsConfig) -> dict:
    """What `lcdata stats` reads, which its ``--out`` may never be or contain (`outdir.claim_out`)."""
    return {"an input": [str(i) for i in ([inputs] if isinstance(inputs, str) else inputs)],
            "the tokenizer": [config.tokenizer] if config.tokenizer else []}


def run_stats(inputs, out_dir: str, config: StatsConfig | None = None, *, workers: int | None = None,
              progress: bool = False, figure: bool = True, overwrite: bool = False) -> StatsResult:
    """Compute stats and write the stats folder ``out_dir`` (local path or fsspec URL). A folder that is not
    empty is refused unless it is a stats folder and ``overwrite`` (`outdir.claim_out`)."""
    config = config or StatsConfig()
    check_workers(workers)
    with claim_out(out_dir, "stats", overwrite=overwrite, protect=stats_protect(inputs, config),
                   inputs=input_roots(inputs), resume_flag=None):
        sink = DocWriter(join(out_dir, "doc_lengths.parquet")) if config.doc_lengths else None
        ok = False
        try:
            result = compute_stats(inputs, config, workers=workers, progress=progress, doc_sink=sink)
            ok = True
        finally:
            if sink is not None:
                sink.close(ok)
        write_stats(result, out_dir, figure=figure)
    return result


def write_stats(result: StatsResult, out_dir: str, figure: bool = True) -> None:
    make_dirs(out_dir)
    names = ["sources.parquet", "buckets.parquet", "histogram.parquet", "files.parquet", "skips.parquet"]
    write_parquet(result.sources, join(out_dir, "sources.parquet"))
    write_parquet(result.buckets, join(out_dir, "buckets.parquet"))
    write_parquet(result.histogram, join(out_dir, "histogram.parquet"))
    write_parquet(result.files, join(out_dir, "files.parquet"))
    write_parquet(result.skips, join(out_dir, "skips.parquet"))
    if result.doc_lengths is not None:
        write_parquet(result.doc_lengths, join(out_dir, "doc_lengths.parquet"))
    if result.doc_lengths is not None or result.config.doc_lengths:  # else streamed there by run_stats
        names.append("doc_lengths.parquet")
    if figure:
        from ..util.plots import length_figure

        png = length_figure(result.buckets, title="Token share by length bucket")
        write_bytes(png, join(out_dir, "length_distribution.png"))
        names.append("length_distribution.png")
    # last: its presence marks a complete folder, and it lists every other file (size + SHA-256)
    write_json({**result.to_json(), "outputs": outputs_record(out_dir, names)}, join(out_dir, "stats.json"))


def load_stats(out_dir: str, with_doc_lengths: bool = False) -> StatsResult:
    """Read a stats folder written by `run_stats` back into a `StatsResult`."""
    from ..corpus.config import ReadConfig

    try:
        meta = read_json(join(out_dir, "stats.json"))
    except FileNotFoundError:
        raise LcdataError(f"{out_dir!r} holds no stats.json; run `lcdata stats ... --out {out_dir}` first") from None
    c = dict(meta["config"])
    c["read"] = ReadConfig(**c["read"])
    c["buckets"] = tuple(c["buckets"])
    config = StatsConfig(**c)
    inputs = [InputFile(url=i["url"], rel=i["rel"], size=i["bytes"], format=i["format"], version=i.get("version", ""))
              for i in meta["inputs"]]
    import fsspec

    def rd(name):
        with fsspec.open(join(out_dir, name), "rb") as fh:
            return pl.read_parquet(fh)

    check_outputs(out_dir, meta.get("outputs"), ["histogram.parquet", "files.parquet", "skips.parquet"]
                  + (["doc_lengths.parquet"] if with_doc_lengths else []), "stats")
    files = rd("files.parquet")  # a folder written before first_lost_row / unread_bytes: null (not known)
    files = files.with_columns(pl.lit(None, t).alias(c) for c, t in FILES_SCHEMA.items() if c not in files.columns)
    res = StatsResult(
        config=config, inputs=inputs, histogram=rd("histogram.parquet"), files=files,
        skips=rd("skips.parquet"), fingerprint=meta["fingerprint"], tokenizer=meta.get("tokenizer"),
        doc_lengths=rd("doc_lengths.parquet") if with_doc_lengths else None, elapsed_s=meta.get("elapsed_s", 0.0),
        engine=meta.get("engine"), outputs=meta.get("outputs"),
    )
    return res
