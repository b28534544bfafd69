"""Command line: parse options, build one config, call one entry function, render the result.

Heavy libraries (polars, torch, vllm) are imported inside commands, so `enrich --help` is instant.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from enrich.errors import EnrichError, Interrupted, PartialFailure

# option name -> dotted path in the job config; every job-file field that makes sense per run is here.
RUN_OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("--model", "model.ref", {"help": "Preset, HF directory, GGUF file, adapter or export directory."}),
    ("--engine", "model.engine", {"type": click.Choice(["auto", "transformers", "vllm", "echo", "ray"])}),
    ("--template", "prompt.template", {"type": click.Choice(["alpaca", "alpaca-pt", "chat"])}),
    ("--id-col", "input.columns.id", {"help": "Id column (default: id)."}),
    ("--title-col", "input.columns.title", {"help": "Title column (default: title)."}),
    ("--content-col", "input.columns.content", {"help": "Existing description column (default: content)."}),
    ("--input-format", "input.format", {"type": click.Choice(["auto", "parquet", "csv"])}),
    ("--output-format", "output.format", {"type": click.Choice(["auto", "parquet", "csv"])}),
    ("--errors", "output.errors", {"help": "Error file (default OUTPUT.errors.jsonl; .parquet works too)."}),
    ("--report", "output.report", {"help": "Report file (default OUTPUT.report.json)."}),
    ("--generated-column", "output.generated_column", {"help": "Name of the generated column."}),
    ("--temperature", "sampling.temperature", {"type": float}),
    ("--top-p", "sampling.top_p", {"type": float}),
    ("--max-new-tokens", "sampling.max_new_tokens", {"type": int}),
    ("--repetition-penalty", "sampling.repetition_penalty", {"type": float}),
    ("--seed", "sampling.seed", {"type": int}),
    ("--window-rows", "batch.window_rows", {"type": int, "help": "Rows per window (read, prompt, write)."}),
    ("--batch-size", "batch.batch_size", {"type": int, "help": "Prompts per generate call (transformers)."}),
    ("--max-title-chars", "policies.max_title_chars", {"type": int, "help": "Longest title accepted."}),
    ("--long-title", "policies.long_title", {"type": click.Choice(["truncate", "error"])}),
    ("--invalid-row", "policies.invalid_row", {"type": click.Choice(["error", "skip"])}),
    ("--duplicate-id", "policies.duplicate_id", {"type": click.Choice(["error", "skip", "keep"])}),
    ("--limit", "run.limit", {"type": int, "help": "Process only the first N rows."}),
    ("--state-dir", "run.state_dir", {"help": "Resume state (default OUTPUT.enrich/)."}),
    ("--history-dir", "run.history_dir", {"help": "Keep one report per run in this folder."}),
    ("--dtype", "model.dtype", {"type": click.Choice(["auto", "float32", "bfloat16", "float16"])}),
    ("--device", "model.device", {"help": "Torch device for the transformers engine."}),
    ("--gpu-memory-utilization", "model.gpu_memory_utilization", {"type": float}),
    ("--max-num-seqs", "model.max_num_seqs", {"type": int}),
    ("--max-num-batched-tokens", "model.max_num_batched_tokens", {"type": int}),
    ("--max-model-len", "model.max_model_len", {"type": int}),
    ("--tensor-parallel-size", "model.tensor_parallel_size", {"type": int}),
    ("--quantization", "model.quantization", {"help": "vLLM quantization, e.g. fp8."}),
    (
        "--workers",
        "ray.workers",
        {"type": int, "help": "--engine ray: engines in the actor pool (one per GPU)."},
    ),
    ("--worker-engine", "ray.engine", {"type": click.Choice(["auto", "transformers", "vllm", "echo"])}),
    ("--gpus-per-worker", "ray.gpus_per_worker", {"type": float, "help": "--engine ray: GPUs per worker."}),
    ("--ray-address", "ray.address", {"help": "--engine ray: cluster to join (auto, ray://HOST:10001)."}),
]
FLAG_OPTIONS: list[tuple[str, str, str]] = [
    (
        "--restart",
        "run.restart",
        "Discard any saved resume state (needed when the settings or input changed).",
    ),
    ("--overwrite", "output.overwrite", "Replace an existing OUTPUT that this run did not write."),
    (
        "--incremental",
        "run.incremental",
        "Copy unchanged rows from the existing OUTPUT; generate only new ones.",
    ),
]


def _param(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Attach every per-run option; each maps to one job-config field."""
    for flag, _, extra in reversed(RUN_OPTIONS):
        fn = click.option(flag, default=None, **extra)(fn)
    for flag, _, help_text in reversed(FLAG_OPTIONS):
        fn = click.option(flag, is_flag=True, default=None, help=help_text)(fn)
    return fn


def log_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--log-format, -q and -v, on every command."""
    fn = click.option("-v", "--verbose", count=True, help="More log lines.")(fn)
    fn = click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary.")(fn)
    return click.option(
        "--log-format",
        type=click.Choice(["auto", "text", "json"]),
        default="auto",
        show_default=True,
        help="auto: json when not on a terminal.",
    )(fn)


def overrides_from(params: dict[str, Any]) -> dict[str, Any]:
    """Dotted-path overrides from the options given (unset options are None and leave the job alone)."""
    out = {dotted: params.get(_param(flag)) for flag, dotted, _ in RUN_OPTIONS}
    out.update({dotted: True if params.get(_param(flag)) else None for flag, dotted, _ in FLAG_OPTIONS})
    if params.get("log_format") not in (None, "auto"):
        out["run.log_format"] = params["log_format"]
    return out


class EnrichGroup(click.Group):
    """Maps EnrichError to its exit code once, for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        previous = _term_as_interrupt()
        try:
            return super().invoke(ctx)
        except EnrichError as err:
            for line in str(err).splitlines() or [type(err).__name__]:
                click.echo(f"error: {line}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(Interrupted.exit_code)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _term_as_interrupt() -> Any:
    """SIGTERM (cron's timeout, systemd stop) acts as Ctrl-C from a command's first instant: exit 130, not -15.

    Returns the previous handler, or None off the main thread where handlers cannot be set.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


@click.group(
    cls=EnrichGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.version_option(package_name="enrich")
def main() -> None:
    """enrich: fine-tune a Llama on your catalog, then write product descriptions for every row.

    \b
    Examples:
      enrich run examples/catalog.parquet -o out.parquet
      enrich run catalog.csv -o out.csv --title-col name --dry-run --sample 20
      enrich jobs run jobs/nightly.toml
      enrich models
    """


def _quiet_libraries() -> None:
    """Keep JSON logs pure JSON: no library progress bars or advisories in the lines that cron keeps."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is first imported
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # already imported (a test session, an embedding program)
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def _execute(
    job: Any, log_format: str, quiet: bool, verbose: int, dry: bool = False, sample: int = 20
) -> None:
    from enrich import dryrun, pipeline
    from enrich.report import Reporter, print_dry_run, print_report, use_json

    if use_json(log_format):
        _quiet_libraries()
    reporter = Reporter(log_format, -1 if quiet else verbose, job.run.log_every_s)
    try:
        if dry:
            print_dry_run(dryrun.dry_run(job, sample, reporter), log_format)
            return
        report = pipeline.run(job, reporter)
    finally:
        reporter.close()
    print_report(report, log_format)
    if report.exit_code == PartialFailure.exit_code:
        raise PartialFailure(
            f"{report.counts.error} rows went to {report.errors_file}; the rest is in {report.output}"
        )


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output file (.parquet or .csv).")
@click.option(
    "--dry-run", is_flag=True, help="Generate for a sample, print it with a forecast; write nothing."
)
@click.option("--sample", type=int, default=20, show_default=True, help="Rows in a dry run's sample.")
@run_options
@log_options
def run(
    input_path: str,
    output: str | None,
    dry_run: bool,
    sample: int,
    log_format: str,
    quiet: bool,
    verbose: int,
    **params: Any,
) -> None:
    """Stream INPUT (Parquet or CSV) through the model into OUTPUT, resuming after a crash.

    OUTPUT keeps every input row and column in input order and adds generated_description,
    enrich_status, enrich_finish_reason, enrich_flags, enrich_output_tokens and enrich_key.
    Rows that fail go to OUTPUT.errors.jsonl; OUTPUT.report.json holds the run report.

    \b
    Examples:
      enrich run examples/catalog.parquet -o out.parquet
      enrich run shop.csv -o shop.out.csv --title-col name --id-col sku --content-col body
      enrich run catalog.parquet --dry-run --sample 20
      enrich run catalog.parquet -o out.parquet --model ./my-adapter --temperature 0 --limit 1000
    \b
    Exit codes: 0 ok, 2 usage, 3 bad input, 4 locked, 5 engine, 6 some rows failed, 130 interrupted.
    """
    from enrich.config import build_job
    from enrich.errors import ConfigError

    if not dry_run and not output:
        raise ConfigError("missing -o OUTPUT (or use --dry-run)")
    table = {"input": {"path": input_path}, "output": {"path": output or f"{input_path}.dry-run.parquet"}}
    job = build_job(table, overrides_from({**params, "log_format": log_format}))
    _execute(job, log_format, quiet, verbose, dry_run, sample)


@main.command()
@log_options
def models(log_format: str, quiet: bool, verbose: int) -> None:
    """List model presets and what each needs.

    \b
    Examples:
      enrich models
      enrich run catalog.parquet -o out.parquet --model llama-3.1-8b-4bit
    """
    import json

    from rich.console import Console
    from rich.table import Table

    from enrich.models import PRESETS
    from enrich.report import use_json

    if use_json(log_format):
        click.echo(json.dumps([p.__dict__ for p in PRESETS.values()], indent=2))
        return
    table = Table(title="model presets")
    for col in ("name", "needs", "template", "sampling", "what"):
        table.add_column(col)
    for p in PRESETS.values():
        needs = ("GPU, " if p.needs_gpu else "CPU, ") + p.memory
        sampling = ", ".join(f"{k}={v}" for k, v in p.sampling.items())
        table.add_row(p.name, needs, p.template, sampling, p.description)
    Console().print(table)


@main.group(cls=EnrichGroup)
def jobs() -> None:
    """Job files (TOML) for cron: validate, show and run them.

    \b
    Examples:
      enrich jobs validate jobs/*.toml
      enrich jobs show jobs/nightly.toml
      enrich jobs run jobs/nightly.toml --limit 100
    """


def set_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--set DOTTED=VALUE: any job-file field, for those that have no option of their own."""
    return click.option(
        "--set",
        "sets",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override any job field, e.g. --set policies.empty=flag --set output.path=out.parquet.",
    )(fn)


def _job_overrides(params: dict[str, Any], sets: tuple[str, ...]) -> dict[str, Any]:
    from enrich.jobs import parse_sets

    # --set first, then the named options: both are the command line; a named option is the more specific.
    return {**parse_sets(sets), **{k: v for k, v in overrides_from(params).items() if v is not None}}


@jobs.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@set_option
def jobs_validate(files: tuple[str, ...], sets: tuple[str, ...]) -> None:
    """Check job files: every problem of every file at once, each with its dotted path (exit 2 if any).

    Checks the fields' types and ranges, unknown keys, that the input exists, that the output's
    folder can be written and that the model reference exists. Nothing is loaded or run.

    \b
    Example:
      enrich jobs validate jobs/*.toml
    """
    from enrich.errors import ConfigError
    from enrich.jobs import parse_sets, validate_file

    overrides = parse_sets(sets)
    problems = []
    for f in files:
        found = validate_file(Path(f), overrides)
        if found:
            problems.extend(found)
        else:
            click.echo(f"ok: {f}")
    if problems:
        raise ConfigError("\n".join(problems))


@jobs.command("show")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["toml", "json"]), default="toml", show_default=True)
@set_option
@run_options
def jobs_show(file: str, fmt: str, sets: tuple[str, ...], **params: Any) -> None:
    """Print the resolved configuration of a job file: defaults filled, paths absolute, overrides applied.

    \b
    Examples:
      enrich jobs show jobs/nightly.toml
      enrich jobs show jobs/nightly.toml --limit 100 --format json
    """
    import json

    from enrich.jobs import dump_toml, load_job

    job = load_job(Path(file), _job_overrides(params, sets))
    click.echo(
        json.dumps(job.model_dump(), indent=2) if fmt == "json" else dump_toml(job.model_dump()), nl=False
    )


@jobs.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, default=None, help="Generate for a sample, print it; write nothing.")
@click.option("--sample", type=int, default=None, help="Rows in a dry run's sample (default 20).")
@set_option
@run_options
@log_options
def jobs_run(
    file: str,
    dry_run: bool | None,
    sample: int | None,
    sets: tuple[str, ...],
    log_format: str,
    quiet: bool,
    verbose: int,
    **params: Any,
) -> None:
    """Run a job file; options given here override the file. This is what cron calls.

    Exit codes: 0 ok, 2 bad job file, 3 bad input, 4 another run holds the lock, 5 engine,
    6 finished with rows in the error file, 130 interrupted (a re-run resumes).

    \b
    Examples:
      enrich jobs run jobs/nightly.toml
      enrich jobs run jobs/hourly-incremental.toml --limit 100 --set policies.empty=flag
    \b
    Crontab (see README, "Running from cron"):
      15 2 * * * cd /srv/catalog && enrich jobs run jobs/nightly.toml >> /var/log/enrich.log 2>&1
    """
    overrides = _job_overrides({**params, "log_format": log_format}, sets)
    if dry_run:
        overrides["run.dry_run"] = True
    if sample is not None:
        overrides["run.sample"] = sample
    from enrich.jobs import load_job

    job = load_job(Path(file), overrides)
    fmt = job.run.log_format if log_format == "auto" else log_format
    _execute(job, fmt, quiet, verbose, job.run.dry_run, job.run.sample)


# ---- fine-tuning, export and evaluation (issue 3) ----

# option -> TrainConfig field; unset options keep the preset's value.
FINETUNE_OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("--base", "base", {"help": "Base model: preset or local HF directory (default: the preset's)."}),
    ("--template", "template", {"type": click.Choice(["alpaca", "alpaca-pt", "chat"])}),
    ("--backend", "backend", {"type": click.Choice(["auto", "unsloth", "peft"])}),
    ("--format", "format", {"type": click.Choice(["auto", "parquet", "csv", "jsonl"])}),
    ("--precision", "precision", {"type": click.Choice(["auto", "fp32", "bf16", "fp16"])}),
    ("--lora-r", "r", {"type": int, "help": "LoRA rank."}),
    ("--lora-alpha", "alpha", {"type": int}),
    ("--lora-dropout", "dropout", {"type": float}),
    (
        "--target-modules",
        "target_modules",
        {"help": "Comma-separated module names (default: the 7 projections)."},
    ),
    ("--lora-layers", "lora_layers", {"type": int, "help": "LoRA on the top N layers only (default: all)."}),
    ("--epochs", "epochs", {"type": float}),
    ("--max-steps", "max_steps", {"type": int, "help": "Stop after N optimizer steps (wins over --epochs)."}),
    ("--batch-size", "batch_size", {"type": int}),
    ("--grad-accum", "grad_accum", {"type": int}),
    ("--lr", "lr", {"type": float, "help": "Peak learning rate."}),
    (
        "--scheduler",
        "scheduler",
        {"type": click.Choice(["constant_with_warmup", "linear", "cosine", "constant"])},
    ),
    ("--warmup-ratio", "warmup_ratio", {"type": float}),
    ("--weight-decay", "weight_decay", {"type": float}),
    ("--max-grad-norm", "max_grad_norm", {"type": float}),
    ("--max-seq-length", "max_seq_length", {"type": int, "help": "Longer rows are dropped (and counted)."}),
    ("--val-size", "val_size", {"type": float, "help": "Validation rows: a share below 1, else a count."}),
    ("--min-chars", "min_chars", {"type": int, "help": "Shorter descriptions are junk."}),
    ("--max-rows", "max_rows", {"type": int, "help": "Use only the first N clean rows."}),
    ("--seed", "seed", {"type": int}),
    ("--logging-steps", "logging_steps", {"type": int}),
    ("--eval-steps", "eval_steps", {"type": int}),
    ("--save-steps", "save_steps", {"type": int}),
    ("--save-total-limit", "save_total_limit", {"type": int}),
]
FINETUNE_SWITCHES: list[tuple[str, str, str]] = [
    (
        "--train-on-prompt/--response-only",
        "train_on_prompt",
        "Loss on prompt and response (reference recipe).",
    ),
    ("--packing/--no-packing", "packing", "Pack several rows per sequence."),
    (
        "--gradient-checkpointing/--no-gradient-checkpointing",
        "gradient_checkpointing",
        "Save memory, cost time.",
    ),
    ("--4bit/--no-4bit", "load_in_4bit", "On a GPU, load the base in 4 bits."),
    ("--resume", "resume", "Continue from the last checkpoint in -o DIR."),
]


def _event_printer(log_format: str, quiet: bool, verbose: int) -> Any:
    """A progress callback for finetune, export and eval: log lines (text or JSON) on stderr."""
    from enrich.report import Reporter

    reporter = Reporter(log_format, -1 if quiet else verbose)

    def on_event(kind: str, data: dict[str, Any]) -> None:
        if kind in ("info", "warning"):
            reporter.log(kind, data["message"])
        elif kind == "progress" and data.get("loss") is not None:
            eta = data["eta_s"]
            reporter.log(
                "info",
                f"step {data['step']}/{data['steps']} loss {data['loss']:.4f} "
                f"{data['tokens_per_s']:.0f} tok/s ETA {eta // 60:.0f}m{eta % 60:02.0f}s",
                **data,
            )
        elif kind == "progress" and data.get("eval_loss") is not None:
            reporter.log(
                "info", f"step {data['step']}/{data['steps']} validation loss {data['eval_loss']:.4f}"
            )

    return on_event


def _finetune_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for flag, _, extra in reversed(FINETUNE_OPTIONS):
        fn = click.option(flag, _param(flag), default=None, **extra)(fn)
    for flags, field, help_text in reversed(FINETUNE_SWITCHES):
        fn = click.option(flags, field, is_flag=True, default=None, help=help_text)(fn)
    return fn


@main.command()
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Adapter directory.")
@click.option(
    "--preset",
    type=click.Choice(["cpu-small", "reference"]),
    default="cpu-small",
    show_default=True,
    help="cpu-small: SmolLM2-135M on CPU in < 30 min; reference: Llama 3.1 8B 4-bit recipe (GPU).",
)
@click.option("--title-col", help="Title column (default: title).")
@click.option("--content-col", help="Description column (default: content).")
@_finetune_options
@log_options
def finetune(
    data: str,
    output: str,
    preset: str,
    title_col: str | None,
    content_col: str | None,
    log_format: str,
    quiet: bool,
    verbose: int,
    **params: Any,
) -> None:
    """LoRA fine-tuning on DATA (Parquet, CSV or JSONL with titles and descriptions) into an adapter directory.

    Cleans the data (empty, junk, duplicate and too-long rows dropped and counted), splits off a
    seeded validation set, trains with trl's SFTTrainer (loss on the response only by default) and
    writes the adapter, checkpoints, enrich.json, training_report.json and loss.png.

    \b
    Examples:
      enrich finetune shop.parquet -o adapters/shop
      enrich finetune shop.csv -o adapters/shop --title-col name --content-col body --max-steps 200
      enrich finetune shop.parquet -o adapters/shop --preset reference --backend unsloth
      enrich finetune shop.parquet -o adapters/shop --resume
    \b
    Exit codes: 0 ok, 2 bad option or hyper-parameter, 3 bad data, 5 engine (no GPU, out of memory).
    """
    import json

    from enrich.train import build_train_config, train

    options: dict[str, Any] = {"data": data, "preset": preset}
    for flag, field, _ in FINETUNE_OPTIONS:
        options[field] = params.get(_param(flag))
    for _, field, _ in FINETUNE_SWITCHES:
        options[field] = params.get(field)
    if isinstance(options["target_modules"], str):
        options["target_modules"] = tuple(
            m.strip() for m in options["target_modules"].split(",") if m.strip()
        )
    columns = {k: v for k, v in (("title", title_col), ("content", content_col)) if v}
    if columns:
        options["columns"] = columns
    config = build_train_config(options)
    on_event = _event_printer(log_format, quiet, verbose)
    out = train(config, Path(output), on_event)
    report = json.loads((out / "training_report.json").read_text(encoding="utf-8"))
    d = report["data"]
    click.echo(
        f"adapter: {out}\n"
        f"data: {d['rows']} rows, kept {d['kept']} (train {d['train']}, val {d['val']}); dropped {d['dropped']}\n"
        f"steps {report['steps']}, validation loss {report['initial_val_loss']:.4f} -> {report['final_val_loss']:.4f}, "
        f"{report['tokens_per_s']:.0f} tokens/s, {report['wall_seconds'] / 60:.1f} min ({report['backend']}, "
        f"{report['device']})"
    )


@main.command("export")
@click.argument("adapter_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Export directory.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["adapter", "merged16", "gguf"]),
    default="merged16",
    show_default=True,
    help="adapter: PEFT; merged16: base + adapter in 16 bits; gguf: llama.cpp.",
)
@click.option(
    "--dtype",
    type=click.Choice(["bfloat16", "float16"]),
    default="bfloat16",
    show_default=True,
    help="Weights' dtype of merged16 and gguf exports.",
)
@log_options
def export_cmd(
    adapter_dir: str, output: str, fmt: str, dtype: str, log_format: str, quiet: bool, verbose: int
) -> None:
    """Write a deployable model from a fine-tuned ADAPTER_DIR and verify it against base + adapter.

    The export's logits and greedy outputs on fixed prompts must match base + adapter within a
    tolerance that is printed; otherwise nothing is written. merged16 dequantizes a 4-bit base to
    16 bits before merging. Every export carries enrich.json, so `enrich run --model OUT` works.

    \b
    Examples:
      enrich export adapters/shop -o models/shop --format merged16
      enrich export adapters/shop -o models/shop-lora --format adapter
      LLAMA_CPP_DIR=~/llama.cpp enrich export adapters/shop -o models/shop-gguf --format gguf
    """
    from enrich.export import export

    result = export(Path(adapter_dir), Path(output), fmt, dtype, _event_printer(log_format, quiet, verbose))
    click.echo(
        f"export ({fmt}) verified: {output}\n"
        f"max |logit diff| {result.max_abs_logit_diff:.3g} <= tolerance {result.tolerance:g} on {result.prompts} "
        f"prompts, {result.tokens} positions; argmax agreement {result.argmax_agreement:.1%}; "
        f"greedy outputs identical {result.greedy_identical}/{result.prompts}"
    )


@main.command("eval")
@click.argument("model")
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Report directory.")
@click.option("--baseline", help="Model scored beside MODEL on the same rows (e.g. the base preset).")
@click.option(
    "--sample", type=int, default=200, show_default=True, help="Rows scored (seeded random sample)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample and of sampling.")
@click.option("--format", "fmt", type=click.Choice(["auto", "parquet", "csv", "jsonl"]), default="auto")
@click.option(
    "--engine", type=click.Choice(["auto", "transformers", "vllm"]), default="auto", show_default=True
)
@click.option(
    "--template", type=click.Choice(["alpaca", "alpaca-pt", "chat"]), help="Default: each model's own."
)
@click.option("--id-col", help="Id column (default: id).")
@click.option("--title-col", help="Title column (default: title).")
@click.option("--content-col", help="Real description column (default: content).")
@click.option("--temperature", type=float, help="For both models (default: each model's own).")
@click.option("--top-p", type=float)
@click.option("--max-new-tokens", type=int)
@click.option("--repetition-penalty", type=float)
@click.option("--batch-size", type=int, help="Prompts per generate call (transformers).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto")
@log_options
def eval_cmd(
    model: str,
    data: str,
    output: str,
    baseline: str | None,
    sample: int,
    seed: int,
    fmt: str,
    engine: str,
    template: str | None,
    id_col: str | None,
    title_col: str | None,
    content_col: str | None,
    log_format: str,
    quiet: bool,
    verbose: int,
    **sampling: Any,
) -> None:
    """Score MODEL's generations on held-out rows of DATA against their real descriptions (and a baseline).

    Writes OUT/eval_report.json (per model: rouge_l, chrf, bleu, length_ratio, eos_rate, flag rates),
    OUT/generations.jsonl, OUT/eval.png and OUT/summary.md. Use rows the model was not trained on.

    \b
    Examples:
      enrich eval adapters/shop holdout.parquet -o eval/shop --baseline smollm2-135m
      enrich eval models/shop holdout.csv -o eval/shop --title-col name --content-col body --sample 100
    """
    from pydantic import ValidationError

    from enrich.errors import ConfigError
    from enrich.evalreport import table_rows
    from enrich.evaluate import EvalConfig, evaluate

    batch_size = sampling.pop("batch_size")
    dtype = sampling.pop("dtype")
    columns = {k: v for k, v in (("id", id_col), ("title", title_col), ("content", content_col)) if v}
    try:
        config = EvalConfig.model_validate(
            {
                "model": {"ref": model, "engine": engine, "dtype": dtype},
                "baseline": baseline,
                "data": data,
                "format": fmt,
                "columns": columns,
                "template": template,
                "sample": sample,
                "seed": seed,
                "sampling": {**{k: v for k, v in sampling.items() if v is not None}, "seed": seed},
                "batch_size": batch_size,
            }
        )
    except ValidationError as err:
        raise ConfigError(
            "\n".join(f"eval: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        ) from None
    report = evaluate(config, Path(output), _event_printer(log_format, quiet, verbose))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"enrich eval: {report['rows']} rows -> {output}")
    table.add_column("metric")
    for role in report["models"]:
        table.add_column(role, justify="right")
    for label, cells in table_rows(report):
        table.add_row(label, *cells)
    Console().print(table)


if __name__ == "__main__":
    main()
