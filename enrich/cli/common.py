"""What every command shares: the per-run options and their job-config paths, logging options, the error
and signal handling of the command group, and the call into a run."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from enrich.config import job_field
from enrich.errors import EnrichError, Interrupted, PartialFailure
from enrich.signals import sigterm_as_interrupt

SEPARATOR_HELP = "CSV field separator (default ,): one character such as ';' or '|', or \\t for a tab."

# option name -> dotted path in the job config; every job-file field that makes sense per run is here.
RUN_OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("--model", "model.ref", {}),
    ("--engine", "model.engine", {"type": click.Choice(["auto", "transformers", "vllm", "echo", "ray"])}),
    ("--template", "prompt.template", {"type": click.Choice(["alpaca", "alpaca-pt", "chat"])}),
    ("--id-col", "input.columns.id", {"help": "Id column (default: id)."}),
    ("--title-col", "input.columns.title", {"help": "Title column (default: title)."}),
    ("--content-col", "input.columns.content", {"help": "Existing description column (default: content)."}),
    (
        "--attr",
        "input.attributes",
        {
            "multiple": True,
            "metavar": "COLUMN[=Label]",
            "help": "An attribute stated in the prompt under the title, as 'Label: value' (repeat it: --attr brand "
            "--attr retail_price=Price). Default: the ones the model was trained with (its enrich.json), else none.",
        },
    ),
    ("--input-format", "input.format", {"type": click.Choice(["auto", "parquet", "csv"])}),
    ("--separator", "input.separator", {"help": SEPARATOR_HELP}),
    ("--output-format", "output.format", {"type": click.Choice(["auto", "parquet", "csv"])}),
    ("--output-separator", "output.separator", {"help": "CSV output's separator (default: the input's)."}),
    ("--errors", "output.errors", {"help": "Error file (default OUTPUT.errors.jsonl; .parquet works too)."}),
    ("--report", "output.report", {"help": "Report file (default OUTPUT.report.json)."}),
    ("--generated-column", "output.generated_column", {"help": "Name of the generated column."}),
    ("--min-chars", "output.min_chars", {"type": int}),
    ("--temperature", "sampling.temperature", {"type": float}),
    ("--top-p", "sampling.top_p", {"type": float}),
    ("--max-new-tokens", "sampling.max_new_tokens", {"type": int}),
    ("--repetition-penalty", "sampling.repetition_penalty", {"type": float}),
    ("--penalty-scope", "sampling.penalty_scope", {"type": click.Choice(["all", "output"])}),
    ("--seed", "sampling.seed", {"type": int}),
    ("--window-rows", "batch.window_rows", {"type": int}),
    ("--batch-size", "batch.batch_size", {"type": int}),
    ("--max-title-chars", "policies.max_title_chars", {"type": int, "help": "Longest title accepted."}),
    ("--long-title", "policies.long_title", {"type": click.Choice(["truncate", "error"])}),
    ("--invalid-row", "policies.invalid_row", {"type": click.Choice(["error", "skip"])}),
    ("--duplicate-id", "policies.duplicate_id", {"type": click.Choice(["error", "skip", "keep"])}),
    ("--candidates", "policies.candidates", {"type": int}),
    ("--limit", "run.limit", {"type": int}),
    ("--state-dir", "run.state_dir", {"help": "Resume state (default OUTPUT.enrich/)."}),
    ("--history-dir", "run.history_dir", {}),
    ("--decisions", "run.decisions", {"metavar": "FILE"}),
    ("--dtype", "model.dtype", {"type": click.Choice(["auto", "float32", "bfloat16", "float16"])}),
    ("--device", "model.device", {}),
    ("--gpu-memory-utilization", "model.gpu_memory_utilization", {"type": float}),
    ("--max-num-seqs", "model.max_num_seqs", {"type": int}),
    ("--max-num-batched-tokens", "model.max_num_batched_tokens", {"type": int}),
    ("--max-model-len", "model.max_model_len", {"type": int}),
    ("--tensor-parallel-size", "model.tensor_parallel_size", {"type": int}),
    ("--quantization", "model.quantization", {}),
    (
        "--workers",
        "ray.workers",
        {"type": int, "help": "--engine ray: engines in the actor pool (one per GPU)."},
    ),
    ("--worker-engine", "ray.engine", {"type": click.Choice(["auto", "transformers", "vllm", "echo"])}),
    ("--gpus-per-worker", "ray.gpus_per_worker", {"type": float}),
    ("--ray-address", "ray.address", {}),
    (
        "--ray-start-timeout",
        "ray.start_timeout_s",
        {"type": float, "help": "--engine ray: seconds for every worker to start (default 900)."},
    ),
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
    ("--no-review", "run.review", "Do not write OUTPUT.review.html at the end."),
    (
        "--only-missing",
        "output.only_missing",
        "Generate only where the existing description (--content-col) is empty or shorter than --min-chars; "
        "the others keep theirs (status kept).",
    ),
]


def param_name(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


# A field's description and its default values: {"": value} for one default, {preset: value} where presets differ.
Describe = Callable[[str], tuple[str, dict[str, Any]]]


def _shown(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _default_text(defaults: dict[str, Any], show: Callable[[Any], str] = _shown) -> str | None:
    """'0.7', or '1e-3 (cpu-small), 2e-4 (reference)' where presets differ; None where one leaves it unset (the
    option's help then says what happens)."""
    if any(value is None for value in defaults.values()):
        return None
    texts = {name: show(value) for name, value in sorted(defaults.items())}
    if len(set(texts.values())) == 1:
        return next(iter(texts.values()))
    return ", ".join(f"{text} ({name})" for name, text in texts.items())


def _help(text: str, default: str | None) -> str:
    """Help with its default, in click's own form, unless the text already states it."""
    return text if default is None or "default" in text.lower() else f"{text}  [default: {default}]"


def option_table(
    options: list[tuple[str, str, dict[str, Any]]], switches: list[tuple[str, str, str]], describe: Describe
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator attaching a table of options (flag, field, click settings) and of switches (flags, field,
    help), in table order. Every one defaults to None, so an option not given leaves its field to the job or
    preset; its help is its own or its field's description, with the field's default (describe)."""

    def attach(fn: Callable[..., Any]) -> Callable[..., Any]:
        for flag, field, extra in reversed(options):
            description, defaults = describe(field)
            text = _help(extra.get("help") or description, _default_text(defaults))
            fn = click.option(flag, param_name(flag), default=None, **{**extra, "help": text})(fn)
        for flags, field, help_text in reversed(switches):
            on, _, off = flags.partition("/")
            # A --no-X switch turns off a field that is on by default: its default is the switch not given.
            shown = {k: (not v if on.startswith("--no-") else v) for k, v in describe(field)[1].items()}
            default = _default_text({k: on if v else off or "off" for k, v in shown.items()})
            # The parameter is named after the field where that is a name (finetune's), else after the flag.
            name = field if field.isidentifier() else param_name(on)
            fn = click.option(flags, name, is_flag=True, default=None, help=_help(help_text, default))(fn)
        return fn

    return attach


def describe_job_field(dotted: str) -> tuple[str, dict[str, Any]]:
    """A job field's description and default."""
    field = job_field(dotted)
    return field.description or "", {"": field.default}


# Every per-run option; each maps to one job-config field.
run_options = option_table(RUN_OPTIONS, FLAG_OPTIONS, describe_job_field)


LOG_FORMAT = "enrich.log_format"  # click's ctx.meta (shared by nested contexts): the format of the error line


def _remember_log_format(ctx: click.Context, param: click.Parameter, value: str) -> str:
    ctx.meta[LOG_FORMAT] = value
    return value


def catalog_format(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--format of a command that reads a catalog to learn from or score against (eval, claims learn)."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["auto", "parquet", "csv", "jsonl"]),
        default="auto",
        show_default=True,
        help=help_text,
    )


def log_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--log-format, -q and -v, on every command."""
    fn = click.option("-v", "--verbose", count=True, show_default=True, help="More log lines (-vv: more).")(
        fn
    )
    fn = click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary.")(fn)
    return click.option(
        "--log-format",
        type=click.Choice(["auto", "text", "json"]),
        default="auto",
        show_default=True,
        help="auto: json when not on a terminal.",
        callback=_remember_log_format,
    )(fn)


def overrides_from(params: dict[str, Any]) -> dict[str, Any]:
    """Dotted-path overrides from the options given (unset options are None and leave the job alone)."""
    out = {dotted: given_value(params.get(param_name(flag))) for flag, dotted, _ in RUN_OPTIONS}
    out.update(
        {
            dotted: (not flag.startswith("--no-")) if params.get(param_name(flag)) else None
            for flag, dotted, _ in FLAG_OPTIONS
        }
    )
    if params.get("log_format") not in (None, "auto"):
        out["run.log_format"] = params["log_format"]
    return out


def given_value(value: Any) -> Any:
    """An option's value as an override: a repeatable option not given (an empty tuple) leaves its field alone."""
    if isinstance(value, tuple):
        return list(value) or None
    return value


class EnrichGroup(click.Group):
    """Maps EnrichError to its exit code once, for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with (
                sigterm_as_interrupt()
            ):  # cron's timeout or a systemd stop ends a command as Ctrl-C does: 130
                return super().invoke(ctx)
        except EnrichError as err:
            _echo_error(ctx, str(err) or type(err).__name__, err.exit_code)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            _echo_error(ctx, "interrupted", Interrupted.exit_code)
            sys.exit(Interrupted.exit_code)
        except OSError as err:  # a full disk where no command translated it (a library's own write)
            from enrich.files import no_room

            full = no_room(err, None)
            if full is None:
                raise  # any other OSError is a bug: its traceback is kept
            _echo_error(ctx, str(full), full.exit_code)
            sys.exit(full.exit_code)


def _echo_error(ctx: click.Context, message: str, code: int) -> None:
    """The failure, a line per problem: JSON lines where the log is JSON (cron), else `error: ...` lines."""
    from enrich.console import json_line, use_json

    as_json = use_json(ctx.meta.get(LOG_FORMAT, "auto"))
    for line in message.splitlines():  # one line per problem (jobs validate lists every one)
        click.echo(json_line("error", line, exit_code=code) if as_json else f"error: {line}", err=True)


def quiet_libraries() -> None:
    """Keep JSON logs pure JSON: no library progress bars or advisories in the lines that cron keeps."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is first imported
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # already imported (a test session, an embedding program)
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def execute(
    job: Any, log_format: str, quiet: bool, verbose: int, dry: bool = False, sample: int = 20
) -> None:
    from enrich.console import Reporter, print_dry_run, print_report, use_json
    from enrich.run import run

    click.get_current_context().meta[LOG_FORMAT] = log_format  # a job file's format, where it set one
    if use_json(log_format):
        quiet_libraries()
    reporter = Reporter(log_format, -1 if quiet else verbose, job.run.log_every_s)
    try:
        if dry:
            from enrich.run import dryrun

            print_dry_run(dryrun.dry_run(job, sample, reporter), log_format)
            return
        report = run(job, reporter)
    finally:
        reporter.close()
    print_report(report, log_format)
    if report.exit_code == PartialFailure.exit_code:
        raise PartialFailure(
            f"{report.counts.error} rows went to {report.errors_file}; the rest is in {report.output}"
        )


def set_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--set DOTTED=VALUE: any job-file field, for those that have no option of their own."""
    return click.option(
        "--set",
        "sets",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override any job field, e.g. --set policies.empty=flag --set output.path=out.parquet; "
        "repeat for more (default: none).",
    )(fn)


def job_overrides(params: dict[str, Any], sets: tuple[str, ...]) -> dict[str, Any]:
    from enrich.run.jobs import parse_sets

    # --set first, then the named options: both are the command line; a named option is the more specific.
    return {**parse_sets(sets), **{k: v for k, v in overrides_from(params).items() if v is not None}}


def event_printer(log_format: str, quiet: bool, verbose: int) -> Any:
    """A progress callback for finetune, export and eval: log lines (text or JSON) on stderr."""
    from enrich.console import Reporter

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
