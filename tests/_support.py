"""Helpers shared by the tests: the CLI in this process, real `enrich` subprocesses, waiting for a run's state on
disk, and the tiny models."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
from click.testing import CliRunner, Result

from enrich.cli import main

REPO = Path(__file__).resolve().parent.parent
CATALOG = REPO / "examples" / "catalog.parquet"  # the bundled 200-row real catalog (read-only)
DATA = Path(__file__).resolve().parent / "data"
# The one thing outside the repository tests may read; tests that need it skip when it is absent.
SHARED_DATA = REPO.parent / "shared" / "data"
GUARD_S = 300  # only against a hung test: a state that never comes fails the test when this runs out
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


def enrich(*args: str | Path | int) -> Result:
    """`enrich ARGS` in this process (click's CliRunner): its exit code and output, stderr included."""
    return CliRunner().invoke(main, [str(a) for a in args])


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


def seeded_run_args(src: Path, out: Path, model: Path, *extra: str | Path) -> list[str | Path]:
    """`enrich run` in windows of 8 rows, sampling at temperature 0.8 with a fixed seed (each window's seed is
    the run's plus its index): a run killed, resumed or repeated must give exactly an uninterrupted run's rows."""
    return greedy_run_args(src, out, model, 8, "--temperature", "0.8", *extra)


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


# -- a real run's state on disk ----------------------------------------------------------------------------------


def journal(out: Path) -> Path:
    """The run's journal: one line per saved window."""
    return Path(f"{out}.enrich") / "parts.jsonl"


def parts_done(out: Path) -> int:
    """How many windows the run of `out` has saved (journaled) so far."""
    try:
        return journal(out).read_text().count("\n")
    except FileNotFoundError:
        return 0


def holds_lock(out: Path, proc: subprocess.Popen[str]) -> bool:
    """Whether proc has taken the run lock of `out` (the lock file names its pid)."""
    try:
        return f'"pid": {proc.pid}' in (Path(f"{out}.enrich") / "lock").read_text()
    except FileNotFoundError:
        return False


def until(ready: Callable[[], bool], what: str, poll_s: float = 0.005) -> None:
    """Poll until ready() holds; fail (never skip) when it does not within GUARD_S."""
    deadline = time.monotonic() + GUARD_S
    while not ready():
        assert time.monotonic() < deadline, f"{what}: not reached in {GUARD_S} s"
        time.sleep(poll_s)


class RunEnded(AssertionError):
    """The run ended before the state a test waited for: a failure, unless the test tries again."""


def wait_for(
    proc: subprocess.Popen[str], ready: Callable[[], bool], what: str, poll_s: float = 0.005
) -> None:
    """Poll until ready() holds while proc is still running. Fails (never skips) when proc ends first or the
    state does not come within GUARD_S; the sleep is the poll interval, no assumption about the run's speed."""
    deadline = time.monotonic() + GUARD_S
    while not ready():
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise RunEnded(f"the run ended (exit {proc.returncode}) before {what}:\n{(err or '')[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            raise AssertionError(f"{what}: not reached in {GUARD_S} s")
        time.sleep(poll_s)


def _process_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (R, S, D, T stopped, Z ended...), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()[0]


def freeze_when(
    proc: subprocess.Popen[str], ready: Callable[[], bool], what: str, poll_s: float = 0.005
) -> None:
    """Wait until ready(), then stop proc with SIGSTOP and wait until it is stopped: while the test looks at its
    state and signals it, the run cannot move on (or end). Fails when the run ends before it is stopped."""
    wait_for(proc, ready, what, poll_s)
    proc.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + GUARD_S
    while (state := _process_state(proc.pid)) not in ("T", "t"):
        if state in (None, "Z", "X") or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            raise RunEnded(f"the run ended before it could be stopped at {what}:\n{(err or '')[-3000:]}")
        time.sleep(0.001)


def kill_9(proc: subprocess.Popen[str]) -> str:
    """SIGKILL, and check that it was the kill that ended the process (not the end of its run); its stderr."""
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the process ended by itself (exit {proc.returncode})"
    return err or ""
