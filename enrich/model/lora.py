"""The model under training: the base, loaded by the unsloth (GPU) or the transformers + peft backend, with
LoRA on it."""

from __future__ import annotations

import importlib.util
from typing import Any

from enrich.errors import ConfigError, EngineError
from enrich.events import Event
from enrich.model.trainconfig import TrainConfig


def pick_backend(name: str) -> str:
    """auto takes unsloth where it is installed and a GPU is present, else peft."""
    if name != "auto":
        return name
    import torch

    return "unsloth" if torch.cuda.is_available() and importlib.util.find_spec("unsloth") else "peft"


def start_backend(name: str, on_event: Event) -> tuple[str, bool]:
    """The backend (auto resolved) and whether a GPU is present; unsloth is imported here, before anything imports
    transformers, trl or peft, since it patches them at import."""
    backend = pick_backend(name)
    if backend == "unsloth":
        if importlib.util.find_spec("unsloth") is None:
            raise EngineError(
                "backend 'unsloth' needs the unsloth package: pip install 'enrich[gpu]' on a GPU machine"
            )
        import unsloth  # noqa: F401
    import torch

    gpu = torch.cuda.is_available()
    if backend == "unsloth" and not gpu:
        raise EngineError("backend 'unsloth' needs a CUDA GPU and none is present; use --backend peft")
    if name == "auto":
        on_event("info", {"message": f"backend: {backend} ({'GPU' if gpu else 'no GPU'})"})
    return backend, gpu


def load(backend: str, path: str, config: TrainConfig, gpu: bool, precision: str) -> tuple[Any, Any]:
    """The base model at path with LoRA on it, and its tokenizer."""
    if backend == "unsloth":
        return _load_unsloth(path, config)
    return _load_peft(path, config, gpu, precision)


def precision(name: str, gpu: bool) -> str:
    """The training precision: auto takes bf16 where the GPU has it, fp16 on older GPUs, fp32 on a CPU."""
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
