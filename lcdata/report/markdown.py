"""`lcdata report`: one Markdown page per pipeline run, assembled from the stages' own output files.

A run folder (the Makefile's ``OUT``) holds ``stats/``, ``plan/``, ``shards/``, ``run/`` (training),
``needle/``, ``eval-loss/``, or the same stages under other names: `find_stages` recognises each folder by
its manifest (`lcdata.util.outdir.folder_kind`). `write_report` reads whichever exist and writes
``report.md`` beside them with the seeds of every stage and the needle scorer, then a section per stage: its
table (read from the stage's parquet/JSON, never recomputed) and its figure (linked by relative path; the
loss curve is drawn here from ``run/log.jsonl`` into ``loss_curve.png``). The page warns (``**Warning:**``
lines) where a plan missed a target by more than its tolerance (`lcdata.report.warnings`, with the
long-document share per source), where every needle cell scores the same and where training repeated its
data. It holds no absolute path (`shown_path`, `scrub_paths`); shares are percentages, as on the terminal.
A missing stage gets a line saying so, not an error, so the page can be written at any point; a folder
that is not a run folder (missing, a file, a URL, or holding none of the stage folders) is refused before
anything is written, and a stage file that cannot be read is an `InputError` naming it. A torn last line of
``run/log.jsonl`` (a training run killed mid-write) is left out, as the trainer's resume does.

`write_ablation_report` does the same for ``make paper-ablation`` (``ABL/<strategy>/seed-K/...``): the
achieved mixture of each strategy, then per source x position bucket the paired difference of held-out loss
to the first strategy with its bootstrap interval over seeds and held-out windows (`lcdata.report.noise`),
a "not significant" mark where the interval contains 0, the unigram baseline's difference beside it, and
needle scores over the seeds.

Pure reading and formatting, no torch: the run's files are the interface.
"""

from __future__ import annotations

import json
import os

import polars as pl

from ..errors import ConfigError, InputError
from ..util.figure import label as bucket_label
from ..util.io import write_bytes
from ..util.jsonlog import read_log
from ..util.outdir import folder_kind
from ..util.table import frame_table
from .warnings import long_shares, target_misses

STAGES = ("stats", "plan", "shards", "run", "needle", "eval-loss")
STAGE_OF_KIND = {"stats": "stats", "plan": "plan", "shards": "shards", "train": "run", "needle": "needle",
                 "eval-loss": "eval-loss"}  # `lcdata.util.outdir.KINDS` -> the stage (and the Makefile's folder name)
_RERUN = "the file is damaged or from another lcdata version: run that stage again"


def _read_json(path: str):
    try:
        with open(path) as fh:
            return json.load(fh)
    except ValueError as e:
        raise InputError(path, "bad_json", f"not valid JSON ({e})", _RERUN) from None


def _read_parquet(path: str) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except pl.exceptions.PolarsError as e:
        raise InputError(path, "bad_parquet", f"not a readable Parquet file ({type(e).__name__})", _RERUN) from None


def _log_records(path: str) -> list[dict]:
    """The training log's records (a torn last line left out; any other bad line is an `InputError`)."""
    return read_log(path)[0]


def check_run_folder(d: str, names: tuple[str, ...] = STAGES) -> None:
    """Refuse ``d`` unless it is a local folder holding at least one of ``names`` (before anything is written)."""
    if "://" in d:
        raise ConfigError(f"{d!r} is a URL; lcdata report reads a local run folder: copy it here first")
    if not os.path.exists(d):
        raise ConfigError(f"{d!r} does not exist; pass the run folder (the Makefile's OUT, holding "
                          f"{', '.join(STAGES)})")
    if not os.path.isdir(d):
        raise ConfigError(f"{d!r} is a file, not a folder; pass the run folder (the Makefile's OUT)")
    if not any(os.path.isdir(os.path.join(d, n)) for n in names) and not (names == STAGES and find_stages(d)):
        raise ConfigError(f"{d!r} holds none of {', '.join(names)} and no folder an lcdata stage wrote: it is not a run "
                          "folder (pass the folder above the stages, the Makefile's OUT, not a stage's own folder)")


def find_stages(d: str) -> dict[str, str]:
    """{stage: its folder, relative to ``d``}: every folder directly in ``d`` that an lcdata command wrote is
    recognised by its manifest (`lcdata.util.outdir.folder_kind`: the ``.lcdata.json`` marker, else the
    completion file), whatever its name. Where several folders are of one kind, the Makefile's name wins
    (``stats``, ``plan``, ``shards``, ``run``, ``needle``, ``eval-loss``), then for shards the folder the
    training run read (its ``run.json``), then a folder that is not the eval-loss's held-out shards, then the
    first by name. A folder with the Makefile's name and no manifest still counts (a run still in progress)."""
    found: dict[str, list[str]] = {}
    for n in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        p = os.path.join(d, n)
        if os.path.isdir(p) and not n.startswith("."):
            kind = folder_kind(p)
            stage = STAGE_OF_KIND.get(kind or "") or (n if n in STAGES else None)
            if stage:
                found.setdefault(stage, []).append(n)
    out = {}
    for stage, names in found.items():
        out[stage] = stage if stage in names else names[0]
    if len(found.get("shards", [])) > 1 and "shards" not in found["shards"]:
        used = _config_path(d, out.get("run"), "run.json", "shards")
        held = _config_path(d, out.get("eval-loss"), "loss.json", "shards")
        names = found["shards"]
        out["shards"] = next((n for n in names if used and os.path.basename(used.rstrip("/")) == n),
                             next((n for n in names if not held or os.path.basename(held.rstrip("/")) != n), names[0]))
    return out


def _config_path(d: str, rel: str | None, name: str, key: str) -> str | None:
    """``config[key]`` of ``d/rel/name`` (a path a stage recorded), or None."""
    if rel is None or not _exists(d, rel, name):
        return None
    try:
        v = _read_json(os.path.join(d, rel, name)).get("config", {}).get(key)
    except (InputError, AttributeError):
        return None
    return v if isinstance(v, str) else None


def shown_path(path, d: str) -> str:
    """A path as report.md shows it: relative to the run folder ``d`` when inside it, else its last part (a
    report holds no absolute path of the machine it was written on). A name that is no path stays."""
    if not isinstance(path, str) or not path:
        return str(path)
    if not os.path.isabs(path) and not os.path.exists(path):
        return path  # a preset name such as `debug`
    a, base = os.path.abspath(path), os.path.abspath(d)
    if a == base or a.startswith(base + os.sep):
        return os.path.relpath(a, base)
    return os.path.basename(a.rstrip(os.sep)) or a


def _exists(*parts: str) -> bool:
    return os.path.exists(os.path.join(*parts))


def _count(v) -> str:
    """``1,536``, or ``?`` for a value the run's files do not record."""
    return f"{v:,}" if isinstance(v, int) else "?"


def md_table(df: pl.DataFrame, floats: int = 4, kinds: dict[str, str] | None = None) -> str:
    """A Markdown table of ``df`` (floats rounded, shares as percentages as on the terminal, nulls as '-'):
    `util.table.frame_table`."""
    return frame_table(df, floats, markdown=True, kinds=kinds)


# -------------------------------------------------------------------------------------- sections


def stats_section(d: str, rel: str = "stats") -> list[str]:
    out = ["## 1. Corpus statistics (`lcdata stats`)", ""]
    if not _exists(d, rel, "sources.parquet"):
        return out + [f"(no {rel}/ folder)", ""]
    src = _read_parquet(os.path.join(d, rel, "sources.parquet"))
    cols = [c for c in ("source", "n_docs", "n_tokens", "token_share", "p50_tokens", "max_tokens", "long_token_share",
                        "est_error") if c in src.columns]
    out += [md_table(src.select(cols), kinds={"est_error": "signed_pct"}), ""]
    if _exists(d, rel, "length_distribution.png"):
        out += [f"![token share by length bucket]({rel}/length_distribution.png)", ""]
    return out


def sample_section(d: str, rel: str = "plan") -> list[str]:
    out = ["## 2. Sample: achieved mixture (`lcdata sample`)", ""]
    path = os.path.join(d, rel, "report.parquet")
    if not os.path.exists(path):
        return out + [f"(no {rel}/ folder)", ""]
    plan = _read_json(os.path.join(d, rel, "plan.json"))
    rep = _read_parquet(path)
    cfg = plan.get("config", {})
    origin = cfg.get("source_share_origin", "input")
    out += [f"Strategy `{cfg.get('strategy')}`, budget {cfg.get('budget_tokens'):,} tokens, seed {cfg.get('seed')}; "
            f"source shares: {'the input' + chr(39) + 's own' if origin == 'input' else '`' + origin + '`'}.", ""]
    src = rep.filter(pl.col("level") == "source").select(
        "source", "original_share", "target_share", "achieved_share", pl.col("target_tokens").round().cast(pl.Int64),
        "achieved_tokens", "n_docs", "n_copies")
    out += [md_table(src), ""]
    thr = cfg.get("threshold", 4096)
    out += [f"Long-document share per source: the share of the source's tokens in documents of at least {thr:,} "
            "tokens, in the corpus, in the target and in the plan (the recipe's key number):", "",
            md_table(long_shares(rep, thr)), ""]
    misses = target_misses(rep, cfg.get("budget_tokens"))
    out += [f"- **Warning:** {m}." for m in misses] + ([""] if misses else [])
    rj = os.path.join(d, rel, "report.json")
    recipe = _read_json(rj).get("recipe") if os.path.exists(rj) else None
    if recipe:
        out += [f"Length upsampling per source: short documents (under {cfg.get('threshold', 4096):,} tokens) kept "
                f"at `short_rate` (requested {cfg.get('short_keep')}), long share achieved vs the paper's "
                "L/(L + short_keep x S), and the largest budget at which the recipe holds:", "",
                md_table(pl.DataFrame(recipe).select("source", "requested_short_rate", "planned_short_rate",
                                                      "achieved_short_rate", "long_share", "paper_long_share",
                                                      "recipe_budget"), 3), ""]  # rates with 3 decimals, as on the terminal
    for w in plan.get("recipe_warnings") or []:
        out += [f"**Warning:** {w}", ""]
    if os.path.exists(os.path.join(d, rel, "sample.png")):
        out += ["![original / target / achieved](" + rel + "/sample.png)", ""]
    return out


def shards_section(d: str, rel: str = "shards", plan_rel: str = "plan") -> list[str]:
    out = ["## 3. Shards (`lcdata build`)", ""]
    if not _exists(d, rel, "manifest.json"):
        return out + [f"(no {rel}/ folder)", ""]
    m = _read_json(os.path.join(d, rel, "manifest.json"))
    c = m.get("config", {})
    t = m.get("totals", m)
    out += [f"{_count(t.get('n_sequences'))} sequences of {_count(c.get('seq_len'))} tokens, packing "
            f"`{c.get('packing')}`, {t.get('n_tokens', 0):,} document tokens, {t.get('padding_tokens', 0):,} padding.", ""]
    per = m.get("per_source") or t.get("per_source") or {}
    if per:
        out += [md_table(pl.DataFrame([{"source": s, "documents": v["documents"], "tokens": v["tokens"]}
                                        for s, v in per.items()])), ""]
        out += planned_vs_shards(d, per, m, plan_rel)
    return out


def planned_vs_shards(d: str, per: dict, m: dict, plan_rel: str = "plan") -> list[str]:
    """The mixture the trainer sees beside the planned one: per source the plan's achieved share (document
    tokens) and the shards' share (tokens in the shards: the build's BOS/EOS included, the dropped tail
    excluded), and the difference in percentage points. Empty without a plan folder."""
    path = os.path.join(d, plan_rel, "report.parquet")
    if not os.path.exists(path):
        return []
    rep = _read_parquet(path).filter(pl.col("level") == "source")
    planned = dict(zip(rep["source"].to_list(), rep["achieved_share"].to_list()))
    total = sum(v["tokens"] for v in per.values()) or 1
    rows = [{"source": s, "planned_share": planned.get(s, 0.0), "shard_share": per.get(s, {}).get("tokens", 0) / total,
             "difference_pp": 100 * (per.get(s, {}).get("tokens", 0) / total - planned.get(s, 0.0))}
            for s in sorted(set(planned) | set(per))]
    sp = m.get("special_tokens") or {}
    added = ", ".join(k.removesuffix("_id").upper() for k in ("bos_id", "eos_id") if sp.get(k) is not None) or "none"
    return ["Planned vs trained mixture: `planned_share` is the plan's (document tokens, as sampled); "
            f"`shard_share` is what the trainer reads: the shards' tokens, with the specials the build adds per "
            f"document ({added}) and without the {m.get('dropped_tokens', 0):,} dropped tokens. A source of short "
            "documents gains share from its specials.", "", md_table(pl.DataFrame(rows), kinds={"difference_pp": "signed:2"}), ""]


def loss_curve(log_path: str, title: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = _log_records(log_path)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot([r["tokens"] for r in recs], [r["loss"] for r in recs], lw=1.2)
    ax.set_xlabel("tokens")
    ax.set_ylabel("training loss (nats)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def train_section(d: str, rel: str = "run") -> list[str]:
    out = ["## 4. Continual pretraining (`lcdata train`)", ""]
    log = os.path.join(d, rel, "log.jsonl")
    if not os.path.exists(log):
        return out + [f"(no {rel}/log.jsonl)", ""]
    run = _read_json(os.path.join(d, rel, "run.json")) if _exists(d, rel, "run.json") else {}
    recs = _log_records(log)
    if not recs:
        return out + [f"({rel}/log.jsonl holds no step yet)", ""]
    first, last = recs[0], recs[-1]
    tps = sorted(r["tokens_per_s"] for r in recs)[len(recs) // 2]
    cfg = run.get("config", {})
    model = shown_path(cfg.get("model"), d)
    data = run.get("data") or {}
    epochs = f", {data['epochs']:.2f} epoch(s) of the shards" if isinstance(data.get("epochs"), (int, float)) else ""
    out += [f"Model `{model}` ({run.get('n_params', 0) / 1e6:.1f}M parameters), sequence length "
            f"{_count(run.get('seq_len'))}, {_count(run.get('batch_tokens'))} tokens per step, {last['step']} steps "
            f"({last['tokens']:,} tokens{epochs}) on {run.get('device')} ({run.get('attention_backend')} attention), "
            f"seed {cfg.get('seed', '?')}.", "",
            md_table(pl.DataFrame({"": ["first step", "last step"], "loss": [first["loss"], last["loss"]]})), "",
            f"Median throughput {tps:,.0f} tokens/s" + (f", MFU {last['mfu']:.1%}" if last.get("mfu") else "") + ".", ""]
    if isinstance(data.get("epochs"), (int, float)) and data["epochs"] > 1:
        out += [f"**Warning:** training repeated its data: {data.get('sequences', 0):,} windows read from "
                f"{data.get('windows', 0):,} per epoch = {data['epochs']:.2f} epochs of the shards (documents seen "
                "more than once); build more shards or train on fewer tokens for one pass.", ""]
    write_bytes(loss_curve(log, f"training loss: {model}"), os.path.join(d, "loss_curve.png"))
    out += ["![loss curve](loss_curve.png)", ""]
    return out


def needle_section(d: str, rel: str = "needle") -> list[str]:
    out = ["## 5. Needle in a haystack (`lcdata needle`)", ""]
    if not _exists(d, rel, "results.json"):
        return out + [f"(no {rel}/ folder)", ""]
    r = _read_json(os.path.join(d, rel, "results.json"))
    cells = pl.DataFrame(r["cells"])
    by_len = cells.group_by("length").agg(pl.col("score").mean()).sort("length")
    scoring = f", scorer `{r['scoring']}`" if r.get("scoring") else ""  # results.json of older runs: not recorded
    name = r.get("name") or shown_path((r.get("config") or {}).get("model"), d)
    seed = (r.get("config") or {}).get("seed")
    line = (f"Run `{name}`: task `{r['task']}`, mode `{r['mode']}`{scoring}"
            + (f", seed {seed}" if seed is not None else "") + f": average score **{r['average_score']:.1f}** over "
            f"{len(cells)} cells")
    if r.get("scoring") == "paper":
        line += " (the paper's formula: a perfect answer scores 91.7 with its needle)"
    if "mean_answer_logprob" in r:
        line += f"; mean answer log-probability {r['mean_answer_logprob']:.3f}, token accuracy {r['mean_token_acc']:.3f}"
    out += [line + ".", "", md_table(by_len, 1), "", f"![needle heatmap]({rel}/heatmap.png)", ""]
    if len(cells) > 1 and cells["score"].n_unique() == 1:
        out += [f"**Warning:** every needle cell scores {cells['score'][0]:.1f}: the score cannot tell lengths or "
                "depths apart at this model size or training length; compare the answer log-probabilities "
                "(`--mode teacher-forced`, or the log-probability heatmap) instead.", ""]
    if r.get("logprob_heatmap"):  # every cell scored the same: the answer's log-probability still ranks the cells
        out += ["Every cell has the same score, so the answer's mean log-probability per cell is shown too:", "",
                f"![needle answer log-probability]({rel}/{r['logprob_heatmap']})", ""]
    return out


def eval_loss_section(d: str, rel: str = "eval-loss") -> list[str]:
    out = ["## 6. Validation loss by source and position (`lcdata eval-loss`)", ""]
    if not _exists(d, rel, "loss.parquet"):
        return out + [f"(no {rel}/ folder)", ""]
    losses = _read_parquet(os.path.join(d, rel, "loss.parquet"))
    out += [_position_line(os.path.join(d, rel)), "", md_table(pivot_losses(losses)), ""]
    if _exists(d, rel, "compare.parquet"):
        cmp = _read_parquet(os.path.join(d, rel, "compare.parquet"))
        out += [f"Difference to the first model (`*`: |delta| > {_threshold(os.path.join(d, rel))}):", "",
                md_table(pivot_deltas(cmp)), ""]
    return out


def settings_section(d: str, stages: dict[str, str]) -> list[str]:
    """The seeds of every stage and the needle scorer, from the stages' own files (a stage not run: absent)."""
    rows = []

    def cfg_of(stage: str, name: str) -> dict | None:
        rel = stages.get(stage)
        if rel is None or not _exists(d, rel, name):
            return None
        doc = _read_json(os.path.join(d, rel, name))
        return doc if isinstance(doc, dict) else None

    if (p := cfg_of("plan", "plan.json")) is not None:
        rows.append({"stage": "sample", "seed": (p.get("config") or {}).get("seed"), "what it drives":
                     "which documents and copies are drawn"})
    if (m := cfg_of("shards", "manifest.json")) is not None:
        rows.append({"stage": "build", "seed": m.get("seed", (m.get("config") or {}).get("seed")),
                     "what it drives": "document order and sequence permutation"})
    if (r := cfg_of("run", "run.json")) is not None:
        rows.append({"stage": "train", "seed": (r.get("config") or {}).get("seed"),
                     "what it drives": "initialisation and data order"})
    scorer = None
    if (n := cfg_of("needle", "results.json")) is not None:
        rows.append({"stage": "needle", "seed": (n.get("config") or {}).get("seed"),
                     "what it drives": "needle placement and haystack"})
        scorer = n.get("scoring")
    if not rows:
        return []
    out = ["## Seeds and scorer", "", md_table(pl.DataFrame(rows, schema={"stage": pl.String, "seed": pl.Int64,
                                                                        "what it drives": pl.String})), ""]
    if scorer:
        out += [f"Needle scorer: `{scorer}` (docs/eval.md).", ""]
    return out


def _position_line(folder: str) -> str:
    """Which position the buckets count (`lcdata eval-loss --position`), from loss.json; a loss.json that does
    not record one predates the option, when every position was the document's."""
    doc = _read_json(os.path.join(folder, "loss.json")) if os.path.exists(os.path.join(folder, "loss.json")) else {}
    doc = doc if isinstance(doc, dict) else {}
    pos, means = doc.get("position", "document"), doc.get("position_means", "a token's offset in its own document")
    return f"Position = `{pos}`: {means} (`lcdata eval-loss --position`, docs/eval.md)."


def _threshold(folder: str) -> float:
    """The |delta| threshold the eval-loss run flagged with (0.01, the paper's, if not recorded)."""
    try:
        return float(_read_json(os.path.join(folder, "loss.json"))["config"]["threshold"])
    except (OSError, KeyError, ValueError, TypeError):
        return 0.01


def pivot_losses(losses: pl.DataFrame) -> pl.DataFrame:
    """One row per (model, source), one column per position bucket."""
    f = losses.with_columns(bucket=pl.struct("bucket_min", "bucket_max").map_elements(
        lambda s: bucket_label(s["bucket_min"], s["bucket_max"]), return_dtype=pl.Utf8))
    order = f.select("bucket").unique(maintain_order=True)["bucket"].to_list()
    p = f.pivot(on="bucket", index=["model", "source"], values="loss", aggregate_function="first")
    return p.select("model", "source", *order)


def pivot_deltas(cmp: pl.DataFrame) -> pl.DataFrame:
    f = cmp.with_columns(
        bucket=pl.struct("bucket_min", "bucket_max").map_elements(lambda s: bucket_label(s["bucket_min"], s["bucket_max"]),
                                                                  return_dtype=pl.Utf8),
        cell=pl.when(pl.col("delta").is_null()).then(pl.lit("-")).otherwise(
            pl.format("{}{}", pl.col("delta").round(4), pl.when(pl.col("flag")).then(pl.lit(" *")).otherwise(pl.lit("")))))
    order = f.select("bucket").unique(maintain_order=True)["bucket"].to_list()
    p = f.pivot(on="bucket", index=["model", "source"], values="cell", aggregate_function="first")
    return p.select("model", "source", *order)


# ------------------------------------------------------------------------------------------ pages


def _section(section, d: str, stage: str) -> list[str]:
    """``section(d)``; a stage file lacking a key or column the report reads is an `InputError` naming the stage."""
    try:
        return section(d)
    except (KeyError, TypeError, IndexError, pl.exceptions.PolarsError) as e:
        raise InputError(os.path.join(d, stage), "bad_stage", f"a file lacks what the report reads "
                         f"({type(e).__name__}: {e})", _RERUN) from None


def write_report(d: str, name: str | None = None) -> str:
    """Write ``d/report.md`` from the stage folders in ``d`` (found by their manifests, `find_stages`); the page
    is titled ``name`` (default: the folder's name) and holds no absolute path. Returns its path."""
    check_run_folder(d)
    stages = find_stages(d)
    title = name or os.path.basename(os.path.abspath(d).rstrip(os.sep))
    lines = [f"# lcdata report: `{title}`", "",
             "Stages: stats -> sample -> build -> train -> needle + eval-loss (Fu et al. 2024, per-source length "
             "upsampling). Every number below is read from the stage's own output files in this folder"
             + (": " + ", ".join(f"{s} `{r}/`" for s, r in stages.items() if r != s) if any(
                 r != s for s, r in stages.items()) else "") + ".", ""]
    lines += settings_section(d, stages)
    for section, stage in ((stats_section, "stats"), (sample_section, "plan"), (shards_section, "shards"),
                           (train_section, "run"), (needle_section, "needle"), (eval_loss_section, "eval-loss")):
        rel = stages.get(stage, stage)
        if section is shards_section:
            lines += _section(lambda d, rel=rel: shards_section(d, rel, stages.get("plan", "plan")), d, rel)
        else:
            lines += _section(lambda d, section=section, rel=rel: section(d, rel), d, rel)
    path = os.path.join(d, "report.md")
    write_bytes(scrub_paths("\n".join(lines), d).encode(), path)
    return path


def scrub_paths(text: str, d: str) -> str:
    """``text`` with the run folder's absolute path (as given and resolved) made relative: a report carries
    no path of the machine it was written on."""
    for base in {os.path.realpath(d), os.path.abspath(d)}:
        text = text.replace(base + os.sep, "").replace(base, ".")
    return text


def ablation_seeds(d: str, strategies: list[str]) -> list[int | None]:
    """The seeds of an ablation folder: ``seed-K`` folders present under every strategy (sorted); ``[None]``
    for the one-seed layout ``ABL/<strategy>/{plan,...}`` of earlier lcdata versions."""
    found = None
    for s in strategies:
        p = os.path.join(d, s)
        ks = {int(n[5:]) for n in (os.listdir(p) if os.path.isdir(p) else [])
              if n.startswith("seed-") and n[5:].isdigit()}
        found = ks if found is None else found & ks
    return sorted(found) if found else [None]


def _fmt(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:+.{digits}f}"


def _ci(lo, hi) -> str:
    return "-" if lo is None else f"[{lo:+.4f}, {hi:+.4f}]"


def _verdict(r: dict) -> str:
    if r["significant"] is None:
        return "-"
    if not r["significant"]:
        return "not significant"
    uni = r.get("unigram_significant")
    same = uni and r["unigram_delta"] is not None and (r["unigram_delta"] > 0) == (r["delta"] > 0)
    return "significant, as the unigram's" if same else "significant"


def ablation_loss_section(d: str, strategies: list[str], seeds: list[int | None]) -> list[str]:
    """Paired per-source x position differences to the first strategy with bootstrap intervals
    (`lcdata.report.noise`), the unigram baseline beside them, and a summary that claims only what the
    intervals support."""
    from .noise import LEVEL, N_BOOT, ablation_differences

    folder = os.path.join(d, "eval-loss")
    up = os.path.join(folder, "units.parquet")
    if not os.path.exists(up):
        lp = os.path.join(folder, "loss.parquet")
        if not os.path.exists(lp):
            return ["(no eval-loss/ folder)", ""]
        return ["eval-loss/ has no units.parquet (written by an older lcdata): no intervals can be computed; "
                "re-run the eval-loss stage. Mean losses:", "", md_table(pivot_losses(_read_parquet(lp))), ""]
    units = _read_parquet(up)
    diff = ablation_differences(units, strategies, seeds)
    buckets = _read_parquet(os.path.join(folder, "loss.parquet")).select("bucket_min", "bucket_max").unique(
        maintain_order=True)
    names = {r["bucket_min"]: bucket_label(r["bucket_min"], r["bucket_max"]) for r in buckets.iter_rows(named=True)}
    k = len(seeds)
    one = seeds == [None] or k == 1
    lines = [_position_line(folder),
             f"Difference of mean held-out loss (nats) to `{strategies[0]}`, per source and position bucket: the "
             f"mean over {k} seed{'s' if k > 1 else ''} of the paired per-seed differences, with a {LEVEL:.0%} "
             f"bootstrap interval ({N_BOOT:,} replicates resampling "
             f"{'the held-out windows' if one else 'seeds and held-out windows'}; `lcdata.report.noise`). "
             "A cell whose interval contains 0 is **not significant**. `unigram`: the same difference between "
             "unigram models of the two runs' training shards (token frequencies only, no context): where the "
             "model's difference has the unigram's sign and size, it is a token-frequency shift, not the use of a "
             "long context.", ""]
    if one:
        lines += ["**One seed**: the intervals carry held-out sampling noise only, not the run-to-run noise of "
                  "another seed (which can flip a sign at this scale); run with `ABL_SEEDS=\"0 1 2\"` before "
                  "drawing a conclusion.", ""]
    rows = []
    for r in diff.iter_rows(named=True):
        rows.append({"strategy": r["strategy"], "source": r["source"], "position": names.get(r["bucket_min"], "?"),
                     "tokens": r["n_tokens"], "delta": _fmt(r["delta"]), "95% CI": _ci(r["lo"], r["hi"]),
                     "per seed": " ".join(_fmt(v, 3) for v in (r["per_seed"] or [])),
                     "unigram delta": _fmt(r["unigram_delta"]), "unigram 95% CI": _ci(r["unigram_lo"], r["unigram_hi"]),
                     "verdict": _verdict(r)})
    if rows:
        lines += [md_table(pl.DataFrame(rows)), ""]
    sig = [r for r in diff.iter_rows(named=True) if r["significant"]]
    as_uni = [r for r in sig if _verdict(r) == "significant, as the unigram's"]
    cells = diff.filter(pl.col("significant").is_not_null())
    lines += [f"Summary: {len(sig)} of {len(cells)} cells differ significantly from `{strategies[0]}`"
              + (f"; in {len(as_uni)} of those the unigram models also differ significantly in the same direction "
                 "(a token-frequency shift can explain those)" if any(r["unigram_delta"] is not None for r in sig)
                 else "")
              + ". Conclusions about long-context ability need significant long-position differences that the "
                "unigram baseline does not share.", ""]
    return lines


def write_ablation_report(d: str, strategies: list[str], seeds: list[int | None] | None = None) -> str:
    """``d/report.md`` for ``make paper-ablation``: the strategies side by side, over their seeds
    (``d/<strategy>/seed-K/...``; found by `ablation_seeds` unless given)."""
    check_run_folder(d, (*strategies, "eval-loss"))
    seeds = list(seeds) if seeds else ablation_seeds(d, strategies)

    def rel(s, k, *parts):
        return os.path.join(s, *(() if k is None else (f"seed-{k}",)), *parts)

    lines = [f"# lcdata paper ablation: `{os.path.basename(os.path.abspath(d))}`", "",
             "The same base model continues training on each mixture at the same token budget (Fu et al. 2024, "
             "\"The mixtures compared\"); held-out loss per source at short vs long positions, and needle scores.",
             "", f"Seeds: {', '.join('-' if k is None else str(k) for k in seeds)} (each seed: its own sample, "
             "packing and data order; the base model is shared). Baseline: `" + strategies[0] + "`.", ""]
    rows, long_rows = [], []
    for s in strategies:
        for k in seeds:
            p = os.path.join(d, rel(s, k, "plan", "report.parquet"))
            if os.path.exists(p):
                rep = _read_parquet(p)
                rows += [{"strategy": s, "seed": k, "source": r["source"], "achieved_share": r["achieved_share"]}
                         for r in rep.filter(pl.col("level") == "source").iter_rows(named=True)]
                b = rep.filter(pl.col("level") == "bucket")
                long_rows.append({"strategy": s, "seed": k, "long": b.filter(pl.col("bucket_min") >= 4096)[
                    "achieved_tokens"].sum() / max(1, b["achieved_tokens"].sum())})
    lines += ["## Achieved mixture (token share per source, mean over seeds)", ""]
    if rows:
        mix = (pl.DataFrame(rows).group_by("strategy", "source", maintain_order=True).agg(pl.col("achieved_share").mean())
               .pivot(on="strategy", index="source", values="achieved_share"))
        lines += [md_table(mix.select("source", *[s for s in strategies if s in mix.columns]),
                           kinds={s: "pct" for s in strategies}), ""]
    if long_rows:
        lr = (pl.DataFrame(long_rows).group_by("strategy", maintain_order=True)
              .agg(pl.col("long").mean().alias("share of tokens in documents >= 4K (mean)"),
                   pl.col("long").min().alias("min"), pl.col("long").max().alias("max")))
        lines += [md_table(lr, kinds={"min": "pct", "max": "pct"}), ""]
    lines += ["## Held-out loss by source and position", ""]
    lines += ablation_loss_section(d, strategies, seeds)
    lines += ["## Needle in a haystack", ""]
    nrows = []
    for s in strategies:
        for k in seeds:
            p = os.path.join(d, rel(s, k, "needle", "results.json"))
            if os.path.exists(p):
                r = _read_json(p)
                nrows.append({"strategy": s, "seed": k, "task": r["task"], "mode": r["mode"],
                              "scorer": r.get("scoring", "-"), "average score": r["average_score"],
                              "answer log-prob": r.get("mean_answer_logprob"), "token accuracy": r.get("mean_token_acc")})
    if nrows:
        nf = pl.DataFrame(nrows)
        lines += ["Per strategy: the mean over seeds, and the lowest and highest seed.", "",
                  md_table(nf.group_by("strategy", "task", "mode", "scorer", maintain_order=True).agg(
                      pl.col("average score").mean().alias("score (mean)"),
                      pl.col("average score").min().alias("score min"), pl.col("average score").max().alias("score max"),
                      pl.col("answer log-prob").mean().alias("answer log-prob (mean)"),
                      pl.col("answer log-prob").min().alias("log-prob min"),
                      pl.col("answer log-prob").max().alias("log-prob max")), 3), ""]
        if nf["average score"].n_unique() == 1:
            lines += [f"Every run scores {nf['average score'][0]} on every cell average: the score cannot rank the "
                      "mixtures at this size; compare the answer log-probabilities (teacher-forced).", ""]
        lines += [f"![{s} seed {k}]({rel(s, k, 'needle', 'heatmap.png')})" for s in strategies for k in seeds
                  if _exists(d, rel(s, k, "needle", "heatmap.png"))]
        lines.append("")
    lines += ["## Training", ""]
    trows = []
    for s, k in [("base", None)] + [(s, k) for s in strategies for k in seeds]:
        log = os.path.join(d, rel(s, k, "run", "log.jsonl"))
        if os.path.exists(log):
            recs = _log_records(log)
            if not recs:
                continue
            trows.append({"run": s, "seed": k, "steps": recs[-1]["step"], "tokens": recs[-1]["tokens"],
                          "first loss": recs[0]["loss"], "last loss": recs[-1]["loss"]})
    if trows:
        lines += [md_table(pl.DataFrame(trows)), ""]
    path = os.path.join(d, "report.md")
    write_bytes(scrub_paths("\n".join(lines), d).encode(), path)
    return path
