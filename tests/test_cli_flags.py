"""The command line's vocabulary (issue 17, "The command line"): one flag name per idea across the ten commands,
old spellings still parsing, every flag's help with its default and unit, the top-level help listing every
command, the scale-out flags in their own group, one count/size parser, and the terminal saying which tokenizer
engine ran and where the outputs went. Parsers are built and read (no command runs) except in the last test.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from lcdata.cli import COMMANDS, build_parser, main
from lcdata.errors import ConfigError
from lcdata.scaleout.executors import SCALE_OUT_GROUP
from lcdata.util.config import parse_buckets, parse_count, parse_size
from lcdata.util.flags import RENAMED, HelpFormatter

ROOT = Path(__file__).resolve().parents[1]
TEN = ("stats", "sample", "build", "verify", "inspect", "export", "train", "needle", "eval-loss", "report")
TRAIN_ONLY = ("export-hf",)  # `python -m lcdata_train export-hf`: a sharded checkpoint -> HF safetensors
SCALE_OUT = {"--executor", "--wait", "--tasks", "--executor-workers", "--partition", "--time", "--logging-dir", "--cpus-per-task",
             "--mem-per-cpu-gb", "--job-name", "--qos", "--env-command"}
# one flag name used by two commands with different choices, because the idea is the same but its values are not:
# where the BOS token goes (build: at each document, or a given token; needle: in the prompt)
SAME_IDEA_OTHER_CHOICES = {"--bos"}
# the minimal arguments each command needs to parse
REQUIRED = {"stats": ["IN", "--out", "O"], "sample": ["--strategy", "natural", "--budget-tokens", "1K", "--out", "O"],
            "build": ["IN", "--tokenizer", "T", "--seq-len", "8", "--out", "O"], "verify": ["F"], "inspect": ["F"],
            "export": ["F", "--format", "datatrove", "--out", "O"], "report": ["D"],
            "train": ["--shards", "S", "--out", "O"], "needle": ["--model", "M", "--out", "O"],
            "eval-loss": ["--model", "M", "--shards", "S"], "export-hf": ["--checkpoint", "C", "--out", "O"]}


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every command's own parser: lcdata's data commands and lcdata_train's three (which `lcdata` dispatches to)."""
    from lcdata_train.cli import build_parser as train_parser

    data = {k: v for k, v in _subparsers(build_parser()).items() if k not in ("train", "needle", "eval-loss")}
    return {**data, **_subparsers(train_parser())}


def _options(p: argparse.ArgumentParser, hidden: bool = False):
    for a in p._actions:
        if a.option_strings and a.dest != "help" and (hidden or a.help != argparse.SUPPRESS):
            yield a


def _kind(a: argparse.Action) -> tuple:
    """What a flag means to the parser: where it goes, how its value is read (the unit for count flags) and
    whether it takes one."""
    return a.dest, getattr(a.type, "__name__", None), a.nargs == 0


def test_every_command_has_a_parser():
    assert sorted(_commands()) == sorted(TEN + TRAIN_ONLY)


def test_no_flag_name_has_two_meanings_across_commands():
    seen: dict[str, dict[str, argparse.Action]] = {}
    for cmd, p in _commands().items():
        for a in _options(p):
            for s in a.option_strings:
                seen.setdefault(s, {})[cmd] = a
    shared = {s: by for s, by in seen.items() if len(by) > 1}
    assert {"--workers", "--seq-len", "--long-threshold", "--dtype", "--out", "--seed", "--tokenizer"} <= set(shared)
    for s, by in shared.items():
        kinds = {cmd: _kind(a) for cmd, a in by.items()}
        assert len(set(kinds.values())) == 1, (s, kinds)
        if s not in SAME_IDEA_OTHER_CHOICES:
            choices = {cmd: tuple(a.choices) if a.choices else None for cmd, a in by.items()}
            assert len(set(choices.values())) == 1, (s, choices)
    # the clashes issue 17 found are gone: tokens vs a loss difference, token type vs compute precision
    assert seen["--long-threshold"].keys() == {"stats", "sample"}
    assert "--threshold" not in seen and "--num-workers" not in seen
    assert seen["--token-dtype"].keys() == {"build"}
    assert seen["--dtype"].keys() == {"train", "needle", "eval-loss"}
    assert seen["--workers"].keys() == {"stats", "sample", "build", "train"}
    assert seen["--delta-threshold"]["eval-loss"].type is float


@pytest.mark.parametrize("cmd,old,new,value,expect", [
    ("sample", "--threshold", "--long-threshold", "2Ki", 2048),
    ("build", "--dtype", "--token-dtype", "uint32", "uint32"),
    ("train", "--num-workers", "--workers", "3", 3),
    ("eval-loss", "--threshold", "--delta-threshold", "0.05", 0.05),
    ("eval-loss", "--labels", "--name", "m", ["m"])])
def test_old_spellings_still_parse_hidden_with_a_note(capsys, cmd, old, new, value, expect):
    assert RENAMED[cmd][old] == new
    p = _commands()[cmd]
    dest = next(a.dest for a in _options(p) if new in a.option_strings)
    a_old = p.parse_args(REQUIRED[cmd] + [old, value])
    assert getattr(a_old, dest) == expect == getattr(p.parse_args(REQUIRED[cmd] + [new, value]), dest)
    err = capsys.readouterr().err
    assert f"{old} is now {new}" in err and err.count("is now") == 1  # the note: old spelling only
    assert f"{old} " not in p.format_help().replace(new, "")  # hidden from --help


def test_every_renamed_flag_is_listed_and_hidden():
    cmds = _commands()
    for cmd, renames in RENAMED.items():
        for old, new in renames.items():
            hidden = [a for a in _options(cmds[cmd], hidden=True) if old in a.option_strings]
            visible = [a for a in _options(cmds[cmd]) if new in a.option_strings]
            assert len(hidden) == 1 and hidden[0].help == argparse.SUPPRESS and len(visible) == 1
            assert hidden[0].dest == visible[0].dest


def test_every_flag_has_help_with_its_default_and_unit():
    for cmd, p in _commands().items():
        fmt = HelpFormatter(prog=p.prog)
        for a in _options(p):
            text = fmt._expand_help(a)
            assert text.strip(), f"{cmd} {a.option_strings[0]} has no help"
            d = a.default
            if d is not None and d is not False and d not in ((), []):
                assert f"default: {d}" in text, f"{cmd} {a.option_strings[0]}: {text!r} does not show {d!r}"
            elif a.nargs != 0 and not a.required and cmd != "report":
                assert "default" in text.lower() or "required" in text, f"{cmd} {a.option_strings[0]}: {text!r}: default?"
            if getattr(a.type, "__name__", "").startswith("count of"):  # a count flag: its unit (and suffixes)
                unit = a.type.__name__.removeprefix("count of ")
                assert unit in text, (cmd, a.option_strings[0], text)
                if unit in ("tokens", "characters", "sequences") and "micro" not in a.dest:
                    assert "Ki" in text and "10^3" in text, (cmd, a.option_strings[0], text)
        # the positional arguments too
        for a in p._actions:
            if not a.option_strings:
                assert (a.help or "").strip(), f"{cmd} {a.dest} has no help"


def test_help_prints_count_defaults_with_their_unit():
    b = _commands()["build"]
    assert "(default: 64Mi)" in " ".join(b.format_help().split())
    assert b.parse_args(REQUIRED["build"]).shard_size == 64 * 2**20


def test_top_level_help_lists_every_command_on_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert [c for c, _ in COMMANDS] == list(TEN)
    for name, line in COMMANDS:
        assert "\n" not in line and f"{name} {line}" in out, name
    assert "Ten commands" in out
    top = build_parser()
    assert sorted(_subparsers(top)) == sorted(TEN)


def test_scale_out_flags_sit_in_their_own_group():
    for cmd in ("stats", "sample", "build"):
        p = _commands()[cmd]
        groups = [g for g in p._action_groups if g.title.startswith("scale-out")]
        assert len(groups) == 1 and groups[0].title == SCALE_OUT_GROUP
        inside = {s for a in groups[0]._group_actions for s in a.option_strings}
        assert inside == SCALE_OUT, cmd
        elsewhere = {s for g in p._action_groups if g is not groups[0] for a in g._group_actions
                     for s in a.option_strings}
        assert not inside & elsewhere and "--workers" in elsewhere
        assert re.search(r"^scale-out \(Slurm, Ray", p.format_help(), re.M)


# ---------------------------------------------------------------------------------------------- counts and sizes

def test_one_count_parser_decimal_and_binary():
    assert parse_size("64M") == (64_000_000, True)
    assert parse_size("64Mi") == parse_size("64MiB") == parse_size("64mib") == (64 * 2**20, True)
    assert parse_size("4K")[0] == 4000 and parse_size("4Ki")[0] == 4096 and parse_size("1Gi")[0] == 2**30
    assert parse_size("5B")[0] == parse_size("5G")[0] == 5 * 10**9 and parse_size("2T")[0] == 2 * 10**12
    assert parse_size("1.5K")[0] == 1500 and parse_size("1e6") == (10**6, True) and parse_size("4,096") == (4096, False)
    assert parse_count("4Mi") == (4 * 2**20, True)  # the training's --batch-tokens / --tokens read it too
    with pytest.raises(ConfigError, match="ambiguous: write 64M .* or 64Mi"):
        parse_size("64MB")
    with pytest.raises(ConfigError, match="'4X' is not a character count"):
        parse_size("4X", unit="characters")
    with pytest.raises(ConfigError, match="positive whole number of tokens"):
        parse_size("1.5")


def test_every_count_flag_reads_the_same_suffixes(capsys):
    found = []
    for cmd, p in _commands().items():
        for a in _options(p):
            if getattr(a.type, "__name__", "").startswith("count of"):
                found.append(f"{cmd} {a.option_strings[0]}")
                assert a.type("4K") == 4000 and a.type("4Ki") == a.type("4KiB") == 4096, found[-1]
                with pytest.raises(argparse.ArgumentTypeError, match="ambiguous"):
                    a.type("4KB")
    assert {"sample --budget-tokens", "sample --long-threshold", "sample --max-length", "stats --long-threshold",
            "build --seq-len", "build --shard-size", "inspect --max-chars", "train --seq-len", "train --loss-chunk",
            "needle --reserve", "needle --max-new-tokens", "eval-loss --seq-len", "eval-loss --max-sequences",
            "stats --workers", "train --workers", "build --tasks", "sample --max-repeat", "train --save-every",
            "train --micro-batch", "needle --n-needles"} <= set(found)
    # every integer flag is a count read by the one parser, except seeds and a sequence index
    ints = {f"{cmd} {a.option_strings[0]}" for cmd, p in _commands().items() for a in _options(p) if a.type is int}
    assert {s.split()[1] for s in ints} <= {"--seed", "--seq", "--seeds"}, ints
    with pytest.raises(SystemExit):
        build_parser().parse_args(["build", "IN", "--tokenizer", "T", "--seq-len", "8", "--out", "O",
                                   "--shard-size", "64MB"])
    assert "ambiguous: write 64M" in capsys.readouterr().err


def test_length_lists_read_the_same_suffixes():
    from lcdata_train.eval_loss import parse_edges
    from lcdata_train.needle import parse_grid

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_buckets("0,1Ki,4Ki,128KiB") == (0, 1024, 4096, 131072)
        assert parse_edges("0,4096,32Ki") == (0, 4096, 32768)
        assert parse_grid("1Ki,2K", True) == (1024, 2000) and parse_grid("1K:3K:3", True) == (1000, 2000, 3000)
    # a bare K in a bucket list keeps its old meaning (1024) for one release, with a warning to write Ki
    with pytest.warns(FutureWarning, match="read as 4Ki = 4,096 as before.*write 4Ki"):
        assert parse_buckets("0,4K") == (0, 4096)


# --------------------------------------------------------------------------------------------- what the terminal says

def _lcdata(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lcdata", *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_terminal_says_engine_strategy_and_outputs(tmp_path, tokenizer_path):
    inputs = "data/demo/*/part-001.jsonl.zst"
    p = _lcdata("stats", inputs, "--tokenizer", tokenizer_path, "--out", tmp_path / "stats", "--workers", 1,
                "--no-figure")
    assert p.returncode == 0, p.stderr
    assert re.search(r"^tokenizer engine: (tiktoken|hf) \(.+\)$", p.stdout, re.M), p.stdout
    assert (f"wrote {tmp_path}/stats/: sources.parquet, buckets.parquet, histogram.parquet, files.parquet, "
            "skips.parquet, doc_lengths.parquet, stats.json") in p.stdout
    assert {f.name for f in (tmp_path / "stats").iterdir() if not f.name.startswith(".")} == {
        "sources.parquet", "buckets.parquet", "histogram.parquet", "files.parquet", "skips.parquet",
        "doc_lengths.parquet", "stats.json"}
    engine = re.search(r"^tokenizer engine: (\w+)", p.stdout, re.M).group(1)

    (tmp_path / "shares.json").write_text('{"books": 0.4, "code": 0.2, "docs": 0.1, "web": 0.3}')
    p = _lcdata("sample", inputs, "--stats", tmp_path / "stats", "--strategy", "per-source", "--budget-tokens", "100K",
                "--source-shares", tmp_path / "shares.json", "--out", tmp_path / "plan", "--no-figure", "--cap")
    assert p.returncode == 0, p.stderr
    assert "strategy per-source, budget 100,000 tokens, seed 0" in p.stdout, p.stdout
    assert re.search(r"source shares: .*shares\.json", p.stdout), p.stdout
    assert re.search(r"^books +[0-9.]+% +40\.0%", p.stdout, re.M), p.stdout  # each source's target share
    assert f"tokenizer engine: {engine} (" in p.stdout
    assert f"wrote {tmp_path}/plan/: plan.parquet, report.parquet, groups.parquet, report.json, plan.json" in p.stdout
    assert not (tmp_path / "plan" / "sample.png").exists()

    p = _lcdata("build", inputs, "--plan", tmp_path / "plan", "--tokenizer", tokenizer_path, "--seq-len", "1Ki",
                "--out", tmp_path / "shards", "--workers", 1)
    assert p.returncode == 0, p.stderr
    assert "x 1,024 tokens" in p.stdout and f"tokenizer engine: {engine} (" in p.stdout
    assert re.search(r"^documents: plan .*plan \(strategy per-source, budget 100,000 tokens, seed 0, source shares: "
                     r".*shares\.json\)$", p.stdout, re.M), p.stdout
    assert re.search(rf"^wrote {re.escape(str(tmp_path))}/shards/: 1 shard file\(s\) shard-\*\.bin \+ shard-\*\.seg\.npy, "
                     r"documents\.parquet, manifest\.json$", p.stdout, re.M), p.stdout

    p = _lcdata("build", "data/demo/web/part-001.jsonl.zst", "--tokenizer", tokenizer_path, "--seq-len", "512",
                "--out", tmp_path / "heldout", "--workers", 1, "--engine", "hf")
    assert p.returncode == 0, p.stderr
    assert "documents: every document once (no --plan)" in p.stdout and "tokenizer engine: hf (" in p.stdout

    # the estimate says so; a bucket edge in the old spelling (bare K = 1024) gets one note line
    p = _lcdata("stats", inputs, "--out", tmp_path / "est", "--workers", 1, "--no-figure", "--no-doc-lengths",
                "--buckets", "0,1K,4Ki")
    assert "tokenizer engine: none (lengths in estimated tokens: characters / 3.68)" in p.stdout, p.stdout
    notes = [ln for ln in p.stderr.splitlines() if "note:" in ln]
    assert notes == ["lcdata stats: note: bucket edge '1K' is read as 1Ki = 1,024 as before; from the next release K "
                     "and M mean 10^3 and 10^6 here too, as in every other flag: write 1Ki"], p.stderr
    assert "FutureWarning" not in p.stderr
    assert __import__("json").loads((tmp_path / "est" / "stats.json").read_text())["config"]["buckets"] == [0, 1024, 4096]
