"""Shared fixtures: the embedded demo corpus and its tokenizer (real text, real tokenizer)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
TOKENIZER = DEMO / "tokenizer.json"


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return DEMO


@pytest.fixture(scope="session")
def tokenizer_path() -> str:
    return str(TOKENIZER)
