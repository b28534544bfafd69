"""The Engine protocol and its engines. Engines see prompts and sampling only: no rows, files or polars."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enrich.config import ModelConfig, SamplingConfig
from enrich.errors import ConfigError, EngineError
from enrich.model.generation import (
    Engine,
    Generation,
    Progress,
    Sampling,
    cuda_available,
    stop_token_ids,
)
from enrich.model.reference import ModelSpec
from enrich.model.vllm import VLLMEngine, vllm_installed


def resolve_sampling(config: SamplingConfig, spec: ModelSpec) -> Sampling:
    """How to sample this model: each field the config leaves unset takes the model's own (its enrich.json, else
    its preset's)."""
    own = spec.sampling

    def pick(name: str) -> float | int | str:
        value: float | int | str | None = getattr(config, name)
        return value if value is not None else own[name]

    return Sampling(
        temperature=float(pick("temperature")),
        top_p=float(pick("top_p")),
        max_new_tokens=int(pick("max_new_tokens")),
        repetition_penalty=float(pick("repetition_penalty")),
        seed=config.seed,
        penalty_scope=str(config.penalty_scope or own.get("penalty_scope", "all")),
    )


def _torch_dtype(name: str, device: str) -> Any:
    import torch

    if name == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, name)


# What save_pretrained writes for a tokenizer; an adapter folder that holds none of them is a bare PEFT checkpoint.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "special_tokens_map.json",
)


def load_tokenizer(spec: ModelSpec) -> Any:
    """The model's tokenizer: the adapter's own where fine-tuning saved one beside it, else the base's.

    A bare PEFT checkpoint holds no tokenizer, and needs none: LoRA leaves the vocabulary alone, so the base's is
    the one it was trained with. An adapter's own tokenizer that does not load is an error, never replaced by the
    base's: its pad token, EOS or chat template may be what the model was trained to.
    """
    from transformers import AutoTokenizer

    if spec.adapter and any((Path(spec.adapter) / name).is_file() for name in TOKENIZER_FILES):
        try:
            return AutoTokenizer.from_pretrained(spec.adapter)
        except Exception as err:  # a damaged file fails in json, tokenizers or transformers, each its own way
            cause = f"{type(err).__name__}: {err}".splitlines()[0]
            raise ConfigError(
                f"{spec.adapter}: its tokenizer does not load ({cause}); copy the fine-tuned folder again"
            ) from None
    try:
        return AutoTokenizer.from_pretrained(spec.path)
    except (OSError, ValueError) as err:
        raise EngineError(
            f"model {spec.ref!r}: cannot load its tokenizer from {spec.path}: {err}".splitlines()[0]
        ) from None


def special_tokens(tokenizer: Any) -> tuple[str, ...]:
    """Every special-token string of a tokenizer (named ones such as EOS, and every added token marked special,
    Llama 3's reserved ones included): the strings that prompts.neutralise keeps catalog text from spelling."""
    if tokenizer is None:
        return ()
    found = set(getattr(tokenizer, "all_special_tokens", None) or ())
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    found.update(token.content for token in added.values() if getattr(token, "special", False))
    return tuple(sorted(t for t in found if isinstance(t, str) and t))


@dataclass(frozen=True)
class PromptSide:
    """What building and checking prompts needs of an engine (its tokenizer and context), without weights."""

    tokenizer: Any
    max_model_len: int


def prompt_side(engine_name: str, spec: ModelSpec, config: ModelConfig) -> PromptSide:
    """An engine's prompt side, read from the model directory: seconds where the engine takes minutes."""
    if engine_name == "echo":
        return PromptSide(None, EchoEngine.max_model_len)
    from transformers import AutoConfig

    # The same rule as the engines: the job's max_model_len, else the model's own context.
    length = config.max_model_len
    if not length:
        try:
            model_config = AutoConfig.from_pretrained(spec.path)
        except (OSError, ValueError) as err:
            raise EngineError(
                f"model {spec.ref!r}: cannot read its config.json in {spec.path}: {err}".splitlines()[0]
            ) from None
        length = int(getattr(model_config, "max_position_embeddings", 2048) or 2048)
    return PromptSide(load_tokenizer(spec), length)


def load_hf(
    spec: ModelSpec, dtype: str = "auto", device: str | None = None, merge_adapter: bool = False
) -> tuple[Any, Any]:
    """Load tokenizer and model (with the adapter on top) from a local directory, safetensors only.

    merge_adapter folds the adapter into the base's weights in memory: the same model, without the LoRA
    matmuls of every layer at every step (generation on CPU ran several times slower unmerged).
    The export check keeps it unmerged: that is the reference a merged export is compared with.
    """
    import torch
    from transformers import AutoModelForCausalLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            spec.path, dtype=_torch_dtype(dtype, device), use_safetensors=True
        )
    except OSError as err:
        raise EngineError(
            f"model {spec.ref!r}: cannot load weights from {spec.path}: {err}".splitlines()[0]
        ) from None
    if spec.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, spec.adapter)  # type: ignore[assignment]
        # Never into quantized (4-bit) weights: that merge rounds the adapter away.
        if merge_adapter and getattr(model.config, "quantization_config", None) is None:
            model = model.merge_and_unload()  # type: ignore[operator]
    model.to(device).eval()  # type: ignore[arg-type]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer, model


def continuous_ok(sampling: Sampling) -> bool:
    """Whether transformers' continuous batching decodes as asked: transformers 5.17's generate_batch drops a
    repetition penalty (with a log line, not an error), so a run or an eval that asks for one would get texts
    decoded without it, looping where the penalty would have stopped them. Such sampling takes padded batches."""
    return sampling.repetition_penalty == 1.0


def repetition_kwargs(sampling: Sampling, prompt_length: int) -> dict[str, Any]:
    """generate()'s arguments for the repetition penalty. transformers' own counts every token of the sequence,
    the prompt's too; with penalty_scope "output" a logits processor counts only the tokens after the (left-
    padded, so common) prompt length: the product's brand or size, stated in the prompt, can still be copied."""
    if sampling.penalty_scope != "output" or sampling.repetition_penalty == 1.0:
        return {"repetition_penalty": sampling.repetition_penalty}
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    penalty = sampling.repetition_penalty

    class OutputRepetitionPenalty(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            generated = input_ids[:, prompt_length:]
            if generated.shape[1] == 0:
                return scores
            # As transformers' penalty does: a positive logit divided, a negative one multiplied.
            seen = torch.gather(scores, 1, generated)
            seen = torch.where(seen < 0, seen * penalty, seen / penalty)
            return scores.scatter(1, generated, seen)

    return {"repetition_penalty": 1.0, "logits_processor": LogitsProcessorList([OutputRepetitionPenalty()])}


def check_sampling(engine_name: str, sampling: Sampling) -> None:
    """Refuse sampling an engine cannot honour, before any model loads."""
    if engine_name == "vllm" and sampling.penalty_scope == "output" and sampling.repetition_penalty != 1.0:
        raise ConfigError(
            "vLLM's repetition penalty counts the prompt's tokens too: set sampling.penalty_scope = \"all\" "
            "(--penalty-scope all) or use --engine transformers"
        )


class TransformersEngine:
    """CPU reference engine: batched generate with left padding, prompts sorted by length."""

    name = "transformers"

    def __init__(self, spec: ModelSpec, config: ModelConfig, batch_size: int) -> None:
        self.tokenizer, self.model = load_hf(spec, config.dtype, config.device, merge_adapter=True)
        self.batch_size = batch_size
        self.device = self.model.device
        self.max_model_len = config.max_model_len or int(
            getattr(self.model.config, "max_position_embeddings", 2048) or 2048
        )
        self.stop_ids = stop_token_ids(self.tokenizer, spec.stop, self.model.generation_config.eos_token_id)

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, on_progress: Progress | None = None
    ) -> list[Generation]:
        import torch

        try:
            return self._generate(prompts, sampling, on_progress)
        except (torch.OutOfMemoryError, MemoryError):
            raise EngineError(
                f"out of memory generating {len(prompts)} prompts on {self.device} in batches of "
                f"{self.batch_size}; lower --batch-size or --max-new-tokens (a run's finished windows are saved)"
            ) from None

    def _generate(
        self, prompts: Sequence[str], sampling: Sampling, on_progress: Progress | None
    ) -> list[Generation]:
        import torch

        encoded = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        if self.device.type == "cuda" and hasattr(self.model, "generate_batch") and continuous_ok(sampling):
            return self._generate_continuous(encoded, sampling)
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        results: list[Generation | None] = [None] * len(prompts)
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start : start + self.batch_size]
            batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
            # A seed per batch: the same window gives the same text whether or not earlier windows ran.
            torch.manual_seed(sampling.seed * 1_000_003 + b)
            kwargs: dict[str, Any] = {
                "max_new_tokens": sampling.max_new_tokens,
                **repetition_kwargs(sampling, batch["input_ids"].shape[1]),
                "pad_token_id": self.tokenizer.pad_token_id,
                "eos_token_id": self.stop_ids or None,
            }
            if sampling.temperature > 0:
                kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if sampling.ignore_eos:
                kwargs.update(min_new_tokens=sampling.max_new_tokens, eos_token_id=None)
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=batch["input_ids"].to(self.device),
                    attention_mask=batch["attention_mask"].to(self.device),
                    **kwargs,
                )
            new = out[:, batch["input_ids"].shape[1] :].tolist()
            for row, i in enumerate(idx):
                results[i] = self._finish(new[row], len(encoded[i]), sampling)
            if on_progress is not None:  # on a CPU a batch takes tens of seconds: the terminal shows each
                on_progress(start + len(idx))
        return [r for r in results if r is not None]

    def _generate_continuous(self, encoded: list[list[int]], sampling: Sampling) -> list[Generation]:
        """On a GPU: transformers' continuous batching (paged KV cache, no padding), all prompts in one call.
        Only for sampling it honours in full (continuous_ok)."""
        import torch
        from transformers import GenerationConfig

        config = GenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=sampling.max_new_tokens,
            do_sample=sampling.temperature > 0,
            temperature=sampling.temperature if sampling.temperature > 0 else None,
            top_p=sampling.top_p if sampling.temperature > 0 else None,
            repetition_penalty=sampling.repetition_penalty,
            eos_token_id=-1 if sampling.ignore_eos or not self.stop_ids else self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        torch.manual_seed(sampling.seed)
        # generate_batch fails inside torch.inference_mode (its cache tensors are updated in place); no_grad works.
        with torch.no_grad():
            outputs = self.model.generate_batch(inputs=encoded, generation_config=config, progress_bar=False)
        results = []
        for ids, out in zip(encoded, outputs.values(), strict=True):
            if out.error:
                raise EngineError(f"transformers continuous batching failed on a prompt: {out.error}")
            results.append(self._finish(list(out.generated_tokens), len(ids), sampling))
        return results

    def _decode(self, tokens: list[int]) -> str:
        # BPE text must not get WordPiece's space clean-up (it would eat spaces before punctuation).
        return str(self.tokenizer.decode(tokens, clean_up_tokenization_spaces=False))

    def _finish(self, tokens: list[int], prompt_tokens: int, sampling: Sampling) -> Generation:
        stop_at = next((k for k, t in enumerate(tokens) if t in self.stop_ids), None)
        if stop_at is not None and not sampling.ignore_eos:
            return Generation(self._decode(tokens[:stop_at]), "stop", prompt_tokens, stop_at + 1)
        return Generation(self._decode(tokens), "length", prompt_tokens, len(tokens))

    def close(self) -> None:
        del self.model


class EchoEngine:
    """No model: answers at once with the product's own words (the prompt's input lines) and a fixed sentence.
    For measuring the pipeline around generation, and for tests of the mechanics."""

    name = "echo"
    tokenizer = None
    max_model_len = 1 << 30
    TEXT = (
        "A sturdy, reliable product built for daily use. It is easy to set up, simple to clean and made "
        "to last, with a design that fits homes, offices and workshops alike."
    )

    def __init__(self, spec: ModelSpec, config: ModelConfig, batch_size: int) -> None:
        del spec, config, batch_size

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, on_progress: Progress | None = None
    ) -> list[Generation]:
        return [Generation(f"{_product_words(p)}. {self.TEXT}", "stop", len(p) // 4, 32) for p in prompts]

    def close(self) -> None:
        pass


def _product_words(prompt: str) -> str:
    """The lines of a text template's prompt that are neither the template's own nor blank: the product block."""
    lines = prompt.split("\n")
    # The block is between the template's last two markers (### Input / ### Response, or their translation).
    marks = [k for k, line in enumerate(lines) if line.startswith("### ")]
    inside = lines[marks[-2] + 1 : marks[-1]] if len(marks) >= 2 else lines
    return " ".join(line.strip() for line in inside if line.strip())


ENGINES: dict[str, Callable[[ModelSpec, ModelConfig, int], Engine]] = {
    "transformers": TransformersEngine,
    "vllm": VLLMEngine,
    "echo": EchoEngine,
}


def pick_engine(name: str) -> str:
    """Resolve 'auto': vllm where it is installed and a GPU is present, else transformers."""
    if name != "auto":
        return name
    return "vllm" if vllm_installed() and cuda_available() else "transformers"


def device_problem(device: str | None) -> str | None:
    """Why this machine cannot run on the torch device (cpu, cuda, cuda:N, mps; None: the engine picks), or None."""
    if device is None or device == "cpu":
        return None
    import torch

    if device == "mps":
        if torch.backends.mps.is_available():
            return None
        return "--device mps: this machine has no Apple GPU (MPS); use --device cpu, or leave --device unset"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return f"--device {device}: this machine has no CUDA GPU; use --device cpu, or leave --device unset"
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        return f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
    return None


def make_engine(name: str, spec: ModelSpec, config: ModelConfig, batch_size: int) -> Engine:
    """Build the named engine; what the machine lacks is refused here, before any weights load."""
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}; choose one of auto, {', '.join(ENGINES)}")
    if name == "transformers":  # the one engine that takes a device
        why = device_problem(config.device)
        if why:
            raise EngineError(why)
    if spec.needs_gpu and name != "echo" and not cuda_available():
        raise EngineError(
            f"model {spec.ref!r} needs a GPU and none is present; use the smollm2-135m preset on CPU"
        )
    return ENGINES[name](spec, config, batch_size)
