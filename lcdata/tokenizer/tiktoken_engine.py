"""An exact, faster engine for byte-level BPE tokenizers: tiktoken's BPE, used only where it provably gives
the same ids as Hugging Face `tokenizers` (the reference).

`tiktoken_engine(tok_or_path)` decides from the tokenizer's definition, never from a sample of text, and
returns ``(engine, reason)`` or ``(None, reason)`` with the condition that failed. The conditions:

* **model**: BPE without dropout, ``byte_fallback``, ``continuing_subword_prefix`` or ``end_of_word_suffix``;
  no normalizer; a ByteLevel decoder (or none).
* **pre-tokenizer**: ``ByteLevel(add_prefix_space=false, use_regex=true)`` (HF's GPT-2 regex), or
  ``Sequence[Split(Regex, Isolated), ByteLevel(add_prefix_space=false, use_regex=false)]`` with a pattern
  known to match every character (GPT-2, cl100k / Llama-3, Qwen2, o200k): tiktoken drops text its pattern
  does not match, while HF's Split keeps it, so an unknown pattern is refused.
* **vocabulary**: all 256 byte symbols of the ByteLevel alphabet are tokens (HF never meets an unknown
  symbol, so no ``unk`` and no silently dropped byte), every token is spelled in that alphabet.
* **merges vs ranks**: every merge ``(a, b)`` makes a token ``a+b``; the ids of the tokens made increase
  strictly along the merge list (merge priority == id order == tiktoken rank order), so each token is made by
  at most one merge and its parts by earlier merges; every multi-byte token (added tokens aside) is made by a
  merge (tiktoken would otherwise reach a token HF cannot).
* **self-consistency**: HF's own BPE turns the bytes of every token into that single token. Then tiktoken's
  whole-piece lookup agrees with HF (``ignore_merges`` true or false), and it is also what makes the two merge
  loops agree: tiktoken merges *any* adjacent pair whose bytes form a token, HF only listed pairs, but with
  ranks in merge order a pair ``x, y`` with ``x+y = t`` that is not ``t``'s merge cannot be adjacent while
  ``t``'s rank is the lowest available (if it were, the run of ``t``'s bytes alone, which ends in ``t``,
  would have crossed the ``x|y`` boundary earlier in the word as well). Both loops pick the lowest rank,
  leftmost first, so they take the same steps.
* **added tokens**: HF splits every added token (special or not) out of raw text *even with*
  ``add_special_tokens=False`` (verified: ``"a<|bos|>b"`` gives id 0 in the middle). The engine does the
  same, in Python, before tiktoken sees the text: non-``normalized`` tokens first, then ``normalized`` ones,
  each leftmost-longest (HF's aho-corasick order). Tokens with ``lstrip``/``rstrip``/``single_word`` are
  refused (their whitespace handling is HF-specific), as is ``encode_special_tokens=True``.

Regex engines: HF runs the pattern with Oniguruma, tiktoken with fancy-regex. For the GPT-2 regex every one
of the 1,112,064 Unicode scalar values was checked in letter, digit, space, apostrophe and newline contexts
with identical ids on the demo tokenizer (tokenizers 0.23, tiktoken 0.14); the tests repeat a sample of it.
"""

from __future__ import annotations

import functools
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import MissingDependencyError
from ..util.config import default_workers

# HF's ByteLevel pre-tokenizer regex (tokenizers/src/pre_tokenizers/byte_level.rs), verbatim.
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_CL100K = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_O200K = "|".join([
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}", r" ?[^\s\p{L}\p{N}]+[\r\n/]*", r"\s*[\r\n]+", r"\s+(?!\S)", r"\s+",
])
# Split patterns known to match every character (each character starts a match: letters, digits, whitespace
# and "anything else" each have an alternative), so HF's Isolated split leaves no gap that tiktoken would drop.
KNOWN_PATTERNS = {GPT2_PATTERN: "gpt2", _CL100K: "cl100k/llama3", _QWEN2: "qwen2", _O200K: "o200k"}


def _bytes_to_unicode() -> dict[int, str]:
    """The ByteLevel alphabet: byte -> printable character (GPT-2's table, as HF uses it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_TO_CHAR = _bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def tiktoken_available() -> bool:
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        return False
    return True


def require_tiktoken():
    try:
        import tiktoken
    except ImportError:
        raise MissingDependencyError(
            "engine 'tiktoken' needs the tiktoken package: `pip install 'lcdata[fast]'` (or `pip install tiktoken`); "
            "or use engine 'hf' / 'auto'"
        ) from None
    return tiktoken


# ---------------------------------------------------------------------------------------- the decision


def _merges(model: dict) -> list[tuple[str, str]]:
    out = []
    for m in model.get("merges") or []:
        if isinstance(m, str):
            a, sep, b = m.partition(" ")
            if not sep:
                raise ValueError(f"merge {m!r} is not 'left right'")
            out.append((a, b))
        else:
            out.append((m[0], m[1]))
    return out


def _pattern(d: dict) -> tuple[str | None, str]:
    """(split regex, '') when the pre-tokenizer is one tiktoken reproduces, else (None, reason)."""
    pre = d.get("pre_tokenizer")
    if pre is None:
        return None, "no pre-tokenizer (HF would run BPE on whole texts; tiktoken needs a split regex)"
    items = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in items]
    if not items or kinds[-1] != "ByteLevel":
        return None, f"pre-tokenizer {kinds} does not end with ByteLevel (not a byte-level BPE)"
    bl = items[-1]
    if bl.get("add_prefix_space"):
        return None, "ByteLevel add_prefix_space=true (HF adds a space before each text; tiktoken does not)"
    if len(items) == 1:
        if not bl.get("use_regex", True):
            return None, "ByteLevel use_regex=false with no Split: HF does not split the text, tiktoken must"
        return GPT2_PATTERN, ""
    if len(items) != 2 or kinds[0] != "Split":
        return None, f"pre-tokenizer sequence {kinds}: only [Split(regex), ByteLevel] is reproduced by tiktoken"
    sp = items[0]
    if bl.get("use_regex", True):
        return None, "Split followed by ByteLevel use_regex=true splits twice; tiktoken applies one regex"
    pat = (sp.get("pattern") or {}).get("Regex")
    if pat is None:
        return None, "Split on a plain string, not a regex"
    if sp.get("behavior") != "Isolated" or sp.get("invert"):
        return None, f"Split behavior {sp.get('behavior')!r} invert={sp.get('invert')} (tiktoken = Isolated, not inverted)"
    if pat not in KNOWN_PATTERNS:
        return None, ("Split regex is not one known to match every character (tiktoken drops text its pattern does "
                      f"not match, HF keeps it): {pat[:80]!r}")
    return pat, ""


def _structure(d: dict) -> tuple[str | None, str]:
    """Everything decidable from the JSON alone. Returns (pattern, '') or (None, reason)."""
    m = d.get("model") or {}
    if m.get("type") != "BPE":
        return None, f"model {m.get('type')!r} is not BPE"
    if m.get("dropout") not in (None, 0, 0.0):
        return None, f"BPE dropout={m.get('dropout')} is random"
    if m.get("byte_fallback"):
        return None, "byte_fallback=true (SentencePiece-style <0x..> tokens, not byte-level BPE)"
    if m.get("continuing_subword_prefix") or m.get("end_of_word_suffix"):
        return None, "continuing_subword_prefix / end_of_word_suffix are set (not byte-level BPE)"
    norm = d.get("normalizer")
    if norm is not None and not (norm.get("type") == "Sequence" and not norm.get("normalizers")):
        return None, f"a normalizer ({norm.get('type')}) changes the text before BPE; tiktoken has none"
    dec = d.get("decoder")
    if dec is not None and dec.get("type") != "ByteLevel":
        return None, f"decoder {dec.get('type')!r} is not ByteLevel (not a byte-level tokenizer)"
    for t in d.get("added_tokens") or []:
        if not t.get("content"):
            return None, f"added token id {t.get('id')} has empty content"
        for flag in ("lstrip", "rstrip", "single_word"):
            if t.get(flag):
                return None, f"added token {t['content']!r} has {flag}=true (HF-specific whitespace handling)"
    return _pattern(d)


def _vocab_and_merges(d: dict) -> tuple[dict[bytes, int] | None, str]:
    m = d["model"]
    vocab: dict[str, int] = m.get("vocab") or {}
    added = {t["id"] for t in d.get("added_tokens") or []}
    missing = [BYTE_TO_CHAR[b] for b in range(256) if BYTE_TO_CHAR[b] not in vocab]
    if missing:
        return None, f"{len(missing)} of the 256 byte symbols are not tokens (e.g. {missing[0]!r}): HF would drop them"
    try:
        merges = _merges(m)
    except (ValueError, IndexError, TypeError) as e:
        return None, f"unreadable merges ({e})"
    made = {vocab.get(a + b) for a, b in merges}
    ranks: dict[bytes, int] = {}
    for s, i in vocab.items():
        if i in added and i not in made and s not in CHAR_TO_BYTE:
            continue  # an added token the model never makes: only the added-token split produces it
        try:
            b = bytes(CHAR_TO_BYTE[c] for c in s)
        except KeyError:
            return None, f"token {s!r} (id {i}) is not spelled in the ByteLevel alphabet"
        if b in ranks:
            return None, f"two tokens spell the same bytes {b!r}"
        ranks[b] = i
    prev = -1
    for k, (a, b) in enumerate(merges):
        for part in (a, b, a + b):
            if part not in vocab:
                return None, f"merge {k} ({a!r}, {b!r}): {part!r} is not in the vocabulary"
        r = vocab[a + b]
        if r <= prev:
            return None, (f"merge {k} ({a!r} + {b!r}) makes id {r}, not above the previous merge's id {prev}: "
                          "merge priority differs from id (tiktoken rank) order")
        prev = r
    orphans = [s for s, i in vocab.items() if i not in added and len(s) > 1 and i not in made]
    if orphans:
        return None, (f"{len(orphans)} multi-byte tokens are made by no merge (e.g. {orphans[0]!r}): HF never "
                      "produces them, tiktoken can")
    return ranks, f"{len(merges)} merges in id order"


def _self_consistent(d: dict, ranks: dict[bytes, int]) -> str:
    """'' if HF's BPE (merges only) turns the bytes of every token into that token, else the reason."""
    from tokenizers import Tokenizer

    m = dict(d["model"], ignore_merges=False, dropout=None)
    bare = {"version": d.get("version", "1.0"), "truncation": None, "padding": None, "added_tokens": [],
            "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": None, "model": m}
    tk = Tokenizer.from_str(json.dumps(bare))
    keep = set(ranks.values())
    items = [(s, i) for s, i in m["vocab"].items() if i in keep]
    bad = 0
    first = None
    for start in range(0, len(items), 1 << 15):
        part = items[start: start + (1 << 15)]
        for (s, i), e in zip(part, tk.encode_batch_fast([s for s, _ in part], add_special_tokens=False)):
            if e.ids != [i]:
                bad += 1
                first = first or (s, i, e.ids)
    if bad:
        s, i, ids = first
        return (f"{bad} tokens are not reproduced by HF's own merges from their bytes (e.g. {s!r} id {i} -> {ids}); "
                "tiktoken would emit them whole")
    return ""


@functools.lru_cache(maxsize=8)
def _decide(tok_json: str, encode_special_tokens: bool) -> tuple[dict | None, str]:
    """(build spec, reason) or (None, reason). Cached per tokenizer definition (the check runs HF once over
    the vocabulary: ~0.1 s for 16K tokens)."""
    d = json.loads(tok_json)
    if encode_special_tokens:
        return None, "encode_special_tokens=true (HF then tokenizes special tokens as text, per token kind)"
    pattern, why = _structure(d)
    if pattern is None:
        return None, why
    ranks, why2 = _vocab_and_merges(d)
    if ranks is None:
        return None, why2
    why3 = _self_consistent(d, ranks)
    if why3:
        return None, why3
    added = [(t["content"], t["id"], bool(t.get("normalized"))) for t in d.get("added_tokens") or []]
    im = " (ignore_merges=true: HF's whole-piece lookup, as tiktoken)" if d["model"].get("ignore_merges") else ""
    reason = (f"equivalent: byte-level BPE, {KNOWN_PATTERNS[pattern]} regex, no normalizer, {why2}, all "
              f"{len(ranks)} tokens self-consistent{im}, {len(added)} added tokens split out as HF does")
    return {"pattern": pattern, "ranks": ranks, "added": added}, reason


def _as_json(tok_or_path) -> tuple[str, bool]:
    if isinstance(tok_or_path, (str, os.PathLike)):  # a local file; lcdata.tokenizer passes loaded tokenizers
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(os.fspath(tok_or_path))
    else:
        tok = tok_or_path
    return tok.to_str(), bool(getattr(tok, "encode_special_tokens", False))


def check_equivalence(tok_or_path) -> tuple[bool, str]:
    """(True, why) when tiktoken's BPE provably gives HF's ids for this tokenizer, else (False, reason).
    Needs no tiktoken."""
    spec, reason = _decide(*_as_json(tok_or_path))
    return spec is not None, reason


def tiktoken_engine(tok_or_path, threads: int | None = None):
    """``(TiktokenEngine, reason)`` when tiktoken is installed and equivalent to HF for this tokenizer (a
    `tokenizers.Tokenizer` or the path of its JSON), else ``(None, reason)``."""
    spec, reason = _decide(*_as_json(tok_or_path))
    if spec is None:
        return None, reason
    if not tiktoken_available():
        return None, "tiktoken is not installed (pip install 'lcdata[fast]')"
    return TiktokenEngine(spec, threads), reason


# ------------------------------------------------------------------------------------------- the engine


def _alternation(tokens: list[str]) -> re.Pattern | None:
    if not tokens:
        return None
    # at one position Python tries alternatives in order: longest first = leftmost-longest, as HF
    return re.compile("|".join(re.escape(t) for t in sorted(set(tokens), key=lambda t: (-len(t), t))))


class TiktokenEngine:
    """Encodes like ``Tokenizer.encode_batch_fast(texts, add_special_tokens=False)`` (same ids), with tiktoken's
    BPE on ``threads`` threads (default: all cores). Build it with `tiktoken_engine`, which checks equivalence."""

    name = "tiktoken"

    def __init__(self, spec: dict, threads: int | None = None):
        tiktoken = require_tiktoken()
        self._enc = tiktoken.Encoding("lcdata-bytelevel-bpe", pat_str=spec["pattern"],
                                      mergeable_ranks=spec["ranks"], special_tokens={})
        self._encode = self._enc.encode_ordinary
        added = spec["added"]
        self._ids = {c: i for c, i, _ in added}
        self._raw = _alternation([c for c, _, n in added if not n])  # HF: non-normalized tokens first
        self._norm = _alternation([c for c, _, n in added if n])  # then normalized ones, in what is left
        self._prefixes = tuple(sorted({c[:2] for c, _, _ in added}))
        self.threads = max(1, threads or default_workers())
        self._pool: ThreadPoolExecutor | None = None

    def __getstate__(self):  # engines are rebuilt in worker processes, never pickled
        raise TypeError("TiktokenEngine does not pickle; build it in the worker with lcdata.tokenizer.get_engine")

    # -- added tokens, as HF's AddedVocabulary does before pre-tokenization
    def _has_added(self, text: str) -> bool:
        return any(p in text for p in self._prefixes)

    def _split_added(self, text: str) -> list[tuple[str, int | None]]:
        out: list[tuple[str, int | None]] = [(text, None)]
        for rx in (self._raw, self._norm):
            if rx is None:
                continue
            nxt = []
            for piece, tid in out:
                if tid is not None:
                    nxt.append((piece, tid))
                    continue
                pos = 0
                for mt in rx.finditer(piece):
                    if mt.start() > pos:
                        nxt.append((piece[pos:mt.start()], None))
                    nxt.append((mt.group(), self._ids[mt.group()]))
                    pos = mt.end()
                if pos < len(piece):
                    nxt.append((piece[pos:], None))
            out = nxt
        return out

    # -- batch encoding
    def _map(self, texts: list[str]) -> list[list[int]]:
        """encode_ordinary over ``texts`` on the thread pool (the Rust BPE releases the GIL), in a few
        contiguous chunks per thread (one future per text costs more than a short text's encoding)."""
        enc = self._encode
        if self.threads == 1 or len(texts) < 2:
            return [enc(t) for t in texts]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="lcdata-tiktoken")
        n_chunks = min(len(texts), self.threads * 4)
        total = sum(len(t) for t in texts) or 1
        bounds, acc, k = [0], 0, 1
        for j, t in enumerate(texts):
            acc += len(t)
            if acc >= total * k / n_chunks and j + 1 < len(texts):
                bounds.append(j + 1)
                k += 1
        bounds.append(len(texts))
        parts = self._pool.map(lambda ab: [enc(t) for t in texts[ab[0]:ab[1]]], zip(bounds, bounds[1:]))
        return [ids for p in parts for ids in p]

    def encode_lists(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text as Python lists (no special tokens added; added tokens in the text are
        split out, as HF does)."""
        if not self._prefixes:
            return self._map(texts)
        flags = [self._has_added(t) for t in texts]
        if not any(flags):
            return self._map(texts)
        items: list[str] = []
        plan: list[list[int | None]] = []  # per text: ids of its added tokens, None where an item goes
        for t, f in zip(texts, flags):
            if not f:
                items.append(t)
                plan.append([None])
                continue
            p = []
            for piece, tid in self._split_added(t):
                if tid is None:
                    items.append(piece)
                p.append(tid)
            plan.append(p)
        enc = iter(self._map(items))
        out = []
        for p in plan:
            if p == [None]:
                out.append(next(enc))
            else:
                ids: list[int] = []
                for tid in p:
                    if tid is None:
                        ids += next(enc)
                    else:
                        ids.append(tid)
                out.append(ids)
        return out

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(ids, dtype=np.int64) for ids in self.encode_lists(texts)]

    def count_batch(self, texts: list[str]) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.encode_lists(texts)), dtype=np.int64, count=len(texts))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
