"""Needle in a haystack (gkamradt; Fu et al. 2024, PAPER.md "Evaluation"): can the model retrieve a fact
placed anywhere in a long context?

The grid: context lengths x depths (default ``linspace(1000, 128000, 40)`` x ``linspace(0, 100, 10)``).
For a cell (L, d):

1. The haystack (long prose, or filler text for the passkey task) is tokenized **once** per run; every
   cell takes a prefix of those ids.
2. ``reserve`` tokens (default 200) are kept for the prompt and the answer: the context (haystack + needles)
   is exactly ``L - reserve`` tokens. The haystack is trimmed to ``L - reserve - len(needles)`` tokens.
3. A needle's insertion point is ``int(n_haystack * d / 100)``, moved back to the closest sentence boundary
   (the point just after a token whose text ends in ``.``, ``!`` or ``?``, closing quotes allowed); at
   ``d = 100`` it goes at the end. Needle ids are spliced into the haystack ids, so the haystack keeps its
   own tokenization and nothing is re-encoded around the needle.
4. The prompt is the tokenizer's BOS (if it has one, as ``tokenizer(prompt)`` adds it for LLaMA), the
   template's text before ``{context}``, the context ids, and the text after it (with ``{question}``
   filled), each part encoded separately. The paper's base-model template is the default. ``bos``:
   ``once`` (default, as just said), ``paper`` (also a BOS as the context's first id and before each
   needle, what the paper's encode -> decode -> re-encode gives with a LLaMA tokenizer), ``none``
   (`cell_prompts`).
5. Scoring: ``generate`` decodes greedily (``max_new_tokens``, default 50) and scores the output with
   ``scoring``: ``paper`` (the paper's visualize.py: distinct raw lower-cased words of the output found among
   the expected answer's, over its word count; max 91.7 on the paper's needle, whose "day." keeps its period)
   or ``words`` (punctuation stripped, max 100); default ``paper`` for the paper's needle and template,
   ``words`` otherwise (`default_scoring`). ``teacher-forced`` (scoring ``exact``) runs one
   forward pass of prompt + target and scores 100 when the argmax is the target token at every target
   position (also reported: the target's log-probability and the share of positions right).

Tasks: ``needle`` (the paper's San Francisco needle in prose), ``passkey`` (a random 5-digit key, one per
cell from the seed, in repeated filler text), ``multi`` (``n_needles`` "special magic number" facts, the
first at depth d and the others spread evenly over the rest of the context, as in gkamradt's multi-needle
test; each is asked for in its own prompt and the cell's score is their mean). Needle, question, answer,
target and template are configurable.

Outputs (`run_needle`): ``results.parquet`` (one row per cell and needle), ``results.json`` (config, average
score, scorer, per-cell scores, throughput), ``heatmap.png`` (length on x, depth on y, as in the paper's
figure) and, when every cell has the same score (`is_flat`), ``heatmap_logprob.png``: the answer's mean
teacher-forced log-prob per token by cell (one extra forward pass per prompt in generate mode).
Cost: one forward pass of up to L tokens per cell and needle (teacher-forced), plus ``max_new_tokens`` cached
decoding steps (generate).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from lcdata.errors import ConfigError

from .config import check_out_folder

PAPER_NEEDLE = "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
PAPER_QUESTION = "What is the best thing to do in San Francisco?"
PAPER_ANSWER = "eat a sandwich and sit in Dolores Park on a sunny day"
PAPER_EXPECTED = PAPER_ANSWER + "."  # the expected answer the paper's visualize.py scores against (12 raw words)
PAPER_TEMPLATE = ("<|im_start|> This is a very long story book: <book> {context} </book>.\n Based on the content of "
                  "the book, Question: {question}\nAnswer:")
PASSKEY_TEMPLATE = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
                    "I will quiz you about the important information there.\n{context}\n{question}")
PASSKEY_FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
MULTI_KEYS = ("Lisbon", "Oslo", "Nairobi", "Quito", "Hanoi", "Tallinn", "Accra", "Lima", "Perth", "Dakar",
              "Bergen", "Porto", "Kyoto", "Cusco", "Malmo", "Split")
MAX_LENGTH = 1 << 24  # tokens: 16M, far beyond any model evaluated here; a larger length is a typo
TASKS = ("needle", "passkey", "multi")
MODES = ("generate", "teacher-forced")
SCORINGS = ("paper", "words", "exact")  # generate: paper | words; teacher-forced: exact
BOS_MODES = ("paper", "once", "none")
LOGPROB_HEATMAP = "heatmap_logprob.png"  # written when every cell has the same score
_CLOSERS = "\"')]}\u201d\u2019"


def parse_grid(spec: str, integer: bool) -> tuple:
    """``"1000:128000:40"`` -> ``linspace(1000, 128000, 40)`` (rounded to integers when ``integer``, as the
    public code does for lengths and depths); ``"1000,2000"`` -> those values. A value may carry a count
    suffix (`lcdata.util.config.parse_size`: ``4K`` = 4000, ``4Ki`` = 4096)."""
    from lcdata.util.config import parse_size

    def num(x: str) -> float:  # 1500, 0.5, or a count with a suffix as every flag takes it (32Ki, 1M)
        try:
            return float(x)
        except ValueError:
            return float(parse_size(x, None)[0])

    try:
        if ":" in spec:
            a, b, n = spec.split(":")
            vals = np.linspace(num(a), num(b), int(n))
        else:
            vals = np.array([num(x) for x in spec.split(",") if x.strip()])
            integer = integer and all(float(v).is_integer() for v in vals)  # a list keeps the values given
    except (ValueError, ConfigError):
        raise ConfigError(f"grid {spec!r}: use START:STOP:COUNT (e.g. 1000:128000:40) or a comma list") from None
    if len(vals) == 0:
        raise ConfigError(f"grid {spec!r} is empty")
    return tuple(int(round(v)) for v in vals) if integer else tuple(float(v) for v in vals)


@dataclass(frozen=True, kw_only=True, slots=True)
class NeedleConfig:
    """One needle evaluation. ``None`` text fields take the task's default (see module docstring)."""

    model: str
    out: str
    tokenizer: str | None = None
    haystack: tuple[str, ...] = ()
    task: str = "needle"
    mode: str = "generate"
    lengths: tuple[int, ...] = parse_grid("1000:128000:40", True)
    depths: tuple[float, ...] = parse_grid("0:100:10", True)
    needle: str | None = None
    question: str | None = None
    answer: str | None = None
    target: str | None = None
    template: str | None = None
    n_needles: int = 3
    reserve: int = 200
    max_new_tokens: int = 50
    seed: int = 0
    scoring: str | None = None  # None: `default_scoring` (recorded resolved)
    bos: str = "once"  # BOS at the prompt's start; paper: also before the context and each needle; none
    device: str = "auto"
    dtype: str = "auto"
    rope_theta: float | None = None
    quiet: bool = False
    overwrite: bool = False  # replace the needle folder --out holds (only ever one `lcdata needle` wrote)
    name: str | None = None  # the run's label in results.json, the heatmap and report.md (None: the model's folder)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"task {self.task!r} is not one of {TASKS}")
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r} is not one of {MODES}")
        if self.bos not in BOS_MODES:
            raise ConfigError(f"bos {self.bos!r} is not one of {BOS_MODES}")
        if self.scoring is None:
            object.__setattr__(self, "scoring", default_scoring(self))
        if not self.name:
            from .eval_loss import model_label

            object.__setattr__(self, "name", model_label(self.model))
        if self.scoring not in SCORINGS:
            raise ConfigError(f"scoring {self.scoring!r} is not one of {SCORINGS}")
        if (self.scoring == "exact") != (self.mode == "teacher-forced"):
            raise ConfigError(f"scoring {self.scoring!r} does not fit mode {self.mode!r}: generate scores with "
                              "paper or words, teacher-forced with exact")
        object.__setattr__(self, "haystack", tuple(self.haystack))
        object.__setattr__(self, "lengths", tuple(int(x) for x in self.lengths))
        object.__setattr__(self, "depths", tuple(float(x) for x in self.depths))
        if not self.lengths or not self.depths:
            raise ConfigError("lengths and depths must each hold at least one value")
        if any(not 0 <= d <= 100 for d in self.depths):
            raise ConfigError(f"depths {self.depths} must lie in [0, 100] (percent of the context)")
        if self.reserve < 1:
            raise ConfigError(f"reserve={self.reserve} must be >= 1 token (the paper reserves 200 for prompt and answer)")
        if min(self.lengths) <= self.reserve:
            raise ConfigError(f"context length {min(self.lengths)} must exceed the {self.reserve} tokens reserved "
                              "for the prompt and answer (--reserve)")
        if max(self.lengths) > MAX_LENGTH:
            raise ConfigError(f"context length {max(self.lengths):,} is beyond the {MAX_LENGTH:,} tokens a needle "
                              "grid may ask for; use lengths such as 1000:128000:40")
        for name in ("n_needles", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.seed < 0:
            raise ConfigError(f"seed={self.seed} must be >= 0")
        check_out_folder(self.out)
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"dtype {self.dtype!r} is not one of auto, float32, bfloat16")
        if self.template is not None:
            check_template(self.template)
        if self.task == "needle" and self.needle and not self.answer:
            raise ConfigError("a custom --needle needs its --answer (the words scored), and --question")
        if self.task == "passkey" and self.needle and "{key}" not in self.needle:
            raise ConfigError(f"passkey needle {self.needle[:60]!r} must contain {{key}} (where the random key goes)")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


# ---------------------------------------------------------------------------------- pure helpers


def check_template(template: str) -> None:
    """A prompt template holds ``{context}`` once and ``{question}``, and no other field."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ConfigError(f"template {template[:80]!r}: {e} (write a literal brace as {{{{ or }}}})") from None
    bad = sorted(set(fields) - {"context", "question"})
    if bad or fields.count("context") != 1 or "question" not in fields:
        raise ConfigError(f"template {template[:80]!r} must hold {{context}} exactly once and {{question}}, and no "
                          f"other field (found {fields})")


def split_template(template: str, question: str) -> tuple[str, str]:
    """(text before the context, text after it), with ``{question}`` filled in either part."""
    check_template(template)
    head, tail = template.replace("{context}", "\x00", 1).split("\x00")
    return head.format(question=question), tail.format(question=question)


def default_scoring(cfg: NeedleConfig) -> str:
    """``exact`` in teacher-forced mode; in generate mode ``paper`` when the run is the paper's test (task
    ``needle`` with the paper's needle, answer and template: no --needle/--answer/--template), else ``words``."""
    if cfg.mode == "teacher-forced":
        return "exact"
    paper = cfg.task == "needle" and cfg.needle is None and cfg.answer is None and cfg.template is None
    return "paper" if paper else "words"


def paper_score(output: str, expected: str) -> float:
    """The paper's needle score (its ``visualize.py``), x100: distinct lower-cased whitespace-split words of the
    output that are words of the expected answer, over the expected answer's word count. Punctuation stays on
    the words, so a perfect answer ending in "day." scores 11/12 = 91.7 against the paper's expected answer."""
    want = expected.lower().split()
    if not want:
        raise ConfigError("the answer has no words to look for")
    return 100.0 * len(set(output.lower().split()) & set(want)) / len(want)


def score_output(scoring: str, output: str, answer: str) -> float:
    """A generated output's score under ``scoring`` (``paper`` or ``words``)."""
    return paper_score(output, answer) if scoring == "paper" else recall_score(output, answer)


def words(text: str) -> list[str]:
    """Lower-cased words with punctuation stripped (the unit of the ``words`` scorer)."""
    return re.findall(r"[a-z0-9]+", text.lower())


def recall_score(output: str, answer: str) -> float:
    """The ``words`` scorer: share of the answer's words (lower-cased, punctuation stripped, each occurrence
    counted) found in the output, x100; a perfect answer scores 100."""
    want = words(answer)
    if not want:
        raise ConfigError("the answer has no words to look for")
    have = set(words(output))
    return 100.0 * sum(w in have for w in want) / len(want)


def boundary_mask(tok) -> np.ndarray:
    """``mask[id]``: the token's text ends a sentence (``.``, ``!`` or ``?``, then closing quotes/space)."""
    n = tok.get_vocab_size()
    mask = np.zeros(n, dtype=bool)
    for i in range(n):
        t = tok.decode([i], skip_special_tokens=True).rstrip().rstrip(_CLOSERS)
        mask[i] = t.endswith((".", "!", "?"))
    return mask


def insertion_point(hay: np.ndarray, depth: float, boundary: np.ndarray) -> int:
    """Index in ``hay`` where a needle at ``depth`` percent goes: the sentence boundary at or before the
    depth point (0 if there is none), the end at 100%."""
    n = len(hay)
    if depth >= 100:
        return n
    pos = int(n * depth / 100)
    while pos > 0 and not boundary[hay[pos - 1]]:
        pos -= 1
    return pos


def place_needles(hay: np.ndarray, needles: list[np.ndarray], depths: list[float], budget: int,
                  boundary: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Context of exactly ``budget`` ids: the haystack's first ``budget - sum(len(needles))`` ids with each
    needle spliced in at its depth. Returns the ids and each needle's start in them."""
    n_needle = sum(len(x) for x in needles)
    keep = budget - n_needle
    if keep < 0:
        raise ConfigError(f"the needles ({n_needle} tokens) do not fit a context of {budget} tokens")
    if len(hay) < keep:
        raise ConfigError(f"the haystack has {len(hay)} tokens, fewer than the {keep} a context needs")
    hay = hay[:keep]
    points = [insertion_point(hay, d, boundary) for d in depths]
    order = sorted(range(len(needles)), key=lambda j: (points[j], j))
    parts, starts, prev, shift = [], [0] * len(needles), 0, 0
    for j in order:
        parts.append(hay[prev: points[j]])
        starts[j] = points[j] + shift
        parts.append(needles[j])
        shift += len(needles[j])
        prev = points[j]
    parts.append(hay[prev:])
    ctx = np.concatenate(parts).astype(np.int64)
    assert len(ctx) == budget
    return ctx, starts


@dataclass(frozen=True, slots=True)
class Needle:
    text: str      # what goes into the context
    question: str  # fills {question}
    answer: str    # words scored in generate mode
    target: str    # continuation scored in teacher-forced mode
    depth: float


def cell_needles(cfg: NeedleConfig, length: int, depth: float) -> list[Needle]:
    """The needles of one cell; random parts (passkey, magic numbers) from ``(seed, length, depth)``."""
    rng = np.random.default_rng([cfg.seed, length, int(round(depth * 1000))])
    if cfg.task == "passkey":
        key = str(int(rng.integers(10000, 100000)))
        text = cfg.needle.format(key=key) if cfg.needle else f" The pass key is {key}. Remember it. {key} is the pass key."
        ans = cfg.answer.format(key=key) if cfg.answer else key
        return [Needle(text, cfg.question or "What is the pass key? The pass key is", ans,
                       cfg.target.format(key=key) if cfg.target else " " + ans, depth)]
    if cfg.task == "multi":
        n = cfg.n_needles
        keys = rng.choice(len(MULTI_KEYS), size=n, replace=n > len(MULTI_KEYS))
        out = []
        for i, k in enumerate(keys):
            name, val = MULTI_KEYS[int(k)], str(int(rng.integers(1000000, 10000000)))
            out.append(Needle(f" The special magic number for {name} is: {val}.",
                              f"What is the special magic number for {name} mentioned in the provided text?",
                              val, " The special magic number for " + name + " is: " + val, depth + i * (100 - depth) / n))
        return out
    needle, answer = cfg.needle or PAPER_NEEDLE, cfg.answer or PAPER_EXPECTED
    target = cfg.target or " " + (cfg.answer or PAPER_ANSWER)
    return [Needle("\n" + needle + "\n", cfg.question or PAPER_QUESTION, answer, target, depth)]


def template_for(cfg: NeedleConfig) -> str:
    return cfg.template or (PASSKEY_TEMPLATE if cfg.task == "passkey" else PAPER_TEMPLATE)


def encode(tok, text: str) -> np.ndarray:
    """``text``'s ids without special tokens."""
    return np.asarray(tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Prompt:
    needle: Needle
    ids: np.ndarray     # the whole prompt
    context: int        # index of the context's first id in ``ids``
    needle_pos: int     # index of the needle's first id (its BOS under bos=paper) in the context
    context_tokens: int


def cell_prompts(cfg: NeedleConfig, tok, hay: np.ndarray, boundary: np.ndarray, bos: int | None, length: int,
                 depth: float) -> list[Prompt]:
    """The prompts of one cell (one per needle). ``cfg.bos`` places the tokenizer's BOS (nothing if it has
    none): ``once`` at the prompt's start (as ``tokenizer(prompt)`` adds it); ``none`` nowhere; ``paper`` as
    the paper's code ends up with a LLaMA tokenizer (its context and needle are each ``encode()``-d, which
    adds a BOS, and decoded with ``<s>`` kept as text before the prompt is re-encoded): at the prompt's start,
    as the context's first id (a needle at depth 0 goes before it, as there) and before each needle. The
    context is ``length - reserve`` ids in every mode, its BOSes included."""
    lead = np.asarray([bos] if bos is not None and cfg.bos == "paper" else [], dtype=np.int64)
    first = np.asarray([bos] if bos is not None and cfg.bos != "none" else [], dtype=np.int64)
    budget = length - cfg.reserve
    needles = cell_needles(cfg, length, depth)
    nids = [np.concatenate([lead, encode(tok, n.text)]) for n in needles]
    ctx, starts = place_needles(np.concatenate([lead, hay[:budget]]), nids, [n.depth for n in needles], budget,
                                boundary)
    out = []
    for j, n in enumerate(needles):
        head, tail = split_template(template_for(cfg), n.question)
        head_ids = np.concatenate([first, encode(tok, head)])
        out.append(Prompt(n, np.concatenate([head_ids, ctx, encode(tok, tail)]), len(head_ids), starts[j], len(ctx)))
    return out


# ------------------------------------------------------------------------------------ haystack


def default_haystack() -> list[str]:
    """The project's public-domain prose: the books of the embedded demo corpus (Jane Austen, KJV)."""
    import lcdata

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(lcdata.__file__))), "data", "demo", "books")
    if not os.path.isdir(root):
        raise ConfigError(f"no default haystack: {root} is missing (it ships with the lcdata repository); pass "
                          "--haystack with long prose (text files or a corpus)")
    return [root]


def haystack_texts(paths: list[str]) -> list[str]:
    """Texts of the haystack inputs in order: plain text files whole, corpora (jsonl/zst/parquet, folders,
    globs) one document each via lcdata's readers."""
    from lcdata.corpus import ReadConfig, detect_format, read_corpus

    texts: list[str] = []
    for p in paths:
        if os.path.isfile(p) and detect_format(p) is None:
            with open(p, encoding="utf-8", errors="replace") as fh:
                texts.append(fh.read())
        else:
            df = read_corpus([p], ReadConfig(source="haystack"))
            texts.extend(t for t in df["text"].to_list() if t)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ConfigError(f"the haystack {paths} holds no text")
    return texts


def haystack_ids(tok, texts: list[str], n_tokens: int, sep: str = "\n\n") -> np.ndarray:
    """At least ``n_tokens`` ids: the texts' ids in order joined by ``sep``'s, cycling if they run short."""
    from lcdata.tokenizer import can_split, encode_texts

    split = can_split(tok)
    sep_ids = np.asarray(tok.encode(sep, add_special_tokens=False).ids, dtype=np.int64)
    parts, total, k = [], 0, 0
    while total < n_tokens:
        ids = encode_texts(tok, [texts[k % len(texts)]], split)[0]
        if k:
            parts.append(sep_ids)
            total += len(sep_ids)
        parts.append(ids)
        total += len(ids)
        k += 1
        if k > 100 * len(texts) and total == 0:
            raise ConfigError("the haystack encodes to no tokens")
    return np.concatenate(parts)


# ------------------------------------------------------------------------------------------ run


def run_needle(cfg: NeedleConfig) -> pl.DataFrame:
    """Evaluate the grid and write the outputs; returns ``results`` (one row per cell and needle). ``cfg.out`` is
    claimed first (`lcdata.util.outdir.claim_out`): never the model's folder or inside it, never a haystack file."""
    from lcdata.util.outdir import claim_out

    model = [cfg.model] if os.path.exists(cfg.model) else []  # a preset name is no folder
    with claim_out(cfg.out, "needle", overwrite=cfg.overwrite, resume_flag=None, inputs=model,
                   protect={"the model": model, "the tokenizer": [cfg.tokenizer or ""],
                            "a haystack file": list(cfg.haystack)}):
        return _run_needle(cfg)


def _run_needle(cfg: NeedleConfig) -> pl.DataFrame:
    from lcdata.tokenizer import BOS_NAMES, EOS_NAMES, find_special, load_tokenizer

    from .infer import greedy_generate, load_model, resolve_tokenizer, teacher_forced

    tok_path = resolve_tokenizer(cfg.model, cfg.tokenizer)
    tok = load_tokenizer(tok_path)
    model, folder = load_model(cfg.model, cfg.device, cfg.rope_theta, max(cfg.lengths))
    if tok.get_vocab_size() > model.cfg.vocab_size:
        raise ConfigError(f"tokenizer {tok_path} has {tok.get_vocab_size():,} ids but the model's vocabulary is "
                          f"{model.cfg.vocab_size:,}; pass the tokenizer the model was trained with")
    t0 = time.perf_counter()

    need = max(cfg.lengths)
    if cfg.task == "passkey" and not cfg.haystack:
        unit = encode(tok, PASSKEY_FILLER)
        hay = np.tile(unit, need // len(unit) + 1)
        hay_src = ["filler: " + PASSKEY_FILLER.strip()]
    else:
        hay_src = list(cfg.haystack) or default_haystack()
        hay = haystack_ids(tok, haystack_texts(hay_src), need)
    boundary = boundary_mask(tok)
    eos, bos = find_special(tok, EOS_NAMES), find_special(tok, BOS_NAMES)
    rows, fwd_tokens, t_model = [], 0, 0.0
    for L in cfg.lengths:
        for d in cfg.depths:
            for j, p in enumerate(cell_prompts(cfg, tok, hay, boundary, bos, L, d)):
                n, prompt, around = p.needle, p.ids, len(p.ids) - p.context_tokens
                answer_room = cfg.max_new_tokens if cfg.mode == "generate" else len(encode(tok, n.target))
                if len(prompt) + answer_room > L:
                    raise ConfigError(
                        f"length {L}: the prompt ({around} tokens around the context) and the answer "
                        f"({answer_room}) do not fit the {cfg.reserve} reserved tokens; raise --reserve to at least "
                        f"{around + answer_room} or shorten the template/question")
                row = {"length": L, "depth": d, "scoring": cfg.scoring, "bos": cfg.bos, "needle": j,
                       "needle_depth": n.depth, "needle_pos": p.needle_pos, "context_tokens": p.context_tokens,
                       "prompt_tokens": len(prompt), "answer": n.answer}
                t1 = time.perf_counter()
                if cfg.mode == "generate":
                    out = greedy_generate(model, prompt, cfg.max_new_tokens, eos, cfg.dtype)
                    text = tok.decode(out, skip_special_tokens=True)
                    row.update(output=text, score=score_output(cfg.scoring, text, n.answer))
                    fwd_tokens += len(prompt) + len(out)
                else:
                    target = encode(tok, n.target)
                    r = teacher_forced(model, prompt, target, cfg.dtype)
                    row.update(output=tok.decode(r["predicted"], skip_special_tokens=True),
                               score=100.0 * r["exact"], exact=r["exact"], token_acc=r["token_acc"],
                               logprob=r["logprob"], target_tokens=len(target))
                    fwd_tokens += len(prompt) + len(target) - 1
                t_model += time.perf_counter() - t1
                rows.append(row)
        if not cfg.quiet:
            done = [r["score"] for r in rows if r["length"] == L]
            print(f"needle: length {L:,}: mean score {np.mean(done):.1f} over {len(cfg.depths)} depths",
                  file=sys.stderr, flush=True)
    res = pl.DataFrame(rows)
    if is_flat(res) and "logprob" not in res.columns:  # generate mode: one teacher-forced pass per prompt
        t1 = time.perf_counter()
        lp, nt = [], []
        for L in cfg.lengths:
            for d in cfg.depths:
                for p in cell_prompts(cfg, tok, hay, boundary, bos, L, d):
                    target = encode(tok, p.needle.target)
                    lp.append(teacher_forced(model, p.ids, target, cfg.dtype)["logprob"])
                    nt.append(len(target))
                    fwd_tokens += len(p.ids) + len(target) - 1
        t_model += time.perf_counter() - t1
        res = res.with_columns(logprob=pl.Series(lp, dtype=pl.Float64), target_tokens=pl.Series(nt, dtype=pl.Int64))
    _write_outputs(cfg, res, {"model_folder": folder, "tokenizer": tok_path, "haystack": hay_src,
                              "seconds": time.perf_counter() - t0, "forward_tokens": fwd_tokens,
                              "tokens_per_s": fwd_tokens / t_model if t_model else None, "template": template_for(cfg),
                              "bos_id": bos})
    return res


def cell_scores(res: pl.DataFrame) -> pl.DataFrame:
    """Mean score per (length, depth) cell, and ``answer_logprob`` (the mean over the cell's needles of the
    target's teacher-forced log-probability per token, nats) where ``res`` has ``logprob``."""
    aggs = [pl.col("score").mean()]
    if "logprob" in res.columns:
        aggs.append((pl.col("logprob") / pl.col("target_tokens")).mean().alias("answer_logprob"))
    return res.group_by("length", "depth").agg(aggs).sort("length", "depth")


def is_flat(res: pl.DataFrame) -> bool:
    """Every cell has the same score (e.g. 0 everywhere for an untrained or CPU-sized model): the score heatmap
    shows one colour, so the answer's log-probability is plotted too (``heatmap_logprob.png``)."""
    return cell_scores(res)["score"].n_unique() == 1


def _write_outputs(cfg: NeedleConfig, res: pl.DataFrame, info: dict) -> None:
    from lcdata.util.io import make_dirs, write_bytes, write_json, write_parquet

    make_dirs(cfg.out)
    cells = cell_scores(res)
    avg = float(cells["score"].mean())
    write_parquet(res, os.path.join(cfg.out, "results.parquet"))
    summary = {"name": cfg.name, "average_score": avg, "scoring": cfg.scoring, "seed": cfg.seed, "task": cfg.task,
               "mode": cfg.mode,
               "config": cfg.to_dict(), **info,
               "cells": cells.to_dicts()}
    if "logprob" in res.columns:
        summary["mean_answer_logprob"] = float(res["logprob"].mean())
    if "token_acc" in res.columns:
        summary["mean_token_acc"] = float(res["token_acc"].mean())
    name = f"{cfg.task} ({cfg.mode}, scoring {cfg.scoring}) - {cfg.name}"
    title = f"{name}: average {avg:.1f}"
    summary["heatmaps"] = {"heatmap.png": title}
    if is_flat(res):
        summary["heatmaps"]["heatmap.png"] = title = title + f"\nevery cell {avg:.1f}: see {LOGPROB_HEATMAP}"
        lp_title = (f"{name}\nevery cell scored {avg:.1f}, so colour = the answer's mean\nlog-prob per token "
                    "(teacher-forced, nats)")
        write_bytes(heatmap(cells, lp_title, value="answer_logprob", label="answer log-prob per token (nats)"),
                    os.path.join(cfg.out, LOGPROB_HEATMAP))
        summary["heatmaps"][LOGPROB_HEATMAP] = lp_title
        summary["logprob_heatmap"] = LOGPROB_HEATMAP
    write_bytes(heatmap(cells, title), os.path.join(cfg.out, "heatmap.png"))
    write_json(summary, os.path.join(cfg.out, "results.json"))  # last: marks a complete folder


def heatmap(cells: pl.DataFrame, title: str, value: str = "score", label: str = "score") -> bytes:
    """PNG of ``value`` by (length, depth): length on x, depth on y (0% at the top), red -> green; the score
    spans 0 -> 100, another value its own range."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap

    lengths = sorted(set(cells["length"].to_list()))
    depths = sorted(set(cells["depth"].to_list()))
    grid = np.full((len(depths), len(lengths)), np.nan)
    for r in cells.iter_rows(named=True):
        grid[depths.index(r["depth"]), lengths.index(r["length"])] = r[value]
    cmap = LinearSegmentedColormap.from_list("needle", ["#F0496E", "#EBB839", "#0CD79F"])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(lengths) + 3), 0.45 * len(depths) + 2.2))
    lo, hi = (0, 100) if value == "score" else (np.nanmin(grid), np.nanmax(grid))
    im = ax.imshow(grid, cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
    ax.set_xticks(range(len(lengths)), [f"{x / 1000:.1f}".removesuffix(".0") + "K" if x >= 1000 else str(x) for x in lengths],
                  rotation=60, fontsize=7)
    ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths], fontsize=7)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("depth (%)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label=label)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def print_summary(res: pl.DataFrame, out: str, name: str | None = None) -> None:
    from lcdata.util.table import render

    cells = cell_scores(res)
    by_len = cells.group_by("length").agg(pl.col("score").mean()).sort("length")
    print(render(by_len, [("length", "length", "int"), ("score", "score", "float")]))
    line = (f"{name}: " if name else "") + f"average score {cells['score'].mean():.1f} over {len(cells)} cells"
    if "token_acc" in res.columns:
        line += f"; mean answer log-prob {res['logprob'].mean():.3f}, token accuracy {res['token_acc'].mean():.3f}"
    files = "results.parquet, results.json, heatmap.png"
    if is_flat(res):
        line += (f"\nevery cell has the same score: {LOGPROB_HEATMAP} shows the answer's mean log-prob per token "
                 f"(teacher-forced), from {cells['answer_logprob'].min():.3f} to {cells['answer_logprob'].max():.3f}")
        files += ", " + LOGPROB_HEATMAP
    print(line + f"\nwrote {out}/ ({files})")
