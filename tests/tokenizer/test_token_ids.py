"""Token ids never wrap (issue #14): the dtype comes from the largest id a tokenizer can emit, not from its
number of ids. The tokenizer under test is the demo's with one frequent token (``Ġthe``) moved to id 70,000:
16,384 ids, the largest 70,000 (a vocabulary with holes, as in real tokenizers whose added tokens sit far
above the base vocabulary). Before the fix it got uint16 and 70,000 was written as 4,464."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zstandard
from tokenizers import Tokenizer

from lcdata.build import BuildConfig, run_build
from lcdata.build.tokenize import _fit
from lcdata.corpus import resolve_inputs
from lcdata.errors import ConfigError, LcdataError
from lcdata.shards import open_shards, verify_shards
from lcdata.shards.export import export_shards
from lcdata.shards.format import choose_token_dtype
from lcdata.tokenizer import tokenizer_info

BIG = 70000


@pytest.fixture(scope="module")
def holey(tmp_path_factory, tokenizer_path) -> str:
    d = json.loads(Path(tokenizer_path).read_text())
    assert d["model"]["vocab"]["Ġthe"] < 0xFFFF
    d["model"]["vocab"]["Ġthe"] = BIG
    p = tmp_path_factory.mktemp("holey") / "tokenizer.json"
    p.write_text(json.dumps(d))
    return str(p)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, demo_dir) -> Path:
    d = tmp_path_factory.mktemp("holey_corpus")
    rows = zstandard.ZstdDecompressor().decompress((demo_dir / "web" / "part-000.jsonl.zst").read_bytes())
    (d / "part-0.jsonl").write_bytes(b"\n".join(rows.split(b"\n")[:20]) + b"\n")
    return d


def test_tokenizer_info_reports_the_largest_id(holey):
    info = tokenizer_info(holey)
    assert info.vocab_size == 16384 and info.max_id == BIG


def test_dtype_from_the_largest_id_and_no_wrap(holey, corpus, tmp_path):
    out = tmp_path / "s"
    run_build([str(corpus)], str(out), BuildConfig(tokenizer=holey, seq_len=128, packing="best-fit", engine="hf"),
              workers=1)
    s = open_shards(str(out))
    assert s.manifest["dtype"] == "uint32" and s.manifest["tokenizer"] == {
        "path": holey, "sha256": tokenizer_info(holey).sha256, "vocab_size": 16384, "max_id": BIG}
    assert verify_shards(str(out)) == []
    tok = Tokenizer.from_file(holey)
    recs = [json.loads(x) for x in (corpus / "part-0.jsonl").read_text().splitlines() if x]
    inst = s.instance_tokens()
    seen = 0
    for d in s.documents.iter_rows(named=True):
        ids = tok.encode(recs[d["row"]]["text"], add_special_tokens=False).ids
        assert inst[d["doc"]].tolist() == [0, *ids]
        seen += ids.count(BIG)
    assert seen > 10
    # the export keeps the id too: Megatron's rule gives int32 above 65,500 ids
    export_shards(str(out), "megatron", str(tmp_path / "mg"))
    mg = np.fromfile(tmp_path / "mg" / "shard-00000.bin", dtype=np.int32)
    assert (mg == BIG).any() and mg.max() == BIG


def test_forced_uint16_that_cannot_hold_the_largest_id_is_refused_up_front(holey, corpus, tmp_path):
    with pytest.raises(ConfigError, match="largest id \\(70,000\\) does not fit dtype uint16"):
        run_build([str(corpus)], str(tmp_path / "o"), BuildConfig(tokenizer=holey, seq_len=128, dtype="uint16"))
    assert not (tmp_path / "o").exists()
    assert choose_token_dtype(65535, "uint16") == np.dtype("<u2")
    assert choose_token_dtype(65536) == np.dtype("<u4")


def test_a_cast_that_would_wrap_is_an_error(corpus):
    f = resolve_inputs([str(corpus)])[0]
    assert _fit(np.array([0, 65535]), np.dtype("<u2"), f).dtype == np.dtype("<u2")
    with pytest.raises(LcdataError, match="id 70,000, which dtype uint16 cannot hold"):
        _fit(np.array([1, BIG, 2]), np.dtype("<u2"), f)


def test_verify_checks_ids_against_the_largest_id(holey, corpus, tmp_path):
    """A folder whose manifest claims a smaller largest id than its data holds fails verify, naming the id."""
    out = tmp_path / "s"
    run_build([str(corpus)], str(out), BuildConfig(tokenizer=holey, seq_len=128, engine="hf"), workers=1)
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    m = json.loads((bad / "manifest.json").read_text())
    from lcdata.shards.format import seal

    m["tokenizer"]["max_id"] = 69999
    m["manifest_sha256"] = seal(m)
    (bad / "manifest.json").write_text(json.dumps(m))
    problems = verify_shards(str(bad))
    assert any("token id 70,000 > tokenizer.max_id 69,999" in p for p in problems), problems
    assert any("tokenizer.max_id: 69,999 but the tokenizer" in p for p in problems), problems
