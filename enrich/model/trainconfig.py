"""The fine-tuning configuration: TrainConfig, the presets that fill its defaults, and how options override them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from enrich.config import (
    SEPARATOR_DESCRIPTION,
    Attribute,
    ClaimsConfig,
    Columns,
    CsvSeparator,
    Switch,
    attribute_list,
    build_config,
)
from enrich.errors import ConfigError

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainConfig(BaseModel):
    """Everything one fine-tuning run needs; a preset fills the defaults, options override them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: str = Field(description="Training catalog: Parquet, CSV or JSONL with titles and descriptions.")
    format: Literal["auto", "parquet", "csv", "jsonl"] = Field(
        "auto", description="File format; auto by suffix."
    )
    columns: Columns = Field(
        default_factory=Columns, description="Which columns hold the title and description."
    )
    separator: CsvSeparator = Field(",", description=SEPARATOR_DESCRIPTION)
    attributes: Annotated[list[Attribute], BeforeValidator(attribute_list)] = Field(
        default_factory=list,
        description="Columns stated in the prompt under the title (brand, colour, price...); recorded in enrich.json, "
        "so run and eval prompt the model with them.",
    )
    targets: Literal["faithful", "as-is"] = Field(
        "faithful",
        description="faithful: each description cut to the sentences whose claims the row's title and attributes "
        "support (a model learns to invent from references that state what only pictures show); as-is: unchanged.",
    )
    claims: ClaimsConfig = Field(
        default_factory=ClaimsConfig, description="Changes to the claim vocabulary learned from the catalog."
    )
    preset: Literal["reference", "cpu-small"] = Field(
        "cpu-small", description="Recipe the defaults come from."
    )
    base: str = Field(description="Base model: a preset name or a local HF directory.")
    template: Literal["alpaca", "alpaca-pt", "chat"] | None = Field(
        None,
        description="Prompt template; default the base model's. Recorded in enrich.json for run and eval.",
    )
    backend: Literal["auto", "unsloth", "peft"] = Field(
        "auto", description="auto: unsloth where it is installed and a GPU is present, else peft."
    )
    load_in_4bit: Switch = Field(
        True, description="On a GPU, load the base in 4 bits (bitsandbytes); never on CPU."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 where the GPU supports it, fp16 on older GPUs, fp32 on CPU."
    )
    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    alpha: int = Field(16, ge=1, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    target_modules: tuple[str, ...] = Field(PROJECTIONS, min_length=1, description="Modules that get LoRA.")
    lora_layers: int | None = Field(
        None,
        ge=1,
        description="LoRA on the top N decoder layers only (backward stops there: faster on CPU); all if unset.",
    )
    epochs: float = Field(3.0, gt=0, description="Passes over the training split (max_steps wins when set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int = Field(4, ge=1, description="Sequences per device step.")
    grad_accum: int = Field(4, ge=1, description="Device steps per optimizer step.")
    lr: float = Field(2e-4, gt=0, lt=1, description="Peak learning rate.")
    scheduler: Literal["constant_with_warmup", "linear", "cosine", "constant"] = Field(
        "constant_with_warmup", description="Learning-rate schedule."
    )
    warmup_ratio: float = Field(
        0.03, ge=0, lt=1, description="Share of steps spent warming the learning rate up."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(0.3, gt=0, description="Gradient clipping norm.")
    max_seq_length: int = Field(
        2048, ge=16, description="Rows whose prompt + description exceed this are dropped."
    )
    max_response_tokens: int | None = Field(
        None,
        ge=1,
        description="Rows whose description (with its EOS) exceeds this many tokens are dropped: set it to the "
        "max_new_tokens that run will use, and the model learns to end within it. Default: no limit.",
    )
    packing: Switch = Field(
        False, description="Pack several rows per sequence (off: each row is one sequence)."
    )
    train_on_prompt: Switch = Field(
        False, description="Loss on prompt and response (reference); default response only."
    )
    gradient_checkpointing: Switch = Field(
        True, description="Trade compute for memory (unsloth: its own variant)."
    )
    val_size: float = Field(0.05, gt=0, description="Validation split: a share below 1, else a row count.")
    min_chars: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        20,
        description=(
            "Descriptions shorter than this are junk. auto (cpu-small): 20, then only the longer half of the "
            "descriptions, at most 300 characters asked: a model that sees one-line answers writes one line."
        ),
    )
    max_rows: int | None = Field(None, ge=2, description="Use only the first N clean rows (quick runs).")
    seed: int = Field(3407, ge=0, description="Seed of the split, LoRA init and data order.")
    logging_steps: int = Field(5, ge=1, description="Steps between train-loss log entries.")
    eval_steps: int | None = Field(
        None, ge=1, description="Steps between validation losses; default about 10 a run."
    )
    save_steps: int | None = Field(
        None, ge=1, description="Steps between checkpoints; default as eval_steps."
    )
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept.")
    resume: Switch = Field(False, description="Continue from the last checkpoint in OUT/checkpoints.")
    sampling: dict[str, float | int | str] = Field(
        default_factory=dict, description="Recommended decoding written to enrich.json (run and eval use it)."
    )


# reference is the recipe (README, "Fine-tuning, export and evaluation"); cpu-small holds the settings measured best
# on 2 CPU cores (bench/RESULTS.md, "Fine-tuning on CPU").
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "reference": {"base": "llama-3.1-8b-4bit", "train_on_prompt": True},
    "cpu-small": {
        # Measured: 24.9 min on 2 cores, validation loss 3.55 to 3.34; against the base on 200 held-out rows
        # ROUGE-L +10%, unsupported numbers 41.5% (base 67%), 84.5% ending by EOS (base 45.5%); chrF lower (21.2
        # against 27.0) because the base writes twice the length.
        "base": "smollm2-135m",
        # Alpaca wording: the prompt holds no <|im_end|>, so a repetition penalty at decoding cannot suppress EOS.
        "template": "alpaca",
        "alpha": 32,
        "lora_layers": 10,  # backward stops at layer 20 of 30: ~1.6x faster steps on CPU
        "epochs": 1.0,
        "max_steps": 90,
        "batch_size": 8,
        "grad_accum": 1,
        "lr": 1e-3,
        "scheduler": "cosine",
        "warmup_ratio": 0.05,
        "max_grad_norm": 1.0,
        # Descriptions of 300+ characters (the longer half where a catalog's are shorter) that fit 352 tokens:
        # the model learns to write a full description and stop within 256 new tokens (trained on every length,
        # it learned from the many one-line descriptions and answered in one line).
        "min_chars": "auto",
        "max_seq_length": 352,
        "gradient_checkpointing": False,
        "val_size": 16,
        "eval_steps": 45,
        "logging_steps": 5,
        "save_steps": 45,
        # The penalty on the generated tokens only: over the prompt too it kept the model from copying the
        # brand and title words it was given (bench/RESULTS.md, "the CPU preset").
        "sampling": {
            "temperature": 0.0,
            "top_p": 1.0,
            "max_new_tokens": 256,
            "repetition_penalty": 1.15,
            "penalty_scope": "output",
        },
    },
}


def preset_defaults(field: str) -> dict[str, Any]:
    """A field's default under each preset: the preset's own value, else the field's default."""
    default = TrainConfig.model_fields[field].default
    return {name: values.get(field, default) for name, values in TRAIN_PRESETS.items()}


def build_train_config(options: dict[str, Any]) -> TrainConfig:
    """The preset's values (options["preset"], default cpu-small), then the options that are set (field names or
    dotted paths: columns.title), through the one merge path; every problem is reported together."""
    preset = options.get("preset") or "cpu-small"
    if preset not in TRAIN_PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(TRAIN_PRESETS)}")
    return build_config(TrainConfig, {**TRAIN_PRESETS[preset], "preset": preset}, options, source="finetune")
