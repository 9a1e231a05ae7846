"""`lcdata sample`: solve a sampling plan for a corpus and write the plan folder.

Lengths come from a stats folder (``--stats DIR``, checked against the inputs by fingerprint) or are
computed on the fly with the same options as `lcdata stats`. The plan folder (docs/sample.md):

- ``plan.parquet``: one row per selected unit: ``doc_id, file, row, source, n_tokens, chunk, token_start,
  token_end, length, copies`` (``file`` is the input's relative name, ``row`` its 0-based line/row;
  ``token_end`` null = the whole document), sorted by file, row, chunk.
- ``report.parquet`` / ``report.json``: original / target / achieved tokens and shares per source and per
  (source, length bucket); ``groups.parquet``: the solved parameters per group.
- ``plan.json``: the manifest (config, stats fingerprint, inputs, plan fingerprint, totals, capped targets).
- ``sample.png``: original / target / achieved token share by length bucket per source (paper Fig. 2).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from ..corpus.inputs import resolve_inputs
from ..errors import ConfigError
from ..stats.config import StatsConfig
from ..stats.run import compute_stats, fingerprint, load_stats
from ..util.config import check_workers
from ..util.io import command_line, join, make_dirs, read_json, write_bytes, write_json, write_parquet
from ..util.outdir import check_outputs, claim_out, input_roots, outputs_record
from ..version import VERSION
from .config import SampleConfig
from .solver import Plan, copies_stats, recipe_warnings, solve_plan


@dataclass
class SampleResult:
    plan: Plan
    manifest: dict


def plan_fingerprint(plan: pl.DataFrame, stats_fp: str, cfg: SampleConfig) -> str:
    h = hashlib.sha256()
    h.update(stats_fp.encode())
    h.update(repr(sorted(cfg.to_dict().items(), key=lambda kv: kv[0])).encode())
    p = plan.sort("file", "row", "chunk")
    h.update("\n".join(p["file"].unique(maintain_order=True).to_list()).encode())
    for col in ("row", "chunk", "copies", "length"):
        h.update(np.ascontiguousarray(p[col].cast(pl.Int64).to_numpy()).tobytes())
    return h.hexdigest()[:32]


def check_requested(st, stats_dir: str, requested: dict | None) -> None:
    """Refuse options the caller set explicitly that disagree with how the stats folder was computed.
    ``requested`` maps a StatsConfig field (``chars_per_token``) or a ReadConfig field (``read.source``) to the
    value asked for. Sampling takes lengths, sources and ids from the stats, so a different value would be
    silently ignored; options left unset follow the stats."""
    for key, value in (requested or {}).items():
        field = key.removeprefix("read.")
        flag = "--" + field.replace("_", "-")
        if key == "chars_per_token" and st.config.tokenizer:
            raise ConfigError(
                f"{flag} {value} conflicts with the stats in {stats_dir!r}: their lengths are exact counts of "
                f"tokenizer {(st.tokenizer or {}).get('path')!r}, not a chars/token estimate; drop {flag}, or rerun "
                f"`lcdata stats` with {flag} {value}"
            )
        have = getattr(st.config.read if key.startswith("read.") else st.config, field)
        if value != have:
            raise ConfigError(
                f"{flag} {value!r} conflicts with the stats in {stats_dir!r}, which were computed with "
                f"{field}={have!r}; drop {flag} (sampling uses the stats' sources, ids and lengths), or rerun "
                f"`lcdata stats` with {flag} {value!r}"
            )


def _doc_table(inputs, stats_dir, stats_config, workers, progress, requested=None):
    """Per-document lengths + the stats identity, from a stats folder or computed now."""
    if stats_dir is not None:
        st = load_stats(stats_dir)
        check_requested(st, stats_dir, requested)
        if inputs:
            files = resolve_inputs(inputs)
            fp = fingerprint(files, st.config, (st.tokenizer or {}).get("sha256"))
            if fp != st.fingerprint:
                have = sorted(f.rel for f in files)
                was = sorted(f.rel for f in st.inputs)
                diff = sorted(set(have) ^ set(was))[:5]
                raise ConfigError(
                    f"the stats in {stats_dir!r} were computed from other inputs (fingerprint {st.fingerprint} "
                    f"!= {fp} for the inputs given{'; differing files: ' + ', '.join(diff) if diff else ', same names but other sizes, modification times or read options'}); "
                    f"rerun `lcdata stats` on these inputs or pass the matching --stats folder"
                )
        if stats_config is not None and stats_config.tokenizer:
            from ..tokenizer.hf import tokenizer_info

            sha = tokenizer_info(stats_config.tokenizer).sha256
            if sha != (st.tokenizer or {}).get("sha256"):
                raise ConfigError(
                    f"the stats in {stats_dir!r} were computed with tokenizer "
                    f"{(st.tokenizer or {}).get('path', 'none (char estimate)')}, not {stats_config.tokenizer!r}; "
                    "rerun `lcdata stats` with this tokenizer"
                )
        try:
            import fsspec

            check_outputs(stats_dir, st.outputs, ["doc_lengths.parquet"], "stats")
            with fsspec.open(join(stats_dir, "doc_lengths.parquet"), "rb") as fh:
                cols = ["file", "row", "source", "n_tokens"] + (["doc_id"] if st.config.read.id_field else [])
                docs = pl.read_parquet(fh, columns=cols)
        except FileNotFoundError:
            raise ConfigError(
                f"{stats_dir!r} has no doc_lengths.parquet; rerun `lcdata stats` without --no-doc-lengths"
            ) from None
        return docs, st
    if not inputs:
        raise ConfigError("give INPUT files/folders, or --stats DIR from `lcdata stats`")
    st = compute_stats(inputs, stats_config or StatsConfig(), workers=workers, progress=progress)
    docs = st.doc_lengths
    cols = ["file", "row", "source", "n_tokens"] + (["doc_id"] if st.config.read.id_field else [])
    return docs.select(cols), st


def sample_protect(inputs, stats_dir: str | None, stats_config: StatsConfig | None) -> dict:
    """What `lcdata sample` reads, which its ``--out`` may never be or contain (`outdir.claim_out`)."""
    return {"an input": [str(i) for i in ([inputs] if isinstance(inputs, str) else inputs or [])],
            "the stats folder": [stats_dir] if stats_dir else [],
            "the tokenizer": [stats_config.tokenizer] if stats_config and stats_config.tokenizer else []}


def run_sample(inputs, out_dir: str | None, config: SampleConfig, *, stats_dir: str | None = None,
               stats_config: StatsConfig | None = None, workers: int | None = None,
               progress: bool = False, figure: bool = True, requested: dict | None = None,
               overwrite: bool = False) -> SampleResult:
    """Solve the plan for ``inputs`` (or the corpus of ``stats_dir``) and write it to ``out_dir``.

    ``requested``: with ``stats_dir``, options the caller set explicitly ({"read.source": "web",
    "chars_per_token": 3.0, ...}); each must equal the stats folder's, else `ConfigError` (`check_requested`).

    >>> from lcdata.sample.config import SampleConfig
    >>> r = run_sample(["data/demo"], "out/plan", SampleConfig(strategy="per-source", budget_tokens=10**6),
    ...                stats_dir="out/demo/stats")  # doctest: +SKIP
    """
    check_workers(workers)
    if out_dir is None:
        return sample_into(inputs, None, config, stats_dir, stats_config, workers, progress, figure, requested)
    with claim_out(out_dir, "plan", overwrite=overwrite, protect=sample_protect(inputs, stats_dir, stats_config),
                   inputs=input_roots(inputs or []), resume_flag=None):
        return sample_into(inputs, out_dir, config, stats_dir, stats_config, workers, progress, figure, requested)


def sample_into(inputs, out_dir, config, stats_dir=None, stats_config=None, workers=None, progress=False, figure=True,
                requested=None) -> SampleResult:
    """`run_sample`'s work, writing into ``out_dir`` that the caller has claimed (`outdir.claim_out`)."""
    t0 = time.perf_counter()
    docs, st = _doc_table(inputs, stats_dir, stats_config, workers, progress, requested)
    if config.strategy in ("per-source", "global", "upsample-code-arxiv-book") and config.threshold > max(config.buckets[-1], 1) and len(config.buckets) > 1:
        raise ConfigError(f"threshold {config.threshold} is beyond the last bucket edge {config.buckets[-1]}")
    plan = solve_plan(docs, config)
    stats_fp = st.fingerprint
    manifest = {
        "lcdata_version": VERSION,
        "kind": "lcdata.plan",
        "plan_fingerprint": plan_fingerprint(plan.plan, stats_fp, config),
        "stats_fingerprint": stats_fp,
        "config": config.to_dict(),
        "read": st.config.read.to_dict(),
        "stats_identity": {"chars_per_token": st.config.chars_per_token},
        "length_unit": "tokens" if st.config.tokenizer else f"estimated tokens (chars / {st.config.chars_per_token})",
        "tokenizer": st.tokenizer,
        "engine": st.engine,  # the tokenizer engine that counted the lengths (None: estimated from characters)
        "inputs": [{"url": f.url, "rel": f.rel, "bytes": f.size, "format": f.format, "version": f.version}
                   for f in st.inputs],
        "totals": {"budget_tokens": config.budget_tokens, **copies_stats(plan),
                   "corpus_tokens": int(docs["n_tokens"].sum()), "corpus_docs": docs.height},
        "capped": plan.capped,
        "recipe_warnings": recipe_warnings(plan.recipe, config.budget_tokens),  # the paper's rule weakened
        "read_report": st.read_report,  # what the corpus reading skipped or could not read (`corpus.read_summary`)
        "elapsed_s": round(time.perf_counter() - t0, 3),
        "command": command_line(),
    }
    if out_dir is not None:
        write_plan(plan, manifest, out_dir, figure=figure)
    return SampleResult(plan=plan, manifest=manifest)


def write_plan(plan: Plan, manifest: dict, out_dir: str, figure: bool = True) -> None:
    """Write the plan folder; plan.json last, listing every other file (size + SHA-256)."""
    make_dirs(out_dir)
    names = ["plan.parquet", "report.parquet", "groups.parquet", "report.json"] + (["sample.png"] if figure else [])
    write_parquet(plan.plan, join(out_dir, "plan.parquet"))
    write_parquet(plan.report, join(out_dir, "report.parquet"))
    write_parquet(plan.groups, join(out_dir, "groups.parquet"))
    write_json({**{k: manifest[k] for k in ("plan_fingerprint", "config", "totals", "capped", "recipe_warnings")},
                "report": plan.report.to_dicts(), "groups": plan.groups.to_dicts(),
                "recipe": plan.recipe.to_dicts() if plan.recipe is not None else None}, join(out_dir, "report.json"))
    if figure:
        from ..util.plots import length_figure

        cells = plan.report.filter(pl.col("level") == "bucket")
        png = length_figure(cells, title=f"lcdata sample: {plan.config.strategy}",
                            series={"original_share_in_source": "original", "target_share_in_source": "target",
                                    "achieved_share_in_source": "achieved"})
        write_bytes(png, join(out_dir, "sample.png"))
    write_json({**manifest, "outputs": outputs_record(out_dir, names)}, join(out_dir, "plan.json"))  # last: complete


def load_plan(plan_dir: str) -> tuple[pl.DataFrame, dict]:
    """Read a plan folder: (plan frame, manifest)."""
    import fsspec

    try:
        manifest = read_json(join(plan_dir, "plan.json"))
    except FileNotFoundError:
        raise ConfigError(f"{plan_dir!r} holds no plan.json; run `lcdata sample ... --out {plan_dir}` first") from None
    check_outputs(plan_dir, manifest.get("outputs"), ["plan.parquet"], "plan")
    with fsspec.open(join(plan_dir, "plan.parquet"), "rb") as fh:
        return pl.read_parquet(fh), manifest


def sample_table(res: SampleResult, long_threshold: int = 4096) -> str:
    from ..util.table import render

    rep = res.plan.report
    src = rep.filter(pl.col("level") == "source").with_columns(
        delta=pl.when(pl.col("target_tokens") > 0).then(pl.col("achieved_tokens") / pl.col("target_tokens") - 1)
        .otherwise(None))
    long = (rep.filter((pl.col("level") == "bucket") & (pl.col("bucket_min") >= long_threshold))
            .group_by("source").agg(pl.col("original_share_in_source", "achieved_share_in_source").sum()))
    src = src.join(long, on="source", how="left", suffix="_long")
    cols = [("source", "source", "str"), ("original_share", "orig.share", "pct"), ("target_share", "target", "pct"),
            ("achieved_share", "achieved", "pct"), ("target_tokens", "target tok", "int"),
            ("achieved_tokens", "achieved tok", "int"), ("delta", "delta", "signed_pct"),
            ("original_share_in_source_long", f"orig>={long_threshold}", "pct"),
            ("achieved_share_in_source_long", f"ach>={long_threshold}", "pct"), ("n_docs", "docs", "int"),
            ("n_copies", "copies", "int")]
    t = res.manifest["totals"]
    total = {"source": "total", "original_share": 1.0, "target_share": 1.0, "achieved_share": 1.0,
             "target_tokens": t["budget_tokens"], "achieved_tokens": t["tokens"],
             "delta": t["tokens"] / t["budget_tokens"] - 1, "n_docs": t["n_units"], "n_copies": t["n_copies"]}
    head = (f"strategy {res.plan.config.strategy}, budget {t['budget_tokens']:,} tokens, seed {res.plan.config.seed}: "
            f"{t['n_units']:,} of {t['corpus_docs']:,} documents selected, {t['n_repeated']:,} repeated "
            f"(max {t['max_copies']} copies); lengths in {res.manifest['length_unit']}; source shares: "
            f"{res.plan.config.source_share_origin}")
    lines = [head, render(src, cols, total)]
    rec = res.plan.recipe
    if rec is not None:
        rcols = [("source", "source", "str"), ("requested_short_rate", "short rate asked", "float:3"),
                 ("planned_short_rate", "short rate", "float:3"), ("long_share", "long share", "pct"),
                 ("paper_long_share", "paper L/(L+kS)", "pct"), ("recipe_budget", "recipe holds to", "int")]
        lines += ["", f"length upsampling (short = under {res.plan.config.threshold:,} tokens):", render(rec, rcols)]
    for c in res.plan.capped:
        lines.append(f"CAPPED: {c}")
    return "\n".join(lines)
