"""eval-loss: per (source, position bucket) losses equal an independent computation from the shards' own
piece table and a plain forward pass; a source made predictable has the lowest loss after training; the
comparison's deltas and flags; bad input."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from lcdata.errors import ConfigError  # noqa: E402
from lcdata.shards.reader import open_shards  # noqa: E402
from lcdata_train.checkpoint import save_hf  # noqa: E402
from lcdata_train.config import preset  # noqa: E402
from lcdata_train.eval_loss import EvalLossConfig, compare, format_table, parse_edges, run_eval_loss  # noqa: E402
from lcdata_train.infer import load_model  # noqa: E402
from lcdata_train.model import init_state_dict  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    out = []
    for seed in (0, 1):
        cfg = preset("debug", 16384, 4096).replace(init_std=0.05)
        save_hf(init_state_dict(cfg, seed), cfg, str(root / f"m{seed}"))
        out.append(str(root / f"m{seed}"))
    return out


def independent(model_dir, shards_dir, edges, doc_mask=False, n=None, position="document", seq_len=None):
    """Per (source, bucket) mean loss and token count, by hand from `pieces` and a plain forward of each window
    (of ``seq_len`` tokens; default the whole sequence): the loss of predicting token ``t + 1`` goes to its
    source, at its offset in its piece clipped to the window (``document``) or in the window (``sequence``)."""
    model, _ = load_model(model_dir, "cpu")
    s = open_shards(shards_dir)
    S = len(s[0])
    L = seq_len or S
    windows = [(i, w * L) for i in range(len(s)) for w in range(S // L)][:n]
    sums, counts = {}, {}
    for i, w0 in windows:
        tokens = np.asarray(s[i], dtype=np.int64)[w0:w0 + L]
        pieces = [(max(p["start"] - w0, 0), min(p["start"] + p["length"] - w0, L), p["source"]) for p in s.pieces(i)]
        pieces = [p for p in pieces if p[1] > p[0]]
        runs = [(a, b) for a, b, _ in pieces] if doc_mask else [(0, L)]  # doc_mask: each piece alone
        for a, b in runs:
            with torch.no_grad():
                logits = model(torch.from_numpy(tokens[a:b])[None])[0].double()
            lp = torch.log_softmax(logits, -1)
            for t in range(a, b - 1):
                owner = [p for p in pieces if p[0] <= t + 1 < p[1]]
                here = [p for p in pieces if p[0] <= t < p[1]]
                if not owner or not here:
                    continue  # padding on either side is never scored
                lo, _, source = owner[0]
                pos = t + 1 - lo if position == "document" else t + 1
                key = (source, max(e for e in edges if e <= pos))
                sums[key] = sums.get(key, 0.0) - float(lp[t - a, tokens[t + 1]])
                counts[key] = counts.get(key, 0) + 1
    return {k: sums[k] / counts[k] for k in sums}, counts


def check_against_independent(losses, want, counts):
    got = {(r["source"], r["bucket_min"]): r for r in losses.filter(pl.col("source") != "ALL").iter_rows(named=True)}
    for key, loss in want.items():
        assert got[key]["n_tokens"] == counts[key]
        assert got[key]["loss"] == pytest.approx(loss, rel=1e-4)
    assert sum(r["n_tokens"] for r in got.values()) == sum(counts.values())
    all_rows = losses.filter(pl.col("source") == "ALL")
    assert all_rows["n_tokens"].sum() == sum(counts.values())


@pytest.mark.parametrize("doc_mask,position,seq_len", [(False, "document", None), (True, "document", None),
                                                       (False, "sequence", None), (False, "sequence", 128),
                                                       (False, "document", 128)])
def test_losses_equal_an_independent_computation(train_shards, models, doc_mask, position, seq_len):
    edges = (0, 32, 128) if seq_len is None else (0, 32, 96)
    losses, cmp = run_eval_loss(EvalLossConfig(models=(models[0],), shards=train_shards, position_buckets=edges,
                                               doc_mask=doc_mask, position=position, seq_len=seq_len, max_sequences=6,
                                               device="cpu", quiet=True))
    assert cmp is None and losses["position"].unique().to_list() == [position]
    want, counts = independent(models[0], train_shards, edges, doc_mask, n=6, position=position, seq_len=seq_len)
    check_against_independent(losses, want, counts)


def test_a_short_document_source_has_long_positions_only_by_sequence(train_shards, models, tmp_path):
    """web's documents in the first 10 sequences are all shorter than the high edge: no web token sits at a
    document position past it, while by sequence position web fills the high bucket; the same tokens are
    scored either way, each output names its definition, and both equal the hand computation."""
    import json

    n = 10
    s = open_shards(train_shards)
    edge = max(p["length"] for i in range(n) for p in s.pieces(i) if p["source"] == "web")
    assert edge < 256 - 16  # the fixture's precondition: room for web tokens at window positions >= edge
    edges = (0, edge)
    got = {}
    for position in ("document", "sequence"):
        out = tmp_path / position
        losses, _ = run_eval_loss(EvalLossConfig(models=(models[0], models[1]), labels=("a", "b"), shards=train_shards,
                                                 position_buckets=edges, position=position, max_sequences=n,
                                                 device="cpu", quiet=True, out=str(out)))
        want, counts = independent(models[0], train_shards, edges, n=n, position=position)
        check_against_independent(losses.filter(pl.col("model") == "a"), want, counts)
        assert pl.read_parquet(out / "loss.parquet")["position"].unique().to_list() == [position]
        assert pl.read_parquet(out / "compare.parquet")["position"].unique().to_list() == [position]
        doc = json.loads((out / "loss.json").read_text())
        assert doc["position"] == doc["config"]["position"] == position
        assert format_table(losses).splitlines()[0].startswith(f"loss (nats) per source and position bucket; "
                                                               f"position = {position} (")
        got[position] = {(r["source"], r["bucket_min"]): r for r in losses.filter(pl.col("model") == "a")
                         .iter_rows(named=True)}
    doc, seq = got["document"], got["sequence"]
    assert doc[("web", edge)]["n_tokens"] == 0 and doc[("web", edge)]["loss"] is None
    assert seq[("web", edge)]["n_tokens"] > 100 and seq[("web", edge)]["loss"] is not None
    for source in ("web", "code", "ALL"):
        assert sum(doc[(source, b)]["n_tokens"] for b in edges) == sum(seq[(source, b)]["n_tokens"] for b in edges)


def test_compare_flags_deltas_above_the_threshold(train_shards, models, tmp_path):
    losses, cmp = run_eval_loss(EvalLossConfig(models=(models[0], models[0], models[1]), labels=("a", "a2", "b"),
                                               shards=train_shards, max_sequences=3, device="cpu", quiet=True,
                                               out=str(tmp_path / "ev")))
    same = cmp.filter(pl.col("model") == "a2")
    assert (same["delta"].abs() < 1e-9).all() and not same["flag"].any()
    other = cmp.filter(pl.col("model") == "b")
    base = losses.filter(pl.col("model") == "a")
    b = losses.filter(pl.col("model") == "b")
    for r in other.iter_rows(named=True):
        lo = base.filter((pl.col("source") == r["source"]) & (pl.col("bucket_min") == r["bucket_min"]))["loss"][0]
        hi = b.filter((pl.col("source") == r["source"]) & (pl.col("bucket_min") == r["bucket_min"]))["loss"][0]
        if lo is None:
            continue
        assert r["delta"] == pytest.approx(hi - lo)
        assert r["flag"] == (abs(hi - lo) > 0.01)
    assert (tmp_path / "ev" / "compare.parquet").exists() and (tmp_path / "ev" / "loss.json").exists()
    table = format_table(losses, cmp)
    assert "delta vs a" in table and "0-4K" in table and ">=4K" in table


def test_bad_input(train_shards, models):
    with pytest.raises(ConfigError, match="must start at 0"):
        parse_edges("10,4096")
    with pytest.raises(ConfigError, match="one per model"):
        EvalLossConfig(models=(models[0],), labels=("a", "b"), shards=train_shards)
    with pytest.raises(ConfigError, match="position='token' must be one of document, sequence"):
        EvalLossConfig(models=(models[0],), shards=train_shards, position="token")
    with pytest.raises(ConfigError, match="position='sequence' with doc_mask"):
        EvalLossConfig(models=(models[0],), shards=train_shards, position="sequence", doc_mask=True)
    small = preset("debug", 1000, 4096)
    with pytest.raises(ConfigError, match="vocabulary"):
        import tempfile

        d = tempfile.mkdtemp()
        save_hf(init_state_dict(small, 0), small, d)
        run_eval_loss(EvalLossConfig(models=(d,), shards=train_shards, max_sequences=1, device="cpu", quiet=True))
    with pytest.raises(ConfigError, match="seq_len"):
        run_eval_loss(EvalLossConfig(models=(models[0],), shards=train_shards, seq_len=100000, device="cpu"))


def test_compare_is_pure_on_frames():
    f = pl.DataFrame({"model": ["x", "x", "y", "y"], "source": ["s", "s", "s", "s"], "position": ["sequence"] * 4,
                      "bucket_min": [0, 4096, 0, 4096],
                      "bucket_max": [4096, None, 4096, None], "n_tokens": [10, 10, 10, 10],
                      "loss": [2.0, 1.5, 2.005, 1.4]})
    c = compare(f)
    assert c["delta"].to_list() == pytest.approx([0.005, -0.1])
    assert c["flag"].to_list() == [False, True] and c["position"].to_list() == ["sequence"] * 2


def test_a_predictable_source_has_the_lowest_loss(tmp_path):
    """Two sources, one made predictable (every document is the same passage of Jane Austen, memorised in
    training), one not (unseen real web texts): after a short training run, eval-loss on held-out documents
    ranks the predictable source lowest at every position bucket, by a wide margin."""
    import json

    import zstandard
    from test_needle import train_small_tokenizer

    from lcdata.build import BuildConfig, run_build
    from lcdata.corpus import ReadConfig
    from lcdata_train.config import TrainConfig
    from lcdata_train.train import train

    demo = Path(__file__).resolve().parents[2] / "data" / "demo"

    def lines(p):
        return zstandard.ZstdDecompressor().decompress(p.read_bytes()).decode().splitlines()

    book = json.loads(lines(demo / "books" / "part-000.jsonl.zst")[0])["text"]
    passage = book[5000:7000]
    web = [json.loads(ln)["text"] for ln in lines(demo / "web" / "part-000.jsonl.zst")]
    web = [t for t in web if 300 < len(t) < 3000]
    for split, n, offset in (("train", 60, 0), ("heldout", 8, 500)):
        for src, texts in (("predictable", [passage] * n), ("web", web[offset: offset + 4 * n])):
            d = tmp_path / split / src
            d.mkdir(parents=True)
            (d / "part-000.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    tok = train_small_tokenizer(tmp_path / "train", tmp_path / "tokenizer.json", 512)
    rd = ReadConfig(source_from_path=True)
    for split in ("train", "heldout"):
        run_build([str(tmp_path / split)], str(tmp_path / f"{split}-shards"),
                  BuildConfig(tokenizer=tok, seq_len=512, read=rd), workers=1)
    train(TrainConfig(shards=str(tmp_path / "train-shards"), out=str(tmp_path / "run"), model="debug", lr=3e-3,
                      batch_tokens=2048, micro_batch=4, tokens=2048 * 120, save_every=0, act_ckpt=False, quiet=True))
    losses, _ = run_eval_loss(EvalLossConfig(models=(str(tmp_path / "run"),), shards=str(tmp_path / "heldout-shards"),
                                             position_buckets=(0, 128), device="cpu", quiet=True))
    by = {(r["source"], r["bucket_min"]): r["loss"] for r in losses.iter_rows(named=True)}
    for b in (0, 128):
        assert by[("predictable", b)] + 1.0 < by[("web", b)], by


def test_report_names_the_position(tmp_path):
    """report.md's eval-loss section says which position the buckets count, from loss.json; a loss.json from
    before `--position` existed counted document positions."""
    import json

    from lcdata.report import eval_loss_section

    (tmp_path / "eval-loss").mkdir()
    pl.DataFrame({"model": ["m"] * 2, "source": ["s"] * 2, "bucket_min": [0, 4096], "bucket_max": [4096, None],
                  "n_tokens": [5, 5], "loss": [2.0, 1.0]}).write_parquet(tmp_path / "eval-loss" / "loss.parquet")
    for doc, want in (({"config": {}}, "Position = `document`: a token's offset in its own document"),
                      ({"position": "sequence", "position_means": "in the window"}, "Position = `sequence`: in the window")):
        (tmp_path / "eval-loss" / "loss.json").write_text(json.dumps(doc))
        assert any(line.startswith(want) for line in eval_loss_section(str(tmp_path))), want


def test_units_sum_to_the_losses_and_the_unigram_model_equals_a_hand_count(train_shards, models, tmp_path):
    """units.parquet (per window, source, bucket) sums exactly to loss.parquet; `unigram:SHARDS` scores the same
    tokens with -log((count + 1) / (N + V)), counts taken by hand from the piece table (padding excluded)."""
    from collections import Counter

    edges = (0, 32, 128)
    out = tmp_path / "el"
    losses, _ = run_eval_loss(EvalLossConfig(models=(models[0], f"unigram:{train_shards}"), shards=train_shards,
                                             position_buckets=edges, max_sequences=8, device="cpu", quiet=True,
                                             out=str(out)))
    assert losses["model"].unique(maintain_order=True).to_list() == ["m0", "unigram:shards"]
    units = pl.read_parquet(out / "units.parquet")
    agg = units.group_by("model", "source", "bucket_min").agg(pl.col("n_tokens").sum(), pl.col("loss_sum").sum())
    for r in losses.filter((pl.col("source") != "ALL") & (pl.col("n_tokens") > 0)).iter_rows(named=True):
        u = agg.filter((pl.col("model") == r["model"]) & (pl.col("source") == r["source"])
                       & (pl.col("bucket_min") == r["bucket_min"])).row(0, named=True)
        assert u["n_tokens"] == r["n_tokens"] and u["loss_sum"] / u["n_tokens"] == pytest.approx(r["loss"], rel=1e-12)
    # the unigram model by hand
    s = open_shards(train_shards)
    counts = Counter()
    for i in range(len(s)):
        row = np.asarray(s[i])
        for p in s.pieces(i):
            counts.update(row[p["start"]: p["start"] + p["length"]].tolist())
    V = max(s.manifest["tokenizer"]["vocab_size"], s.manifest["tokenizer"]["max_id"] + 1)
    N = sum(counts.values())
    _, hand_counts = independent(models[0], train_shards, edges, n=8)
    sums = {}
    for i in range(8):
        row = np.asarray(s[i], dtype=np.int64)
        owner = {t: p for p in s.pieces(i) for t in range(p["start"], p["start"] + p["length"])}
        for t in range(1, len(row)):
            if t in owner and t - 1 in owner:  # as the model: token t is scored when it and t - 1 are not padding
                p = owner[t]
                key = (p["source"], max(e for e in edges if e <= t - p["start"]))
                sums[key] = sums.get(key, 0.0) - np.log((counts[int(row[t])] + 1) / (N + V))
    got = {(r["source"], r["bucket_min"]): r for r in losses.filter(pl.col("model") == "unigram:shards")
           .iter_rows(named=True)}
    for key, total in sums.items():
        assert got[key]["n_tokens"] == hand_counts[key]
        assert got[key]["loss"] == pytest.approx(total / hand_counts[key], rel=1e-9)


def test_ablation_report_gives_intervals_marks_noise_and_shows_the_unigram(train_shards, models, tmp_path):
    """`lcdata report --ablation` on a real eval-loss of a two-seed layout: a strategy whose runs are the
    baseline's own models differs by exactly 0 ("not significant"), one whose runs are another model differs
    significantly in every cell; the unigram rows, the seeds and the scorer-free needle-less page are there."""
    from lcdata.cli import main
    from lcdata.report.noise import run_label

    d = tmp_path / "abl"
    runs = {("natural", 0): models[0], ("natural", 1): models[0], ("same", 0): models[0], ("same", 1): models[0],
            ("other", 0): models[1], ("other", 1): models[1]}
    for s, k in runs:
        (d / s / f"seed-{k}").mkdir(parents=True)
    labels = [run_label(s, k) for s, k in runs] + [run_label(s, k, True) for s, k in runs]
    run_eval_loss(EvalLossConfig(models=tuple(runs.values()) + (f"unigram:{train_shards}",) * len(runs),
                                 labels=tuple(labels), shards=train_shards, position_buckets=(0, 64),
                                 max_sequences=12, device="cpu", quiet=True, out=str(d / "eval-loss")))
    assert main(["report", str(d), "--ablation", "natural", "same", "other"]) == 0
    text = (d / "report.md").read_text()
    assert "Seeds: 0, 1" in text and str(tmp_path) not in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| same ") or ln.startswith("| other ")]
    same = [ln for ln in rows if ln.startswith("| same ")]
    other = [ln for ln in rows if ln.startswith("| other ")]
    assert same and all("not significant" in ln and "+0.0000" in ln for ln in same)
    assert other and all("| significant" in ln for ln in other if "| ALL " in ln)  # 1,940 and 1,120 tokens
    assert "Summary: " in text and "unigram" in text
    # --seeds reads a subset; one seed says its intervals carry held-out noise only
    assert main(["report", str(d), "--ablation", "natural", "other", "--seeds", "0"]) == 0
    assert "**One seed**" in (d / "report.md").read_text()
