"""docs/interop.md's recipes, run as written: the page's code blocks are executed (in a temp folder holding a
small shard folder at out/demo/shards, built with `run_build` from the demo corpus) and what they produce is
checked against the shards: every sequence once, padding not scored, ranks disjoint and together complete, a
resumed position giving the uninterrupted run's batches, a Hugging Face model computing a loss on the items,
and the `Trainer` recipe taking its steps (where `accelerate`, which `Trainer` requires, is installed)."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lcdata.build import BuildConfig, run_build  # noqa: E402
from lcdata.shards import open_shards  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")
DOC = Path(__file__).resolve().parents[2] / "docs" / "interop.md"


def blocks(section: str) -> list[str]:
    """The ```python blocks of the page's ``## section``."""
    text = DOC.read_text()
    part = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", part, flags=re.S)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, demo_dir, tokenizer_path) -> Path:
    """A folder holding out/demo/shards: best-fit at 128 tokens (padding and cut documents) of 40 web documents
    and one code file."""
    import zstandard

    root = tmp_path_factory.mktemp("interop")
    corpus = root / "corpus"
    (corpus / "web").mkdir(parents=True)
    lines = zstandard.ZstdDecompressor().decompress((demo_dir / "web" / "part-000.jsonl.zst").read_bytes())
    (corpus / "web" / "part-000.jsonl").write_bytes(b"\n".join(lines.splitlines()[:40]) + b"\n")
    (corpus / "code").mkdir()
    shutil.copy(demo_dir / "code" / "part-000.jsonl.zst", corpus / "code")
    run_build([str(corpus)], str(root / "out" / "demo" / "shards"),
              BuildConfig(tokenizer=tokenizer_path, seq_len=128, packing="best-fit", shard_tokens=128 * 64), workers=1)
    return root


def run_blocks(code: list[str], cwd: Path, monkeypatch, ns: dict | None = None) -> dict:
    monkeypatch.chdir(cwd)
    ns = {} if ns is None else ns
    for c in code:
        exec(compile(c, str(DOC), "exec"), ns)
    return ns


def test_dataloader_recipe(workdir, monkeypatch):
    code = blocks("PyTorch `DataLoader`")
    assert len(code) == 2 and "class PackedSequences" in code[0]
    ns = run_blocks(code, workdir, monkeypatch)
    s = open_shards(str(workdir / "out" / "demo" / "shards"))
    assert len(s) > 20 and ns["position"] == len(ns["data"]) == len(s)  # one pass, every sequence once
    Packed = ns["PackedSequences"]

    # items: the sequence's tokens; labels the same but -100 on padding; per-document positions
    data = Packed("out/demo/shards", per_document=True)
    n_pad = 0
    for i in range(len(s)):
        it = data[i]
        row = np.asarray(s[i], dtype=np.int64)
        assert it["input_ids"].tolist() == row.tolist()
        covered = np.zeros(s.seq_len, bool)
        want_pos = np.zeros(s.seq_len, np.int64)
        for p in s.segments(i):
            a, n = int(p["start"]), int(p["length"])
            covered[a:a + n] = True
            want_pos[a:a + n] = np.arange(n)
        assert it["labels"].tolist() == np.where(covered, row, -100).tolist()
        assert it["position_ids"].tolist() == want_pos.tolist()
        n_pad += int((~covered).sum())
    assert n_pad == s.manifest["padding_tokens"] > 0  # padding really was exercised
    assert "position_ids" not in Packed("out/demo/shards")[0]

    # ranks: disjoint, equal shares, together every sequence but the remainder
    W = 3
    shares = [list(Packed("out/demo/shards", r, W).sequences) for r in range(W)]
    assert len({len(x) for x in shares}) == 1
    assert sorted(sum(shares, [])) == list(range(len(s) // W * W))
    r1 = Packed("out/demo/shards", 1, W)
    assert all(r1[j]["input_ids"].tolist() == s[g].tolist() for j, g in enumerate(shares[1]))

    # resume: the loader from a saved position gives the uninterrupted run's remaining batches
    def batches(start, workers):
        loader = ns["DataLoader"](Packed("out/demo/shards", 1, W, start=start), batch_size=2, num_workers=workers)
        return [b["input_ids"].tolist() for b in loader]

    full = batches(0, 0)
    assert batches(4, 2) == full[2:]
    assert Packed("out/demo/shards", 1, W, start=len(r1)).__len__() == 0


def test_items_feed_a_hugging_face_model(workdir, monkeypatch):
    """A default-collated batch, per-document positions included, is a valid `LlamaForCausalLM` input: the loss
    it returns is the mean cross-entropy over the scored targets (labels shifted by the model)."""
    transformers = pytest.importorskip("transformers")
    ns = run_blocks(blocks("PyTorch `DataLoader`")[:1], workdir, monkeypatch)
    data = ns["PackedSequences"]("out/demo/shards", per_document=True)
    pad = next(i for i in range(len(data)) if (data[i]["labels"] == -100).any())
    batch = torch.utils.data.default_collate([data[0], data[pad]])
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=data.shards.max_id + 1, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                   max_position_embeddings=data.shards.seq_len)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        out = model(**batch)
    logits, labels = out.logits[:, :-1].float(), batch["labels"][:, 1:]
    keep = labels != -100
    want = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    assert torch.isfinite(out.loss) and torch.allclose(out.loss, want, atol=1e-5)


def test_hf_trainer_recipe(workdir, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="transformers' Trainer requires accelerate (lcdata's [dev] extra)")
    ns = run_blocks(blocks("PyTorch `DataLoader`")[:1] + blocks("Hugging Face `Trainer`"), workdir, monkeypatch)
    assert ns["trainer"].state.global_step == 2
    assert np.isfinite(ns["result"].training_loss)
