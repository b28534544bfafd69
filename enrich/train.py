"""LoRA fine-tuning: `train(config, out_dir) -> Path`, with the unsloth (GPU) or transformers + peft backend."""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from enrich.config import Columns
from enrich.errors import ConfigError, EngineError

Event = Callable[[str, dict[str, Any]], None]
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
    load_in_4bit: bool = Field(
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
    packing: bool = Field(
        False, description="Pack several rows per sequence (off: each row is one sequence)."
    )
    train_on_prompt: bool = Field(
        False, description="Loss on prompt and response (reference); default response only."
    )
    gradient_checkpointing: bool = Field(
        True, description="Trade compute for memory (unsloth: its own variant)."
    )
    val_size: float = Field(0.05, gt=0, description="Validation split: a share below 1, else a row count.")
    min_chars: int = Field(20, ge=0, description="Descriptions shorter than this are junk.")
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
    resume: bool = Field(False, description="Continue from the last checkpoint in OUT/checkpoints.")
    sampling: dict[str, float | int] = Field(
        default_factory=dict, description="Recommended decoding written to enrich.json (run and eval use it)."
    )


# The reference recipe (DEVELOPERS.md); cpu-small holds the settings measured best on 2 CPU cores (bench/RESULTS.md).
PRESETS: dict[str, dict[str, Any]] = {
    "reference": {"base": "llama-3.1-8b-4bit", "train_on_prompt": True},
    "cpu-small": {
        # Run A of bench/RESULTS.md "Fine-tuning on CPU (issue 3)": measured there at step 20 of a cosine-60 run
        # (learning rate still 0.8-1e-3), which a constant rate after 1 warm-up step reproduces closely.
        "base": "smollm2-135m",
        # Alpaca wording: the prompt holds no <|im_end|>, so a repetition penalty at decoding cannot suppress EOS.
        "template": "alpaca",
        "alpha": 32,
        "lora_layers": 10,  # backward stops at layer 20 of 30: ~1.6x faster steps on CPU
        "epochs": 1.0,
        "max_steps": 20,
        "batch_size": 4,
        "grad_accum": 1,
        "lr": 1e-3,
        "scheduler": "constant_with_warmup",
        "warmup_ratio": 0.05,
        "max_grad_norm": 1.0,
        "max_seq_length": 192,
        "gradient_checkpointing": False,
        "val_size": 16,
        "eval_steps": 20,
        "logging_steps": 5,
        "save_steps": 10,
        "sampling": {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 128, "repetition_penalty": 1.15},
    },
}


def build_train_config(options: dict[str, Any]) -> TrainConfig:
    """Preset defaults, then the options that are set; validation problems are reported together."""
    preset = options.get("preset") or "cpu-small"
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    data = {**PRESETS[preset], "preset": preset, **{k: v for k, v in options.items() if v is not None}}
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(
            "\n".join(f"finetune: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        ) from None


def no_events(kind: str, data: dict[str, Any]) -> None:
    del kind, data


def pick_backend(name: str) -> str:
    """auto takes unsloth where it is installed and a GPU is present, else peft."""
    if name != "auto":
        return name
    import torch

    return "unsloth" if torch.cuda.is_available() and importlib.util.find_spec("unsloth") else "peft"


def train(config: TrainConfig, out_dir: Path, on_event: Event = no_events) -> Path:
    """Fine-tune a LoRA adapter on config.data into out_dir; returns out_dir."""
    backend = pick_backend(config.backend)
    if backend == "unsloth":
        # unsloth patches transformers, trl and peft at import, so it must come before them.
        if importlib.util.find_spec("unsloth") is None:
            raise EngineError(
                "backend 'unsloth' needs the unsloth package: pip install 'enrich[gpu]' on a GPU machine"
            )
        import unsloth  # noqa: F401
    import torch

    gpu = torch.cuda.is_available()
    if backend == "unsloth" and not gpu:
        raise EngineError("backend 'unsloth' needs a CUDA GPU and none is present; use --backend peft")
    if config.backend == "auto":
        on_event("info", {"message": f"backend: {backend} ({'GPU' if gpu else 'no GPU'})"})
    from enrich.models import resolve_model

    spec = resolve_model(config.base, gpu=gpu)
    if spec.adapter:
        raise ConfigError(f"base {config.base!r} is an adapter; give the full model it was trained on")
    if spec.needs_gpu and not gpu:
        raise EngineError(
            f"base {config.base!r} needs a GPU and none is present; use --preset cpu-small on CPU"
        )
    checkpoints = Path(out_dir) / "checkpoints"
    last = _last_checkpoint(checkpoints)
    if config.resume and last is None:
        raise ConfigError(f"{checkpoints}: no checkpoint to resume from; run without --resume")
    if not config.resume and (last is not None or (Path(out_dir) / "adapter_config.json").is_file()):
        raise ConfigError(
            f"{out_dir}: holds an earlier run; pass --resume to continue it or choose another -o"
        )
    from enrich.prompts import get_template

    template = get_template(config.template or spec.template)
    eos = spec.eos or ""
    precision = _precision(config.precision, gpu)
    from enrich import traindata

    t0 = time.perf_counter()
    rows = traindata.read_rows(
        config.data, config.format, config.columns
    )  # bad data fails before the model loads
    if backend == "unsloth":
        model, tokenizer = _load_unsloth(spec.path, config)
    else:
        model, tokenizer = _load_peft(spec.path, config, gpu, precision)
    if not eos:
        eos = tokenizer.eos_token
    if tokenizer.pad_token is None or tokenizer.pad_token == eos:
        # Padding with EOS would mask the EOS labels out of the loss in some collators: the model would never stop.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    data = traindata.prepare(
        rows,
        config.data,
        tokenizer,
        template,
        eos,
        config.max_seq_length,
        config.val_size,
        config.seed,
        config.min_chars,
        config.max_rows,
    )
    on_event("info", {"message": f"data: {json.dumps(data.counts)}"})
    trainer = _trainer(model, tokenizer, data, config, checkpoints, precision, gpu, on_event)
    initial = trainer.evaluate()["eval_loss"]
    trainer.train(resume_from_checkpoint=str(last) if config.resume and last else None)
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    # The last scheduled evaluation often falls on the last step; on CPU an evaluation costs minutes.
    if evals and evals[-1]["step"] == trainer.state.global_step:
        final = evals[-1]["eval_loss"]
    else:
        final = trainer.evaluate()["eval_loss"]
    wall = time.perf_counter() - t0
    out_dir = Path(out_dir)
    trainer.model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    from enrich import trainreport
    from enrich.models import write_enrich_json

    write_enrich_json(
        out_dir,
        {
            "kind": "adapter",
            "name": out_dir.name,
            "base": config.base if config.base in _preset_names() else str(Path(spec.path).resolve()),
            "template": template.name,
            "eos": eos,
            "stop": list(dict.fromkeys([eos, *spec.stop])),
            "sampling": {**spec.sampling, **config.sampling},
            "data": {
                "path": str(Path(config.data).resolve()),
                "fingerprint": data.fingerprint,
                **data.counts,
            },
            "training": config.model_dump(mode="json"),
        },
    )
    report = trainreport.build(trainer, data.counts, config, backend, precision, gpu, initial, final, wall)
    (out_dir / "training_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    trainreport.plot(report, out_dir / "loss.png")
    on_event("done", report)
    return out_dir


def _preset_names() -> set[str]:
    from enrich.models import PRESETS as MODEL_PRESETS

    return set(MODEL_PRESETS)


def _last_checkpoint(directory: Path) -> Path | None:
    found = [p for p in directory.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def _precision(name: str, gpu: bool) -> str:
    import torch

    if name == "fp16" and not gpu:
        raise ConfigError("precision fp16 needs a GPU; use --precision fp32 or bf16 on CPU")
    if name != "auto":
        return name
    if not gpu:
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _load_unsloth(path: str, config: TrainConfig) -> tuple[Any, Any]:
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=path, max_seq_length=config.max_seq_length, dtype=None, load_in_4bit=config.load_in_4bit
    )
    extra: dict[str, Any] = {}
    if config.lora_layers is not None:  # passed only when set: the reference recipe uses unsloth's defaults
        extra["layers_to_transform"] = _top_layers(model, config.lora_layers)
    model = FastLanguageModel.get_peft_model(
        model,
        r=config.r,
        target_modules=list(config.target_modules),
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        bias="none",
        use_gradient_checkpointing="unsloth" if config.gradient_checkpointing else False,
        random_state=config.seed,
        **extra,
    )
    return model, tokenizer


def _top_layers(model: Any, n: int | None) -> list[int] | None:
    """Indices of the top n decoder layers, or None for all."""
    if n is None:
        return None
    total = int(model.config.num_hidden_layers)
    return list(range(max(total - n, 0), total))  # n >= total: every layer


def _load_peft(path: str, config: TrainConfig, gpu: bool, precision: str) -> tuple[Any, Any]:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True}
    quantized = gpu and config.load_in_4bit
    if quantized:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise EngineError("4-bit loading needs bitsandbytes: pip install bitsandbytes, or pass --no-4bit")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["device_map"] = {"": 0}
    tokenizer = AutoTokenizer.from_pretrained(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        raise EngineError(f"{path}: cannot load the base model: {str(err).splitlines()[0]}") from None
    if quantized or getattr(model.config, "quantization_config", None):
        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, use_gradient_checkpointing=config.gradient_checkpointing
        )
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()  # type: ignore[no-untyped-call]
    missing = [
        m for m in config.target_modules if not any(n.endswith("." + m) for n, _ in model.named_modules())
    ]
    if missing:
        raise ConfigError(f"target_modules: {', '.join(missing)} not found in {path}; check --target-modules")
    lora = LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
        layers_to_transform=_top_layers(model, config.lora_layers),
    )
    return get_peft_model(model, lora), tokenizer


def _trainer(
    model: Any,
    tokenizer: Any,
    data: Any,
    config: TrainConfig,
    checkpoints: Path,
    precision: str,
    gpu: bool,
    on_event: Event,
) -> Any:
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    from enrich import traindata

    per_epoch = max(1, -(-len(data.train) // (config.batch_size * config.grad_accum)))
    total = config.max_steps or max(1, int(per_epoch * config.epochs))
    eval_steps = config.eval_steps or max(1, -(-total // 4))  # four evaluations a run, the last at the end
    args = SFTConfig(
        output_dir=str(checkpoints),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size * 2,
        gradient_accumulation_steps=config.grad_accum,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.lr,
        lr_scheduler_type=config.scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the steps (transformers 5)
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim="adamw_8bit" if gpu and importlib.util.find_spec("bitsandbytes") else "adamw_torch",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not gpu,
        gradient_checkpointing=False,  # the backends above set it up their own way
        max_length=config.max_seq_length,
        packing=config.packing,
        completion_only_loss=not config.train_on_prompt,
        logging_steps=config.logging_steps,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps or eval_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
    )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=traindata.to_dataset(data.train),
        eval_dataset=traindata.to_dataset(data.val),
        processing_class=tokenizer,
        callbacks=[_progress_callback(on_event, total)],
    )


def _progress_callback(on_event: Event, total: int) -> Any:
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """Turns trainer logs into progress events: step, loss, tokens/s, ETA."""

        def __init__(self) -> None:
            self.t0 = time.perf_counter()
            self.start_step = 0
            self.start_tokens = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0 = time.perf_counter()
            self.start_step = state.global_step
            self.start_tokens = state.num_input_tokens_seen

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any
        ) -> None:
            elapsed = time.perf_counter() - self.t0
            done = max(state.global_step - self.start_step, 1)
            left = max(state.max_steps or total, state.global_step) - state.global_step
            on_event(
                "progress",
                {
                    "step": state.global_step,
                    "steps": state.max_steps or total,
                    "loss": (logs or {}).get("loss"),
                    "eval_loss": (logs or {}).get("eval_loss"),
                    "tokens_per_s": (state.num_input_tokens_seen - self.start_tokens) / max(elapsed, 1e-9),
                    "eta_s": elapsed / done * left,
                },
            )

    return Progress()
