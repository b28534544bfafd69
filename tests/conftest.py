"""Shared fixtures: offline hub, a tiny random-weight Llama with the embedded tokenizer, small real catalogs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # a stray download fails loudly instead of hanging
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SHARED_DATA = REPO.parent / "shared" / "data" / "amazon_products.parquet"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    """The embedded SmolLM2 converted once to a safetensors directory (cached across runs)."""
    from enrich.model.reference import resolve_model

    return Path(resolve_model("smollm2-135m").path)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, embedded_dir: Path) -> Path:
    """A 2-layer, width-32 Llama with random weights and the embedded model's tokenizer and chat template."""
    from _support import build_tiny_llama

    return build_tiny_llama(embedded_dir, tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture()
def catalog(tmp_path: Path) -> Path:
    """The bundled 200-row real catalog, copied so that tests may write beside it."""
    dst = tmp_path / "catalog.parquet"
    shutil.copy(REPO / "examples" / "catalog.parquet", dst)
    return dst


@pytest.fixture(scope="session")
def greedy_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with untied embeddings, whose greedy output is varied words (see tests/_support.py)."""
    from _support import make_greedy_model

    return make_greedy_model(tiny_model, tmp_path_factory.mktemp("greedy") / "model")


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 64 rows of the bundled catalog (read-only: tests write their outputs elsewhere)."""
    import polars as pl

    src = tmp_path_factory.mktemp("src") / "catalog.parquet"
    pl.read_parquet(REPO / "examples" / "catalog.parquet").head(64).write_parquet(src)
    return src
