"""Shared fixtures: the embedded demo corpus and its tokenizer (real text, real tokenizer)."""

import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI (CI=true, as .ci/run runs) replays the same examples every run (reproducible); developers' runs explore new
# ones. Both keep each test's own max_examples and deadline.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
TOKENIZER = DEMO / "tokenizer.json"


def pytest_configure(config):
    # here, not in pyproject.toml: an edit there re-runs the Makefile's venv install
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one; `make gpu-check` runs "
                            "them with pytest -m cuda)")


@pytest.fixture(scope="module")
def torch_one_thread():
    """One intra-op thread for a torch test module: on a shared 2-core machine, OpenMP's spinning threads slow
    down by up to 5x. Use with ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return DEMO


@pytest.fixture(scope="session")
def tokenizer_path() -> str:
    return str(TOKENIZER)


@pytest.fixture(scope="session")
def train_shards(tmp_path_factory) -> str:
    """lcdata_train's fixture: shards (seq_len 256, 50 sequences, 12,800 tokens) built once per session with
    `run_build` from a slice of the demo corpus: the first 150 web documents and 2 short code files."""
    import json

    import zstandard

    from lcdata.build import BuildConfig, run_build

    root = tmp_path_factory.mktemp("train")

    def lines(path):
        with open(path, "rb") as fh:
            return zstandard.ZstdDecompressor().decompress(fh.read()).decode().splitlines()

    web = lines(DEMO / "web" / "part-000.jsonl.zst")[:150]
    code = [ln for ln in lines(DEMO / "code" / "part-000.jsonl.zst") if len(json.loads(ln)["text"]) < 12000][:2]
    for name, rows in (("web", web), ("code", code)):
        (root / "corpus" / name).mkdir(parents=True)
        (root / "corpus" / name / "part-000.jsonl").write_text("\n".join(rows) + "\n")
    out = str(root / "shards")
    run_build([str(root / "corpus")], out, BuildConfig(tokenizer=str(TOKENIZER), seq_len=256), workers=1)
    return out
