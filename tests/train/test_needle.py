"""Needle in a haystack: placement on real text (depth -> token position, sentence boundary, exact length),
scoring on hand-made outputs, the KV-cache decoder against plain argmax decoding, teacher-forced scoring
against an independent computation, outputs and CLI, bad input; and a debug model trained here on passkey
documents scores clearly above an untrained one."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from lcdata.errors import ConfigError  # noqa: E402
from lcdata.tokenizer.hf import load_tokenizer  # noqa: E402
from lcdata_train import needle as N  # noqa: E402
from lcdata_train.checkpoint import save_hf  # noqa: E402
from lcdata_train.config import preset  # noqa: E402
from lcdata_train.infer import greedy_generate, load_model, teacher_forced  # noqa: E402
from lcdata_train.model import init_state_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOK = str(ROOT / "data" / "demo" / "tokenizer.json")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TOK)


@pytest.fixture(scope="module")
def hay(tok):
    """The default haystack (the demo corpus's books), 20K tokens of it."""
    return N.haystack_ids(tok, N.haystack_texts(N.default_haystack()), 20000)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> str:
    """An untrained debug model saved as a Hugging Face folder with its tokenizer."""
    d = tmp_path_factory.mktemp("untrained") / "model"
    cfg = preset("debug", 16384, 4096)
    save_hf(init_state_dict(cfg, 0), cfg, str(d))
    shutil.copy(TOK, d / "tokenizer.json")
    return str(d)


def test_grid_parsing_matches_the_papers_linspace():
    lengths = N.parse_grid("1000:128000:40", True)
    assert len(lengths) == 40 and lengths[0] == 1000 and lengths[-1] == 128000
    assert list(lengths) == [int(round(x)) for x in np.linspace(1000, 128000, 40)]
    depths = N.parse_grid("0:100:10", True)
    assert depths == (0, 11, 22, 33, 44, 56, 67, 78, 89, 100)
    assert N.parse_grid("500,1000", True) == (500, 1000)
    with pytest.raises(ConfigError, match="START:STOP:COUNT"):
        N.parse_grid("1000:x:4", True)


def test_recall_score_on_hand_made_outputs():
    ans = N.PAPER_ANSWER
    assert N.recall_score("Eat a sandwich and sit in Dolores Park on a sunny day.", ans) == 100.0
    assert N.recall_score("EAT A SANDWICH, and SIT in dolores-park on a sunny day!!", ans) == 100.0
    # 12 answer words, each occurrence counted: eat, a, sandwich and the second 'a' are found
    got = N.recall_score("I would eat a sandwich", ans)
    assert got == pytest.approx(100 * 4 / 12)
    assert N.recall_score("", ans) == 0.0
    assert N.recall_score("The pass key is 71432", "71432") == 100.0
    assert N.recall_score("The pass key is 71431", "71432") == 0.0


def paper_formula(response: str) -> float:
    """The paper's eval/needle/visualize.py, written out: its expected answer, lower-cased raw words."""
    expected_answer = "eat a sandwich and sit in Dolores Park on a sunny day.".lower().split()
    return len(set(response.lower().split()).intersection(set(expected_answer))) / len(expected_answer)


@pytest.mark.parametrize("response", [
    "eat a sandwich and sit in Dolores Park on a sunny day.",       # perfect: 11/12 = 91.7 (the final period)
    "Eat a sandwich and sit in Dolores Park on a sunny day",        # no period: 10/12 = 83.3
    "eat a sandwich and sit in Dolores Park on a sunny day. The",
    "EAT A SANDWICH, and SIT in dolores-park on a sunny day!!",     # punctuation stays on the words
    "I would eat a sandwich", "", "day. day. day.",
])
def test_paper_scorer_is_the_papers_formula(response):
    assert N.paper_score(response, N.PAPER_EXPECTED) == pytest.approx(100 * paper_formula(response))
    assert N.score_output("paper", response, N.PAPER_EXPECTED) == pytest.approx(100 * paper_formula(response))


def test_paper_scorer_ceiling_and_the_words_scorer():
    perfect = "eat a sandwich and sit in Dolores Park on a sunny day."
    assert N.paper_score(perfect, N.PAPER_EXPECTED) == pytest.approx(100 * 11 / 12)   # 91.7
    assert round(N.paper_score(perfect.rstrip("."), N.PAPER_EXPECTED), 1) == 83.3
    assert N.score_output("words", perfect, N.PAPER_EXPECTED) == 100.0
    # the default scorer: paper for the paper's test, words for anything else, exact when teacher-forced
    assert N.NeedleConfig(model="m", out="o").scoring == "paper"
    assert N.NeedleConfig(model="m", out="o", template="{context} Q: {question}").scoring == "words"
    assert N.NeedleConfig(model="m", out="o", needle="The cat is Tom.", answer="Tom", question="Cat?").scoring == "words"
    assert N.NeedleConfig(model="m", out="o", task="passkey").scoring == "words"
    assert N.NeedleConfig(model="m", out="o", mode="teacher-forced").scoring == "exact"
    assert N.NeedleConfig(model="m", out="o", task="passkey", scoring="paper").scoring == "paper"
    with pytest.raises(ConfigError, match="does not fit mode"):
        N.NeedleConfig(model="m", out="o", mode="teacher-forced", scoring="paper")
    with pytest.raises(ConfigError, match="scoring"):
        N.NeedleConfig(model="m", out="o", scoring="rouge")


@pytest.mark.parametrize("depth", [0, 11, 33, 50, 89, 100])
@pytest.mark.parametrize("budget", [300, 1800, 7800])
def test_needle_placement_on_real_text(tok, hay, depth, budget):
    boundary = N.boundary_mask(tok)
    needle = np.asarray(tok.encode("\n" + N.PAPER_NEEDLE + "\n", add_special_tokens=False).ids)
    ctx, starts = N.place_needles(hay, [needle], [depth], budget, boundary)
    assert len(ctx) == budget                                    # the context is exactly L - reserve tokens
    s = starts[0]
    assert np.array_equal(ctx[s: s + len(needle)], needle)        # the needle is there, whole
    kept = hay[: budget - len(needle)]
    assert np.array_equal(np.concatenate([ctx[:s], ctx[s + len(needle):]]), kept)  # haystack order kept
    if depth == 100:
        assert s == len(kept)
        return
    point = int(len(kept) * depth / 100)
    assert s <= point
    if s > 0:  # just after a sentence end, and the closest one before the depth point
        assert tok.decode([int(ctx[s - 1])]).rstrip().rstrip("\"')]}\u201d\u2019").endswith((".", "!", "?"))
    assert not boundary[kept[s:point]].any()


@pytest.mark.parametrize("depth", [0, 50, 100])
@pytest.mark.parametrize("bos_mode", ["once", "paper", "none"])
def test_bos_goes_where_each_option_says(tok, hay, bos_mode, depth):
    from lcdata.tokenizer import BOS_NAMES, find_special

    bos = find_special(tok, BOS_NAMES)
    assert bos is not None and not (hay == bos).any()
    cfg = N.NeedleConfig(model="m", out="o", bos=bos_mode)
    (p,) = N.cell_prompts(cfg, tok, hay, N.boundary_mask(tok), bos, 1200, depth)
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731
    head, tail = N.split_template(N.PAPER_TEMPLATE, N.PAPER_QUESTION)
    needle = enc("\n" + N.PAPER_NEEDLE + "\n")
    ids = p.ids.tolist()
    assert p.context_tokens == 1000 and len(ids) == p.context + 1000 + len(enc(tail))  # context: L - reserve
    at = sorted(i for i, x in enumerate(ids) if x == bos)
    ctx, npos = p.context, p.context + p.needle_pos
    if bos_mode == "none":
        assert at == [] and ids[:ctx] == enc(head)
        assert ids[npos: npos + len(needle)] == needle
    elif bos_mode == "once":
        assert at == [0] and ids[1:ctx] == enc(head)
        assert ids[npos: npos + len(needle)] == needle
    else:  # the prompt's start, the context's first id (after a needle at depth 0, as in the paper) and the needle
        ctx_bos = ctx + len(needle) + 1 if depth == 0 else ctx
        assert at == sorted({0, ctx_bos, npos}) and len(at) == 3
        assert ids[1:ctx] == enc(head) and ids[npos + 1: npos + 1 + len(needle)] == needle
        assert (depth == 100) == (npos + 1 + len(needle) == ctx + 1000)  # at 100% the needle closes the context
    assert ids[ctx + 1000:] == enc(tail)
    with pytest.raises(ConfigError, match="bos"):
        N.NeedleConfig(model="m", out="o", bos="twice")


def test_multi_needles_spread_over_the_rest_of_the_context(tok, hay):
    cfg = N.NeedleConfig(model="m", out="o", task="multi", n_needles=4)
    needles = N.cell_needles(cfg, 4000, 20)
    assert [n.depth for n in needles] == [20, 40, 60, 80]
    assert len({n.answer for n in needles}) == 4 and all(n.answer in n.text for n in needles)
    assert N.cell_needles(cfg, 4000, 20) == needles          # same seed, same cell: same needles
    ids = [np.asarray(tok.encode(n.text, add_special_tokens=False).ids) for n in needles]
    ctx, starts = N.place_needles(hay, ids, [n.depth for n in needles], 3800, N.boundary_mask(tok))
    assert len(ctx) == 3800 and starts == sorted(starts)
    for s, x in zip(starts, ids):
        assert np.array_equal(ctx[s: s + len(x)], x)


def test_kv_cache_decoding_equals_plain_argmax_decoding(tmp_path):
    cfg = preset("debug", 16384, 4096).replace(init_std=0.3, n_layers=3)
    save_hf(init_state_dict(cfg, 3), cfg, str(tmp_path / "m"))
    model, _ = load_model(str(tmp_path / "m"), "cpu")
    prompt = np.random.default_rng(0).integers(0, 16000, 200)
    fast = greedy_generate(model, prompt, 24)
    ids, slow = list(prompt), []
    with torch.no_grad():
        for _ in range(24):
            slow.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
            ids.append(slow[-1])
    assert fast == slow and len(set(fast)) > 3


def test_teacher_forced_matches_an_independent_forward(untrained):
    model, _ = load_model(untrained, "cpu")
    rng = np.random.default_rng(1)
    prompt, answer = rng.integers(0, 16000, 120), rng.integers(0, 16000, 7)
    r = teacher_forced(model, prompt, answer)
    with torch.no_grad():
        logits = model(torch.from_numpy(np.concatenate([prompt, answer]))[None])[0]
    lp = torch.log_softmax(logits[len(prompt) - 1: -1].double(), -1)
    want = float(lp[torch.arange(7), torch.as_tensor(answer)].sum())
    assert r["logprob"] == pytest.approx(want, rel=1e-4)
    pred = logits[len(prompt) - 1: -1].argmax(-1)
    assert r["predicted"] == pred.tolist()
    assert r["exact"] == bool((pred == torch.as_tensor(answer)).all())
    # the answer the model itself predicts is an exact match
    r2 = teacher_forced(model, prompt, np.asarray(pred[:1]))
    assert r2["exact"] and r2["token_acc"] == 1.0


def test_run_writes_results_heatmap_and_exact_lengths(untrained, tmp_path):
    out = tmp_path / "needle"
    res = N.run_needle(N.NeedleConfig(model=untrained, out=str(out), lengths=(400, 900), depths=(0, 50, 100),
                                      mode="generate", max_new_tokens=4, quiet=True, device="cpu"))
    assert res.height == 6
    assert (res["context_tokens"] == res["length"] - 200).all()
    assert (res["prompt_tokens"] <= res["length"]).all()
    summary = json.loads((out / "results.json").read_text())
    assert summary["average_score"] == pytest.approx(float(res["score"].mean()))
    # the scorer is named in every result: results.json, each parquet row, the heatmap's title
    assert summary["scoring"] == summary["config"]["scoring"] == "paper"
    assert (res["scoring"] == "paper").all()
    assert "scoring paper" in summary["heatmaps"]["heatmap.png"]
    assert res["answer"][0] == N.PAPER_EXPECTED and (res["bos"] == "once").all()
    # an untrained model scores the same (0) in every cell: the answer's teacher-forced log-prob is plotted too
    assert N.is_flat(res) and summary["average_score"] == 0.0
    assert summary["logprob_heatmap"] == "heatmap_logprob.png"
    assert (out / "heatmap_logprob.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "every cell scored 0.0" in summary["heatmaps"]["heatmap_logprob.png"]
    assert "log-prob per token (teacher-forced" in summary["heatmaps"]["heatmap_logprob.png"]
    assert "see heatmap_logprob.png" in summary["heatmaps"]["heatmap.png"]
    cells = {(c["length"], c["depth"]): c["answer_logprob"] for c in summary["cells"]}
    assert len(set(cells.values())) == 6                          # it separates the cells the score cannot
    model, _ = load_model(untrained, "cpu")                       # one cell, computed independently
    tk = load_tokenizer(os.path.join(untrained, "tokenizer.json"))
    hay = N.haystack_ids(tk, N.haystack_texts(N.default_haystack()), 900)
    from lcdata.tokenizer import BOS_NAMES, find_special
    (p,) = N.cell_prompts(N.NeedleConfig(model="m", out="o"), tk, hay, N.boundary_mask(tk),
                          find_special(tk, BOS_NAMES), 900, 50)
    target = tk.encode(" " + N.PAPER_ANSWER, add_special_tokens=False).ids
    with torch.no_grad():
        logits = model(torch.tensor([p.ids.tolist() + target]))[0]
    lp = torch.log_softmax(logits[len(p.ids) - 1: -1].double(), -1)[torch.arange(len(target)), torch.tensor(target)]
    assert cells[(900, 50)] == pytest.approx(float(lp.mean()), rel=1e-4)
    assert len(summary["cells"]) == 6 and summary["tokenizer"].endswith("tokenizer.json")
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "results.parquet").exists()
    # the output folder's rules (lcdata.util.outdir): a second run is refused, --overwrite replaces only its own files,
    # and the model's folder is never an output
    cfg = dict(model=untrained, lengths=(400,), depths=(50,), mode="teacher-forced", quiet=True, device="cpu")
    with pytest.raises(ConfigError, match="pass --overwrite"):
        N.run_needle(N.NeedleConfig(out=str(out), **cfg))
    (out / "mine.txt").write_text("keep")
    with pytest.raises(ConfigError, match="mine.txt"):
        N.run_needle(N.NeedleConfig(out=str(out), overwrite=True, **cfg))
    (out / "mine.txt").unlink()
    assert N.run_needle(N.NeedleConfig(out=str(out), overwrite=True, **cfg)).height == 1
    for bad in (untrained, os.path.join(untrained, "needle")):
        with pytest.raises(ConfigError, match="the model|inside the input folder"):
            N.run_needle(N.NeedleConfig(out=bad, **cfg))
    assert not os.path.exists(os.path.join(untrained, "needle"))


def test_is_flat_on_hand_made_results():
    import polars as pl

    res = pl.DataFrame({"length": [400, 400, 900, 900], "depth": [0, 50, 0, 50], "score": [0.0, 0.0, 0.0, 0.0]})
    assert N.is_flat(res)
    assert not N.is_flat(res.with_columns(score=pl.Series([0.0, 0.0, 0.0, 91.7])))
    # a cell is the mean over its needles (multi): equal means are flat
    two = pl.DataFrame({"length": [400, 400, 900, 900], "depth": [0, 0, 0, 0], "score": [0.0, 100.0, 50.0, 50.0]})
    assert N.is_flat(two)


def test_bad_input_is_refused_with_the_value():
    with pytest.raises(ConfigError, match="reserved"):
        N.NeedleConfig(model="m", out="o", lengths=(150,))
    with pytest.raises(ConfigError, match=r"\{context\}"):
        N.NeedleConfig(model="m", out="o", template="no placeholder {question}")
    with pytest.raises(ConfigError, match="depths"):
        N.NeedleConfig(model="m", out="o", depths=(0, 120))
    with pytest.raises(ConfigError, match="task"):
        N.NeedleConfig(model="m", out="o", task="haystack")
    with pytest.raises(ConfigError, match="other field"):
        N.NeedleConfig(model="m", out="o", template="{context} {question} {answer}")
    with pytest.raises(ConfigError, match="--answer"):
        N.NeedleConfig(model="m", out="o", needle="The cat is called Tom.")
    with pytest.raises(ConfigError, match="key"):
        N.NeedleConfig(model="m", out="o", task="passkey", needle="The pass key is secret.")


def test_template_fields_fill_both_sides_of_the_context():
    head, tail = N.split_template("Q: {question} <doc>{context}</doc> again: {question} {{literal}}", "Why?")
    assert head == "Q: Why? <doc>" and tail == "</doc> again: Why? {literal}"


def test_a_prompt_that_does_not_fit_the_reserve_is_refused(untrained, tmp_path):
    with pytest.raises(ConfigError, match="--reserve"):
        N.run_needle(N.NeedleConfig(model=untrained, out=str(tmp_path / "o"), lengths=(300,), depths=(50,),
                                    reserve=20, quiet=True, device="cpu"))


def test_cli_reports_a_missing_model_clearly(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lcdata.cli", "needle", "--model", str(tmp_path / "nope"), "--out",
                        str(tmp_path / "o"), "--tokenizer", TOK], capture_output=True, text=True)
    assert r.returncode == 2 and "is not a model" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------ a model that learned to retrieve


def passkey_corpus(folder: Path, n: int, seed: int) -> None:
    """Passkey documents in the evaluation's own format: filler sentences with the key sentence at a random
    place, then the question and the key."""
    rng = np.random.default_rng(seed)
    sents = [s.strip() + "." for s in N.PASSKEY_FILLER.split(".") if s.strip()]
    docs = []
    for _ in range(n):
        k, key = int(rng.integers(2, 12)), str(int(rng.integers(10000, 100000)))
        ctx = [sents[j % len(sents)] for j in range(k)]
        ctx.insert(int(rng.integers(0, k + 1)), f"The pass key is {key}. Remember it. {key} is the pass key.")
        text = N.PASSKEY_TEMPLATE.format(context=" " + " ".join(ctx), question="What is the pass key? The pass key is")
        docs.append(json.dumps({"text": text + " " + key}))
    (folder / "passkey").mkdir(parents=True)
    (folder / "passkey" / "part-000.jsonl").write_text("\n".join(docs) + "\n")


def train_small_tokenizer(corpus: Path, path: Path, vocab: int) -> str:
    """A byte-level BPE (the demo tokenizer's recipe: scripts/train_demo_tokenizer.py) of ``vocab`` ids trained
    on ``corpus``: a small vocabulary keeps the output layer, the cost of a CPU training step, small."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|bos|>", "<|eos|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    texts = [json.loads(ln)["text"] for f in sorted(corpus.rglob("*.jsonl")) for ln in f.read_text().splitlines()]
    tok.train_from_iterator(texts, trainer=trainer)
    tok.save(str(path))
    return str(path)


def test_a_model_trained_on_passkeys_scores_above_an_untrained_one(tmp_path):
    """Trained here for ~0.6M tokens on passkey documents (CPU, about half a minute): in teacher-forced mode
    its answer log-probability and token accuracy are far above the same architecture untrained."""
    from lcdata.build import BuildConfig, run_build
    from lcdata.corpus import ReadConfig
    from lcdata_train.config import TrainConfig
    from lcdata_train.train import train

    passkey_corpus(tmp_path / "corpus", 1500, seed=1)
    tok = train_small_tokenizer(tmp_path / "corpus", tmp_path / "tokenizer.json", 384)
    run_build([str(tmp_path / "corpus")], str(tmp_path / "shards"),
              BuildConfig(tokenizer=tok, seq_len=512, packing="best-fit", read=ReadConfig(source_from_path=True)),
              workers=1)
    res = train(TrainConfig(shards=str(tmp_path / "shards"), out=str(tmp_path / "run"), model="debug", lr=3e-3,
                            batch_tokens=2048, micro_batch=4, tokens=2048 * 300, schedule="cosine", warmup_steps=20,
                            doc_mask=True, save_every=0, act_ckpt=False, quiet=True))
    assert (tmp_path / "run" / "final" / "tokenizer.json").exists()  # saved beside the model from the manifest
    m, _ = load_model(str(tmp_path / "run"), "cpu")
    save_hf(init_state_dict(m.cfg, 0), m.cfg, str(tmp_path / "untrained"))
    scores = {}
    for name in ("run", "untrained"):
        r = N.run_needle(N.NeedleConfig(model=str(tmp_path / name), out=str(tmp_path / f"needle-{name}"), tokenizer=tok,
                                        task="passkey", mode="teacher-forced", lengths=(200, 300),
                                        depths=(0, 50, 100), reserve=64, quiet=True, device="cpu"))
        scores[name] = (float(r["logprob"].mean()), float(r["token_acc"].mean()))
    assert res.losses[-1] < 1.0 < res.losses[0]
    assert scores["run"][0] > scores["untrained"][0] + 10   # nats: measured about -11.5 vs -35.6
    assert scores["run"][1] > scores["untrained"][1] + 0.1  # measured about 0.22 vs 0.03
