"""`enrich finetune` and `enrich export`: training an adapter and shipping it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from enrich.cli.common import (
    SEPARATOR_HELP,
    event_printer,
    given_value,
    log_options,
    option_table,
    param_name,
)

# option -> TrainConfig field; unset options keep the preset's value.
FINETUNE_OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("--base", "base", {}),
    (
        "--template",
        "template",
        {
            "type": click.Choice(["alpaca", "alpaca-pt", "chat"]),
            "help": "Prompt template, recorded in enrich.json for run and eval (default: alpaca with cpu-small, "
            "the base model's with reference).",
        },
    ),
    ("--backend", "backend", {"type": click.Choice(["auto", "unsloth", "peft"])}),
    ("--format", "format", {"type": click.Choice(["auto", "parquet", "csv", "jsonl"])}),
    ("--separator", "separator", {"help": SEPARATOR_HELP}),
    (
        "--attr",
        "attributes",
        {
            "multiple": True,
            "metavar": "COLUMN[=Label]",
            "help": "An attribute stated in the prompt under the title (repeat it: --attr brand --attr "
            "retail_price=Price); recorded in enrich.json, so run and eval prompt with it. Default: none.",
        },
    ),
    ("--targets", "targets", {"type": click.Choice(["faithful", "as-is"])}),
    ("--precision", "precision", {"type": click.Choice(["auto", "fp32", "bf16", "fp16"])}),
    ("--lora-r", "r", {"type": int, "help": "LoRA rank."}),
    ("--lora-alpha", "alpha", {"type": int}),
    ("--lora-dropout", "dropout", {"type": float}),
    (
        "--target-modules",
        "target_modules",
        {"help": "Comma-separated names of the modules that get LoRA."},
    ),
    (
        "--lora-layers",
        "lora_layers",
        {
            "type": int,
            "help": "LoRA on the top N layers only (default: 10 with cpu-small, all with reference).",
        },
    ),
    ("--epochs", "epochs", {"type": float}),
    (
        "--max-steps",
        "max_steps",
        {
            "type": int,
            "help": "Stop after N optimizer steps, whatever --epochs says (default: 90 with cpu-small, none: "
            "--epochs decides, with reference).",
        },
    ),
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
    (
        "--max-response-tokens",
        "max_response_tokens",
        {
            "type": int,
            "help": "Drop rows whose description is longer than N tokens, e.g. run's --max-new-tokens "
            "(default: no limit).",
        },
    ),
    ("--val-size", "val_size", {"type": float, "help": "Validation rows: a share below 1, else a count."}),
    ("--min-chars", "min_chars", {"type": int, "help": "Shorter descriptions are junk."}),
    ("--max-rows", "max_rows", {"type": int, "help": "Use only the first N clean rows (default: all)."}),
    ("--seed", "seed", {"type": int}),
    ("--logging-steps", "logging_steps", {"type": int}),
    (
        "--eval-steps",
        "eval_steps",
        {
            "type": int,
            "help": "Steps between validation losses (default: 45 with cpu-small, about 10 a run with reference).",
        },
    ),
    (
        "--save-steps",
        "save_steps",
        {
            "type": int,
            "help": "Steps between checkpoints (default: 45 with cpu-small, --eval-steps' with reference).",
        },
    ),
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


def _describe_train_field(field: str) -> tuple[str, dict[str, Any]]:
    """A fine-tuning field's description and its default under each preset."""
    from enrich.model.trainconfig import TrainConfig, preset_defaults

    return TrainConfig.model_fields[field].description or "", preset_defaults(field)


_finetune_options = option_table(FINETUNE_OPTIONS, FINETUNE_SWITCHES, _describe_train_field)


@click.command()
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

    Exit codes: 0 ok; 1 a bug (traceback kept); 2 a bad option, hyper-parameter or base model; 3 unreadable
    or unusable data; 5 the engine failed (no GPU, out of memory); 7 no room to write (disk full); 130
    interrupted (the step under way is
    saved as a checkpoint: --resume continues).
    """
    import json

    from enrich.model.train import train
    from enrich.model.trainconfig import build_train_config

    # Field names and dotted paths; those left None keep the preset's value.
    options: dict[str, Any] = {
        "data": data,
        "preset": preset,
        "columns.title": title_col,
        "columns.content": content_col,
        **{field: given_value(params.get(param_name(flag))) for flag, field, _ in FINETUNE_OPTIONS},
        **{field: params.get(field) for _, field, _ in FINETUNE_SWITCHES},
    }
    if isinstance(options["target_modules"], str):
        options["target_modules"] = tuple(
            m.strip() for m in options["target_modules"].split(",") if m.strip()
        )
    config = build_train_config(options)
    on_event = event_printer(log_format, quiet, verbose)
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
    cut = report.get("faithful_targets") or {}
    if cut:
        click.echo(
            f"faithful targets: {cut['rows_cut']} descriptions cut to what their title and attributes support "
            f"({cut['sentences_cut']} sentences out), {cut['dropped']} rows left too short"
        )
    terms = ", ".join(
        f"{t['term']} ({t['kind']}, {t['unsupported']}/{t['stated']})" for t in report.get("claims", [])
    )
    click.echo(
        f"claims learned from the catalog (unsupported/stated): {terms or 'none'} (enrich claims show {out})"
    )


@click.command("export")
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

    Exit codes: 0 exported and verified; 1 a bug (traceback kept); 2 a bad option, adapter or output
    folder; 5 the engine or the export check failed (out of memory, llama.cpp's converter missing, outputs
    that do not match: nothing is written); 7 no room to write (disk full); 130 interrupted.
    """
    from enrich.model.export import export

    result = export(Path(adapter_dir), Path(output), fmt, dtype, event_printer(log_format, quiet, verbose))
    click.echo(
        f"export ({fmt}) verified: {output}\n"
        f"max |logit diff| {result.max_abs_logit_diff:.3g} <= tolerance {result.tolerance:g} on {result.prompts} "
        f"prompts, {result.tokens} positions; argmax agreement {result.argmax_agreement:.1%}; "
        f"greedy outputs identical {result.greedy_identical}/{result.prompts}"
    )
