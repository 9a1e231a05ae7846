"""Validation loss by source and position (the paper's Table 5 layout): does long-context data help at long
positions without hurting short ones, on every source?

For every sequence (window) of a held-out shard folder, one forward pass gives each token's cross-entropy.
The loss of predicting token ``t + 1`` is attributed to that token's **source** (from the shards' piece
table) and to its **position**, under one of two definitions (``position``; every output names it):

- ``document`` (default): the number of tokens of the same document before it that the model can see in
  the window (its offset within the document piece, so a piece continued from an earlier sequence starts
  again at 0). A token in the 4K+ bucket has 4K tokens of its own document as context, so a source of short
  documents (C4: median 315 tokens) has no tokens there at all.
- ``sequence``: its offset in the packed window (``t + 1``), the model's own position id without a
  document mask, whatever documents precede it: every source fills every bucket in proportion to its share,
  as in the paper's 4K-128K losses for every domain. Refused with ``doc_mask``, where a token sees only its
  own document and its sequence offset is no context at all.

Positions are bucketed by ``position_buckets`` edges (default ``0, 4096``: the paper's 0-4K and 4K+ split;
the last bucket is open). Padding is never scored. With ``doc_mask`` each document is computed alone (as
the trainer's ``--doc-mask``); without, as the paper trained (packed, no mask).

`eval_loss` returns one row per (model, source, bucket) with ``position`` (the definition used),
``n_tokens`` and the mean loss in nats, plus an ``ALL`` source row per bucket. `compare` lines up two or more models: ``delta = loss(model) -
loss(first model)`` per cell, flagged when ``|delta| > threshold`` (PAPER.md: 0.01).

A ``--model`` of the form ``unigram:SHARDS`` is the unigram model of that shard folder's token counts
(`lcdata_train.unigram`), scored at exactly the same tokens: the share of a difference that token frequency
alone explains.

Outputs (`run_eval_loss`): ``loss.parquet``, ``units.parquet`` (per model, window, source and bucket: the
summed loss ``loss_sum`` and ``n_tokens``, the units that ``make paper-ablation``'s bootstrap resamples;
their sums give ``loss.parquet`` exactly), ``loss.json`` (its ``position`` key) and, for several models,
``compare.parquet``; each names the position definition, and so does `format_table`'s title.
Cost: one forward pass per window (``max_sequences`` caps it), logits ``chunk`` positions at a time.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import polars as pl

from lcdata.errors import ConfigError

from .config import check_out_folder

ALL = "ALL"
THRESHOLD = 0.01
POSITIONS = {"document": "a token's offset in its own document, within the window",
             "sequence": "a token's offset in the packed sequence window, as the paper measures"}


def parse_edges(spec) -> tuple[int, ...]:
    """``"0,4096,32Ki"`` -> (0, 4096, 32768) (`lcdata.util.config.parse_buckets`): increasing edges from 0."""
    from lcdata.util.config import parse_buckets

    vals = tuple(int(v) for v in (parse_buckets(spec) if isinstance(spec, str) else spec))
    if not vals or vals[0] != 0 or any(b <= a for a, b in zip(vals, vals[1:])):
        raise ConfigError(f"position buckets {spec!r} must be increasing edges starting at 0, e.g. 0,4096,32768")
    return vals


@dataclass(frozen=True, kw_only=True, slots=True)
class EvalLossConfig:
    models: tuple[str, ...]
    shards: str
    out: str | None = None
    labels: tuple[str, ...] | None = None
    position_buckets: tuple[int, ...] = (0, 4096)
    seq_len: int | None = None
    doc_mask: bool = False
    position: str = "document"  # see POSITIONS and the module docstring
    max_sequences: int | None = None
    threshold: float = THRESHOLD
    chunk: int = 4096
    overwrite: bool = False  # replace the folder --out holds (only ever one `lcdata eval-loss` wrote)
    device: str = "auto"
    dtype: str = "auto"
    rope_theta: float | None = None
    quiet: bool = False

    def __post_init__(self):
        object.__setattr__(self, "models", tuple(self.models))
        if not self.models:
            raise ConfigError("eval-loss needs at least one --model")
        object.__setattr__(self, "position_buckets", parse_edges(self.position_buckets))
        labels = tuple(self.labels) if self.labels else tuple(model_label(m) for m in self.models)
        if len(labels) != len(self.models) or len(set(labels)) != len(labels):
            raise ConfigError(f"labels {labels} must be distinct, one per model ({len(self.models)})")
        object.__setattr__(self, "labels", labels)
        if self.position not in POSITIONS:
            raise ConfigError(f"position={self.position!r} must be one of {', '.join(POSITIONS)} "
                              "(document: offset in the token's own document; sequence: offset in the packed window)")
        if self.position == "sequence" and self.doc_mask:
            raise ConfigError("position='sequence' with doc_mask: under a document mask a token sees only its own "
                              "document, so its offset in the window is no context; use position='document' or "
                              "drop --doc-mask")
        if self.max_sequences is not None and self.max_sequences < 1:
            raise ConfigError(f"max_sequences={self.max_sequences} must be >= 1")
        if self.seq_len is not None and self.seq_len < 2:
            raise ConfigError(f"seq_len={self.seq_len} must be >= 2 (tokens per window)")
        if self.chunk < 1:
            raise ConfigError(f"chunk={self.chunk} must be >= 1")
        if not self.threshold >= 0:
            raise ConfigError(f"threshold={self.threshold} must be >= 0 (a |delta| in nats; the paper's is 0.01)")
        if self.out is not None:
            check_out_folder(self.out)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def model_label(path: str) -> str:
    """A model's name from its path: the first folder that is not ``final``, ``run`` or a checkpoint
    (``unigram:`` kept in front of a unigram model's)."""
    from .unigram import PREFIX, is_unigram

    if is_unigram(path):
        return PREFIX + model_label(path[len(PREFIX):])
    parts = [x for x in os.path.normpath(path).split(os.sep) if x]
    while len(parts) > 1 and (parts[-1] in ("final", "run", "checkpoints") or parts[-1].startswith("step-")):
        parts.pop()
    return parts[-1] if parts else path


def window_tokens(shards, i: int, a: int, L: int, position: str = "document") -> tuple[np.ndarray, np.ndarray]:
    """(source index, position) of each token of window ``[a, a + L)`` of sequence ``i``; source -1 marks
    padding. Position: in its document piece (``document``) or in the window (``sequence``)."""
    src = np.full(L, -1, dtype=np.int64)
    pos = np.zeros(L, dtype=np.int64)
    for s in shards.segments(i):
        st, ln = int(s["start"]) - a, int(s["length"])
        lo, hi = max(st, 0), min(st + ln, L)
        if hi > lo:
            src[lo:hi] = int(s["source"])
            pos[lo:hi] = np.arange(lo, hi) - lo
    return src, (np.arange(L, dtype=np.int64) if position == "sequence" else pos)


def _model_sums(model, ds, cfg: EvalLossConfig, n_src: int, label: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Per (window, source, bucket): summed loss (float64) and token counts. ``model`` is a `Llama` or a
    `UnigramModel` (scored at the same positions: the loss of predicting each scored label). Progress: one
    `lcdata.util.progress.Stage` per model, labelled by its name, counting windows up to their total."""
    from lcdata.util.progress import Stage

    from .unigram import UnigramModel

    edges = np.asarray(cfg.position_buckets)
    nb = len(edges)
    n = len(ds) if cfg.max_sequences is None else min(len(ds), cfg.max_sequences)
    loss_sum, count = np.zeros((n, n_src, nb)), np.zeros((n, n_src, nb), dtype=np.int64)
    unigram = isinstance(model, UnigramModel)
    if not unigram:
        from .infer import token_losses

        dev = next(model.parameters()).device
    prog = Stage(f"eval-loss {label}".strip(), n, enabled=not cfg.quiet, unit="seq")
    scored_total = 0
    for j in range(n):
        item = ds[j]
        i, w = divmod(j, ds.windows)
        src, pos = window_tokens(ds.shards, i, w * ds.seq_len, ds.seq_len, cfg.position)
        if unigram:
            lt = model.token_losses(item["labels"].numpy())
        else:
            cu = item["cu_seqlens"].to(dev) if cfg.doc_mask else None
            lt = token_losses(model, item["input_ids"][None].to(dev), item["labels"][None].to(dev),
                              item["position_ids"][None].to(dev), cu, None, cfg.chunk, cfg.dtype)[0].cpu().numpy()
        scored = (item["labels"] != -100).numpy()[:-1]
        tsrc, tpos, tl = src[1:][scored], pos[1:][scored], lt[:-1][scored].astype(np.float64)
        ok = tsrc >= 0
        tsrc, tpos, tl = tsrc[ok], tpos[ok], tl[ok]
        b = np.searchsorted(edges, tpos, side="right") - 1
        np.add.at(loss_sum[j], (tsrc, b), tl)
        np.add.at(count[j], (tsrc, b), 1)
        scored_total += len(tl)
        prog.update(1, note=f"{scored_total:,} tokens scored")
    prog.close()
    return loss_sum, count


_LOSS_SCHEMA = {"model": pl.Utf8, "source": pl.Utf8, "position": pl.Utf8, "bucket_min": pl.Int64,
                "bucket_max": pl.Int64, "n_tokens": pl.Int64, "loss": pl.Float64}
_UNIT_SCHEMA = {"model": pl.Utf8, "window": pl.Int64, "source": pl.Utf8, "bucket_min": pl.Int64,
                "n_tokens": pl.Int64, "loss_sum": pl.Float64}


def _load(path: str, cfg: EvalLossConfig, ds):
    """The model a ``--model`` names: a checkpoint/HF folder, or ``unigram:SHARDS`` (`lcdata_train.unigram`)."""
    from .unigram import PREFIX, UnigramModel, is_unigram

    if is_unigram(path):
        return UnigramModel.from_shards(path[len(PREFIX):], ds.vocab_size)
    from .infer import load_model

    model, _ = load_model(path, cfg.device, cfg.rope_theta, ds.seq_len)
    if ds.vocab_size > model.cfg.vocab_size:
        raise ConfigError(f"the shards {cfg.shards} use {ds.vocab_size:,} token ids but the model {path!r} has a "
                          f"vocabulary of {model.cfg.vocab_size:,}; evaluate on shards built with the model's tokenizer")
    return model


def evaluate(cfg: EvalLossConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(losses, units): `eval_loss`'s frame, and per (model, window, source, bucket) the summed loss and token
    count (``units.parquet``: the units a bootstrap resamples; rows with no tokens left out)."""
    from lcdata.shards.reader import open_shards

    from .data import ShardDataset

    shards = open_shards(cfg.shards)
    ds = ShardDataset(shards, cfg.seq_len, cfg.doc_mask)
    edges = list(cfg.position_buckets)
    frames, units = [], []
    for path, label in zip(cfg.models, cfg.labels):
        model = _load(path, cfg, ds)
        s3, c3 = _model_sums(model, ds, cfg, len(shards.sources), label)
        s, c = s3.sum(0), c3.sum(0)
        rows = []
        for k, name in enumerate([*shards.sources, ALL]):
            ls, cs = (s.sum(0), c.sum(0)) if name == ALL else (s[k], c[k])
            for b, lo in enumerate(edges):
                rows.append({"model": label, "source": name, "position": cfg.position, "bucket_min": lo,
                             "bucket_max": edges[b + 1] if b + 1 < len(edges) else None, "n_tokens": int(cs[b]),
                             "loss": float(ls[b] / cs[b]) if cs[b] else None})
        frames.append(pl.DataFrame(rows, schema=_LOSS_SCHEMA))
        w, k, b = np.nonzero(c3)
        units.append(pl.DataFrame({"model": [label] * len(w), "window": w.astype(np.int64),
                                   "source": np.asarray(shards.sources, dtype=object)[k].tolist() if len(k) else [],
                                   "bucket_min": np.asarray(edges, dtype=np.int64)[b], "n_tokens": c3[w, k, b],
                                   "loss_sum": s3[w, k, b]}, schema=_UNIT_SCHEMA))
        del model
    return pl.concat(frames), pl.concat(units)


def eval_loss(cfg: EvalLossConfig) -> pl.DataFrame:
    """Loss per (model, source, position bucket) on the held-out shards; see the module docstring."""
    return evaluate(cfg)[0]


def compare(losses: pl.DataFrame, threshold: float = THRESHOLD) -> pl.DataFrame:
    """Each model's loss minus the first model's, per (source, bucket); ``flag`` when |delta| > threshold."""
    models = losses["model"].unique(maintain_order=True).to_list()
    key = ["source", "position", "bucket_min"]
    base = losses.filter(pl.col("model") == models[0]).select(*key, pl.col("loss").alias("base_loss"))
    out = (losses.filter(pl.col("model") != models[0]).join(base, on=key, how="left")
           .with_columns(baseline=pl.lit(models[0]), delta=pl.col("loss") - pl.col("base_loss")))
    return out.with_columns(flag=pl.col("delta").abs() > threshold).select(
        "model", "baseline", "source", "position", "bucket_min", "bucket_max", "n_tokens", "base_loss", "loss", "delta",
        "flag")


def bucket_name(lo: int, hi) -> str:
    """``0-4K``, ``>=4K``: the labels of lcdata's length buckets."""
    from lcdata.util.figure import label

    return label(lo, hi)


def format_table(losses: pl.DataFrame, cmp: pl.DataFrame | None = None) -> str:
    """Text table (`lcdata.util.table.render`, columns sized to their content) under a title naming the
    position definition: one line per (model, source), one column per position bucket; then the deltas
    against the baseline (``*``: |delta| > threshold)."""
    from lcdata.util.table import render

    buckets = losses.select("bucket_min", "bucket_max").unique(maintain_order=True).rows()
    names = [bucket_name(a, b) for a, b in buckets]

    def wide(frame: pl.DataFrame, cell) -> pl.DataFrame:
        rows = []
        for (model, source), g in frame.group_by("model", "source", maintain_order=True):
            vals = {r["bucket_min"]: r for r in g.iter_rows(named=True)}
            rows.append({"model": model, "source": source,
                         **{n: cell(vals.get(a)) for n, (a, _) in zip(names, buckets)}})
        return pl.DataFrame(rows, schema={"model": pl.String, "source": pl.String, **{n: pl.String for n in names}})

    cols = [("model", "model", "str"), ("source", "source", "str")] + [(n, n, "rstr") for n in names]
    title = ", ".join(f"position = {p} ({POSITIONS.get(p, p)})" for p in losses["position"].unique(maintain_order=True))
    lines = [f"loss (nats) per source and position bucket; {title}",
             render(wide(losses, lambda r: None if r is None or r["loss"] is None else f"{r['loss']:.4f}"), cols)]
    if cmp is not None and len(cmp):
        lines.append(f"\ndelta vs {cmp['baseline'][0]} (* = |delta| > threshold)")
        lines.append(render(wide(cmp, lambda r: None if r is None or r["delta"] is None else
                                 f"{r['delta']:+.4f}{'*' if r['flag'] else ' '}"), cols))
    return "\n".join(lines)


def run_eval_loss(cfg: EvalLossConfig) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """`eval_loss`, the comparison when there are several models, and the outputs in ``cfg.out``."""
    from contextlib import nullcontext

    from lcdata.util.io import write_json, write_parquet
    from lcdata.util.outdir import claim_out

    from .unigram import PREFIX, is_unigram

    paths = [m[len(PREFIX):] if is_unigram(m) else m for m in cfg.models]
    with (claim_out(cfg.out, "eval-loss", overwrite=cfg.overwrite, resume_flag=None, inputs=[cfg.shards, *paths],
                    protect={"the shard folder": [cfg.shards], "a model": paths})
          if cfg.out else nullcontext()):
        return _run_eval_loss(cfg, write_json, write_parquet)


def _run_eval_loss(cfg: EvalLossConfig, write_json, write_parquet) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    losses, units = evaluate(cfg)
    cmp = compare(losses, cfg.threshold) if len(cfg.models) > 1 else None
    if cfg.out:
        write_parquet(losses, os.path.join(cfg.out, "loss.parquet"))
        write_parquet(units, os.path.join(cfg.out, "units.parquet"))
        if cmp is not None:
            write_parquet(cmp, os.path.join(cfg.out, "compare.parquet"))
        write_json({"config": cfg.to_dict(), "position": cfg.position, "position_means": POSITIONS[cfg.position],
                    "loss": losses.to_dicts(),
                    "compare": cmp.to_dicts() if cmp is not None else None}, os.path.join(cfg.out, "loss.json"))
    return losses, cmp
