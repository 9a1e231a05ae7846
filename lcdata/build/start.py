"""The start of `lcdata build`, shared by the local run and the scale-out driver (`prepare_build`): token dtype,
special tokens, engine (resolved once), the plan (checked against the inputs and the tokenizer), the build's
identity, the claim of ``--out`` (`util.outdir`; ``--resume`` needs the same identity), ``build.json`` and the
work folder. Everything that can refuse a build does so here, before any tokenization.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import fsspec
import polars as pl

from ..corpus.config import ReadConfig
from ..corpus.inputs import InputFile, resolve_inputs
from ..errors import ConfigError
from ..sample.run import load_plan
from ..shards.format import FORMAT_VERSION, choose_token_dtype
from ..stats.config import StatsConfig
from ..stats.run import fingerprint as stats_fingerprint
from ..tokenizer.hf import (
    Specials,
    TokenizerInfo,
    load_tokenizer,
    resolve_engine,
    resolve_specials,
    tokenizer_info,
)
from ..util.io import exists, is_local, join, read_json, write_json
from ..util.outdir import Claim, claim_out, input_roots
from .config import BuildConfig


def build_identity(files: list[InputFile], cfg: BuildConfig, tok_sha: str, plan_fp: str | None) -> str:
    ident = {"format": FORMAT_VERSION, "files": sorted((f.rel, f.size, f.version) for f in files), "tokenizer": tok_sha,
             "plan": plan_fp, **{k: v for k, v in cfg.to_dict().items() if k not in ("tokenizer", "plan", "engine")}}
    ident["read"].pop("on_error", None)
    ident["read"].pop("chunk_bytes", None)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class BuildResult:
    out_dir: str
    manifest: dict


def load_plan_for(files: list[InputFile], cfg: BuildConfig, tok_sha: str) -> tuple[pl.DataFrame, dict, ReadConfig]:
    """(plan frame, plan manifest, the plan's read config) of ``cfg.plan``, checked against the inputs (the
    stats fingerprint) and the tokenizer (its SHA-256, when the plan was measured in tokens)."""
    plan, man = load_plan(cfg.plan)
    read = ReadConfig(**man["read"])
    ident = man.get("stats_identity", {})
    scfg = StatsConfig(chars_per_token=ident.get("chars_per_token", 3.68), read=read)
    plan_tok = (man.get("tokenizer") or {}).get("sha256")
    if stats_fingerprint(files, scfg, plan_tok) != man["stats_fingerprint"]:
        raise ConfigError(
            f"the plan in {cfg.plan!r} was made for other inputs (fingerprint {man['stats_fingerprint']}); "
            "pass the inputs the plan was sampled from, or rerun `lcdata sample` on these"
        )
    if plan_tok is not None and plan_tok != tok_sha:
        raise ConfigError(
            f"the plan in {cfg.plan!r} was made with tokenizer {man['tokenizer'].get('path')} (sha {plan_tok[:12]}), "
            f"not {cfg.tokenizer!r}; its lengths and cuts are in other tokens: rerun stats and sample with this tokenizer"
        )
    return plan, man, read


def build_protect(inputs, files: list[InputFile], cfg: BuildConfig) -> dict:
    """What a build reads, which its ``--out`` may never be or contain (`outdir.claim_out`)."""
    return {"an input": [*map(str, inputs), *(f.url for f in files)], "the tokenizer": [cfg.tokenizer],
            "the plan folder": [cfg.plan] if cfg.plan else []}


def prepare_out(claim: Claim, ident: str) -> None:
    """A claimed build folder that keeps an earlier run's files (``--resume``) must hold the same build;
    the temp files of writes the interrupted run never finished are removed."""
    if claim.fresh:
        return
    out_dir = claim.out
    state = join(out_dir, "build.json")
    old = read_json(state)["identity"] if exists(state) else None
    if old != ident:
        raise ConfigError(
            f"{out_dir!r} holds {'a build with another configuration' if old else 'a build that never started'} "
            f"(identity {old} != {ident}); --resume needs the same inputs (names, sizes and modification times), "
            "plan, tokenizer and options; pass --overwrite to replace it"
        )
    fs, p = fsspec.core.url_to_fs(out_dir)
    for q in fs.ls(p, detail=False):  # temp files of writes the interrupted run never finished
        if ".tmp-" in q.rsplit("/", 1)[-1]:
            fs.rm(q)


@dataclass(frozen=True)
class PreparedBuild:
    """Everything a build decides before its work, once (`prepare_build`); the local run (`run_build`) and
    the scale-out stages (`lcdata.scaleout.build`) both start from it. Pickled to scale-out tasks without
    ``plan`` (each task reads its own files' plan rows)."""

    files: tuple[InputFile, ...]
    active: tuple[int, ...]  # indices of the files with work (rows in the plan, or all)
    cfg: BuildConfig  # with the plan's read config
    out_dir: str
    work_dir: str
    tokenizer: TokenizerInfo
    specials: Specials
    dtype: str  # NumPy dtype string of the tokens
    engine: tuple[str, str]  # (engine name, why): resolved once, recorded in the manifest
    plan: pl.DataFrame | None  # the plan's rows (None without a plan, or in a scale-out task)
    plan_fp: str | None
    plan_tokens: bool  # the plan's lengths are in this tokenizer's tokens (checked per document)
    ident: str
    own_work: bool  # the work folder is lcdata's (OUT/_work or a temp folder), not one the caller named
    keep_work: bool
    t0: float  # time.time() at the start

    def plan_rows(self, plan: pl.DataFrame, rel: str) -> pl.DataFrame:
        """The rows of ``plan`` for input file ``rel``, as `tokenize_file` takes them."""
        return plan.filter(pl.col("file") == rel).select(
            "row", "chunk", "token_start", "token_end", "copies",
            plan_tokens=pl.col("n_tokens") if self.plan_tokens else pl.lit(None, pl.Int64))

    def tokenize_args(self, i: int, plan_rows: pl.DataFrame | None) -> tuple:
        """The argument of `tokenize_file` for input file ``i``."""
        return (i, self.files[i], self.cfg, plan_rows, self.work_dir, self.specials, self.dtype, self.engine[0])


@contextmanager
def prepare_build(inputs, out_dir: str, cfg: BuildConfig, *, overwrite: bool = False, resume: bool = False,
                  work_dir: str | None = None, keep_work: bool = False,
                  remote_work: bool = True) -> Iterator[PreparedBuild]:
    """The start of every build, in one place: resolve the inputs, the tokenizer (dtype, special tokens,
    engine: resolved once), load and check the plan, compute the identity, then claim ``out_dir``
    (`outdir.claim_out`: refusals, ``overwrite`` / ``resume`` with the same identity), write ``build.json``
    and make the work folder. The claim (and its lock) is held while the block runs.

    ``work_dir``: default ``OUT/_work`` for a local ``out_dir``; for a remote one a local temp folder if
    ``remote_work``, else a `ConfigError` (scale-out tasks on other machines need a shared work folder).

    >>> with prepare_build(["data/demo"], "out/shards", BuildConfig(tokenizer="data/demo/tokenizer.json",
    ...                    seq_len=8192)) as job:  # doctest: +SKIP
    ...     print(job.ident, len(job.active))
    """
    t0 = time.time()
    files = resolve_inputs(inputs)
    info = tokenizer_info(cfg.tokenizer)
    dtype = choose_token_dtype(info.max_id, cfg.dtype)
    specials = resolve_specials(load_tokenizer(cfg.tokenizer), cfg.bos, cfg.eos)
    engine = resolve_engine(cfg.tokenizer, cfg.engine)  # fails here, before any work, if forced and impossible
    plan = plan_fp = None
    plan_tokens = False
    if cfg.plan:
        plan, plan_man, read = load_plan_for(files, cfg, info.sha256)
        if read != cfg.read:
            object.__setattr__(cfg, "read", read)  # the plan's ids depend on how it read the corpus
        missing = set(plan["file"].unique().to_list()) - {f.rel for f in files}
        if missing:
            raise ConfigError(f"the plan names files not among the inputs: {sorted(missing)[:5]}")
        plan_tokens, plan_fp = bool(plan_man.get("tokenizer")), plan_man["plan_fingerprint"]
        if plan_tokens and cfg.packing == "concat":  # exact lengths: check now
            extra = (specials.bos is not None) + (specials.eos is not None)
            planned = int((plan["length"] * plan["copies"]).sum()) + extra * int(plan["copies"].sum())
            if planned < cfg.seq_len:
                raise ConfigError(f"the corpus (as planned) has {planned} tokens, less than one sequence of "
                                  f"seq_len={cfg.seq_len}; lower --seq-len or sample a larger --budget-tokens")
    if work_dir is None and not is_local(out_dir) and not remote_work:
        raise ConfigError(f"--out {out_dir!r} is remote: give a work folder on a filesystem every task "
                          "shares (work_dir=..., e.g. on the cluster's shared disk)")
    ident = build_identity(files, cfg, info.sha256, plan_fp)
    planned_files = set(plan["file"].unique().to_list()) if plan is not None else None
    active = tuple(i for i, f in enumerate(files) if planned_files is None or f.rel in planned_files)
    with claim_out(out_dir, "shards", overwrite=overwrite, resume=resume, protect=build_protect(inputs, files, cfg),
                   inputs=input_roots(inputs)) as claim:
        prepare_out(claim, ident)
        write_json({"identity": ident, "config": cfg.to_dict()}, join(out_dir, "build.json"))
        own_work = work_dir is None
        if work_dir is None:
            work_dir = (join(out_dir.removeprefix("file://"), "_work") if is_local(out_dir)
                        else tempfile.mkdtemp(prefix="lcdata-work-"))
        os.makedirs(work_dir, exist_ok=True)
        yield PreparedBuild(files=tuple(files), active=active, cfg=cfg, out_dir=out_dir, work_dir=work_dir,
                            tokenizer=info, specials=specials, dtype=dtype.str, engine=engine, plan=plan,
                            plan_fp=plan_fp, plan_tokens=plan_tokens, ident=ident, own_work=own_work, keep_work=keep_work,
                            t0=t0)
