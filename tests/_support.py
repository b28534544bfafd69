"""Helpers shared by the job, schema and reliability tests: real `enrich` subprocesses and a greedy tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parent.parent
RESULT_COLUMNS = [
    "generated_description",
    "enrich_status",
    "enrich_finish_reason",
    "enrich_flags",
    "enrich_output_tokens",
    "enrich_key",
]


def make_greedy_model(tiny_model: Path, out: Path) -> Path:
    """The tiny Llama with untied embeddings: its greedy output is varied words, not the tied model's newlines."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (out / "config.json").is_file():
        return out
    shutil.copytree(tiny_model, out, dirs_exist_ok=True)
    config = LlamaConfig.from_pretrained(tiny_model)
    config.tie_word_embeddings = False
    torch.manual_seed(3)  # a seed whose greedy continuations differ from title to title
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def cron_env(**extra: str) -> dict[str, str]:
    """The environment cron gives: almost nothing; plus the offline switches of the test session."""
    env = {
        "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",  # the machine is shared; one thread per run keeps parallel tests fair
    }
    env.update(extra)
    return env


def enrich_argv(*args: str | Path) -> list[str]:
    """The command line of a real `enrich` process (through this interpreter, so no PATH lookup)."""
    return [sys.executable, "-m", "enrich.cli", *(str(a) for a in args)]


def start(*args: str | Path, cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start `enrich ARGS` like cron does: no terminal on any stream, a bare environment."""
    return subprocess.Popen(
        enrich_argv(*args),
        cwd=cwd or REPO,
        env=cron_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def call(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `enrich ARGS` to the end and return its exit code and output."""
    return subprocess.run(
        enrich_argv(*args),
        cwd=cwd or REPO,
        env=cron_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )


def results(path: Path) -> pl.DataFrame:
    """The generated columns of an output file, for comparing runs."""
    frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema=False)
    return frame.select("id", *RESULT_COLUMNS)


def greedy_run_args(src: Path, out: Path, model: Path, window: int, *extra: str) -> list[str | Path]:
    """`enrich run` arguments with greedy decoding and a fixed seed: a re-run must reproduce a run exactly."""
    return [
        "run",
        src,
        "-o",
        out,
        "--model",
        model,
        "--max-new-tokens",
        "16",
        "--window-rows",
        str(window),
        "--batch-size",
        "2",
        "--temperature",
        "0",
        "--seed",
        "11",
        *extra,
    ]
