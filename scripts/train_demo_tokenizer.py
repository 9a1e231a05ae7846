#!/usr/bin/env python3
"""Train the demo byte-level BPE tokenizer on the embedded demo corpus.

    python scripts/train_demo_tokenizer.py            # writes data/demo/tokenizer.json
    python scripts/train_demo_tokenizer.py --verify   # also round-trip checks every document

GPT-2 / Llama-3 style byte-level BPE (HF ``tokenizers``):

* no normalizer; ``pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)``;
* ``models.BPE`` without dropout / unk token; the initial alphabet is the full
  256-symbol ByteLevel alphabet, so every byte sequence is encodable;
* ``decoders.ByteLevel()``, so ``decode(encode(text)) == text``;
* vocab size 16384 (ids fit in ``uint16``); special tokens ``<|bos|>`` = 0,
  ``<|eos|>`` = 1, ``<|pad|>`` = 2, ``<|im_start|>`` = 3, ``<|im_end|>`` = 4;
* post-processor prepends ``<|bos|>`` when ``add_special_tokens=True``.

Training order is fixed (sources sorted, parts sorted, documents in file order).
``RAYON_NUM_THREADS`` is forced to 1 before ``tokenizers`` is imported so the
result does not depend on the machine's core count; the output is byte-identical
across runs for a given ``tokenizers`` version.
"""

from __future__ import annotations

import os

os.environ["RAYON_NUM_THREADS"] = "1"  # must precede the tokenizers import

import argparse
import json
import sys
from pathlib import Path

import zstandard
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "demo"
VOCAB_SIZE = 16384
SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]


def iter_docs(data_dir: Path):
    """Yield (source, meta, text) for every document, in a fixed order."""
    dctx = zstandard.ZstdDecompressor()
    for path in sorted(data_dir.glob("*/part-*.jsonl.zst")):
        with open(path, "rb") as fh, dctx.stream_reader(fh) as reader:
            data = reader.read()
        for line in data.decode("utf-8").splitlines():
            rec = json.loads(line)
            yield path.parent.name, rec["meta"], rec["text"]


def build_tokenizer() -> tuple[Tokenizer, trainers.BpeTrainer]:
    tok = Tokenizer(
        models.BPE(dropout=None, unk_token=None, fuse_unk=False, byte_fallback=False)
    )
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    return tok, trainer


def train(data_dir: Path) -> Tokenizer:
    tok, trainer = build_tokenizer()
    tok.train_from_iterator(
        (text for _, _, text in iter_docs(data_dir)), trainer=trainer
    )
    bos = tok.token_to_id("<|bos|>")
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="<|bos|> $A",
                pair="<|bos|> $A <|bos|>:1 $B:1",
                special_tokens=[("<|bos|>", bos)],
            ),
        ]
    )
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    return tok


def verify(tok: Tokenizer, data_dir: Path) -> None:
    """Round-trip every document and print per-source token statistics."""
    stats: dict[str, dict[str, int]] = {}
    bad = 0
    batch: list[tuple[str, str]] = []

    def flush():
        nonlocal bad
        encs = tok.encode_batch([t for _, t in batch], add_special_tokens=False)
        for (src, text), enc in zip(batch, encs):
            s = stats.setdefault(
                src, {"docs": 0, "tokens": 0, "bytes": 0, ">4K": 0, ">32K": 0}
            )
            n = len(enc.ids)
            s["docs"] += 1
            s["tokens"] += n
            s["bytes"] += len(text.encode("utf-8"))
            s[">4K"] += n > 4096
            s[">32K"] += n > 32768
            if tok.decode(enc.ids, skip_special_tokens=False) != text:
                bad += 1
        batch.clear()

    for src, _, text in iter_docs(data_dir):
        batch.append((src, text))
        if len(batch) >= 256:
            flush()
    flush()
    # BOS is prepended with add_special_tokens=True and dropped again on decode.
    enc = tok.encode("Hello world", add_special_tokens=True)
    assert enc.ids[0] == 0 and tok.decode(enc.ids) == "Hello world", enc.ids
    # Arbitrary bytes (invalid UTF-8 is impossible in str, but all code points are).
    probe = "".join(chr(c) for c in range(1, 0x800)) + "\U0001f600\x00"
    assert tok.decode(tok.encode(probe, add_special_tokens=False).ids) == probe

    total = {"docs": 0, "tokens": 0, "bytes": 0, ">4K": 0, ">32K": 0}
    print(
        f"{'source':8s}{'docs':>8s}{'MB':>8s}{'tokens':>12s}{'B/tok':>7s}{'>4K':>6s}{'>32K':>6s}"
    )
    for src in sorted(stats) + ["TOTAL"]:
        s = total if src == "TOTAL" else stats[src]
        if src != "TOTAL":
            for k in total:
                total[k] += s[k]
        print(
            f"{src:8s}{s['docs']:8d}{s['bytes'] / 1e6:8.2f}{s['tokens']:12d}"
            f"{s['bytes'] / max(s['tokens'], 1):7.2f}{s['>4K']:6d}{s['>32K']:6d}"
        )
    if bad:
        raise SystemExit(f"round-trip FAILED for {bad} documents")
    print("round-trip OK for all documents")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=DATA / "tokenizer.json")
    ap.add_argument("--verify", action="store_true", help="round-trip every document")
    args = ap.parse_args(argv)
    tok = train(args.data_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(args.out), pretty=False)
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, "
        f"vocab {tok.get_vocab_size()})",
        file=sys.stderr,
    )
    if args.verify:
        verify(Tokenizer.from_file(str(args.out)), args.data_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
