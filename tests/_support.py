"""Helpers shared by the job, schema and reliability tests: real `enrich` subprocesses and a greedy tiny model."""

from __future__ import annotations

import os
import signal
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
    "enrich_unsupported",
    "enrich_output_tokens",
    "enrich_key",
]


def build_tiny_llama(tokenizer_dir: Path, dest: Path, tied: bool = True, seed: int = 0) -> Path:
    """A 2-layer, width-32 Llama with random weights, the embedded model's tokenizer and an enrich.json.

    Untied embeddings (seed 3) give varied greedy words; the tied model's greedy output is newlines.
    """
    import json

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (dest / "config.json").is_file():
        return dest
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(dest)
    tok.save_pretrained(dest)
    info = {
        "name": "tiny-llama",
        "template": "chat",
        "eos": "<|im_end|>",
        "stop": ["<|im_end|>", "<|endoftext|>"],
    }
    (dest / "enrich.json").write_text(json.dumps(info))
    return dest


def make_greedy_model(tiny_model: Path, out: Path) -> Path:
    """The tiny Llama with untied embeddings: its greedy output is varied words, not the tied model's newlines."""
    return build_tiny_llama(tiny_model, out, tied=False, seed=3)


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


def default_sigint() -> None:
    """In a child about to start: Ctrl-C as a foreground process gets it. A test suite started in the
    background (`nohup pytest &`) has SIGINT ignored, and children inherit that, so they would never see it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args: str | Path, cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start `enrich ARGS` like cron does: no terminal on any stream, a bare environment, SIGINT not ignored."""
    return subprocess.Popen(
        enrich_argv(*args),
        cwd=cwd or REPO,
        env=cron_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
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


def greedy_run_args(
    src: Path, out: Path, model: Path, window: int, *extra: str, max_new_tokens: int = 16
) -> list[str | Path]:
    """`enrich run` arguments with greedy decoding and a fixed seed: a re-run must reproduce a run exactly."""
    return [
        "run",
        src,
        "-o",
        out,
        "--model",
        model,
        "--max-new-tokens",
        str(max_new_tokens),
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
