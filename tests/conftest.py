"""Shared fixtures: offline hub, a tiny random-weight Llama with the embedded tokenizer, small real catalogs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import polars as pl
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # a stray download fails loudly instead of hanging
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _support import (  # after the offline switches: it imports enrich
    CATALOG,
    build_tiny_llama,
    call,
    make_greedy_model,
    seeded_run_args,
)


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
    return build_tiny_llama(embedded_dir, tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture()
def catalog(tmp_path: Path) -> Path:
    """The bundled 200-row real catalog, copied so that tests may write beside it."""
    dst = tmp_path / "catalog.parquet"
    shutil.copy(CATALOG, dst)
    return dst


@pytest.fixture(scope="session")
def greedy_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with untied embeddings, whose greedy output is varied words (see tests/_support.py)."""
    return make_greedy_model(tiny_model, tmp_path_factory.mktemp("greedy") / "model")


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 64 rows of the bundled catalog (read-only: tests write their outputs elsewhere)."""
    src = tmp_path_factory.mktemp("src") / "catalog.parquet"
    pl.read_parquet(CATALOG).head(64).write_parquet(src)
    return src


@pytest.fixture(scope="session")
def reference(source: Path, greedy_model: Path, tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """The output of an uninterrupted real `enrich` process over `source` with seeded_run_args: what every
    killed, interrupted, damaged or refused-then-finished run of the reliability and file tests must end as."""
    out = tmp_path_factory.mktemp("ref") / "ref.parquet"
    done = call(*seeded_run_args(source, out, greedy_model))
    assert done.returncode == 0, done.stderr
    return pl.read_parquet(out)
