"""The vLLM engine (the production GPU engine) and the arguments it gives vllm.LLM. It imports vllm only when an
engine starts."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from enrich.config import ModelConfig
from enrich.errors import EngineError
from enrich.model.generation import Generation, Progress, Sampling, cuda_available, stop_token_ids
from enrich.model.reference import ModelSpec


def vllm_installed() -> bool:
    """True where the vllm package can be imported."""
    return importlib.util.find_spec("vllm") is not None


class VLLMEngine:
    """Production GPU engine: vllm.LLM offline; a whole window per call so its scheduler keeps the GPU full."""

    name = "vllm"

    def __init__(self, spec: ModelSpec, config: ModelConfig, batch_size: int, **engine_args: Any) -> None:
        """engine_args go to vllm.LLM as they are (benchmarks: load_format="dummy", enforce_eager=True)."""
        del batch_size  # vLLM batches by itself: max_num_seqs and max_num_batched_tokens bound a step

        _require_vllm()
        if importlib.util.find_spec("flashinfer") is None:
            # vLLM's default sampler needs FlashInfer; its Triton top-k/top-p kernel works without it.
            os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
        import torch

        # A forked engine-core process cannot use CUDA once this process has initialized it (tests, notebooks).
        if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"
        from vllm import LLM

        kwargs = _llm_args(spec, config, torch.cuda.get_device_properties(0).total_memory)
        kwargs.update(engine_args)
        try:
            self.llm = LLM(**kwargs)
        except Exception as err:  # vLLM raises plain RuntimeError/ValueError for OOM and bad settings
            raise EngineError(_start_failure(spec.ref, err)) from err
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.stop_ids = stop_token_ids(self.tokenizer, spec.stop)
        # A private copy of the Rust tokenizer: one encode_batch call per window, in parallel, and no state shared
        # with the prefetch thread, which renders and counts the next window's prompts meanwhile.
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        self._encoder = None
        if backend is not None:
            from tokenizers import Tokenizer

            self._encoder = Tokenizer.from_str(backend.to_str())
            self._encoder.no_truncation()
            self._encoder.no_padding()
        self.lora = None
        if spec.adapter:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, spec.adapter)

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, on_progress: Progress | None = None
    ) -> list[Generation]:
        del on_progress  # one call for the whole window: its scheduler batches inside it
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        # Tokenized here, once, in one batch call: the prompt's tokens are exactly what the transformers engine
        # and fine-tuning see (no BOS added on top of the template), and too-long prompts never reach vLLM,
        # where one of them would fail the whole call.
        if self._encoder is not None:
            encoded = [e.ids for e in self._encoder.encode_batch(list(prompts), add_special_tokens=False)]
        else:
            encoded = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        base = {
            "temperature": sampling.temperature,
            "top_p": sampling.top_p if sampling.temperature > 0 else 1.0,
            "repetition_penalty": sampling.repetition_penalty,
            "stop_token_ids": self.stop_ids,
            "ignore_eos": sampling.ignore_eos,
            "skip_special_tokens": False,
        }
        requests: list[Any] = []
        params: list[Any] = []
        sent: list[int] = []
        for i, ids in enumerate(encoded):
            room = min(sampling.max_new_tokens, self.max_model_len - len(ids))
            if room < 1:
                continue
            requests.append(TokensPrompt(prompt_token_ids=ids))
            # A seed per prompt: a row's text does not depend on how the scheduler batches it.
            seed = sampling.seed * 1_000_003 + i if sampling.temperature > 0 else None
            fixed = room if sampling.ignore_eos else 0
            params.append(SamplingParams(max_tokens=room, min_tokens=fixed, seed=seed, **base))
            sent.append(i)
        try:
            outputs = []
            if requests:
                outputs = self.llm.generate(requests, params, lora_request=self.lora, use_tqdm=False)
        except Exception as err:
            if "out of memory" in str(err).lower():
                raise EngineError(
                    f"vLLM ran out of GPU memory: {_first_line(err)}; lower --max-num-seqs or --max-model-len"
                ) from err
            raise EngineError(f"vLLM failed while generating: {_first_line(err)}") from err
        # A prompt with no room left is answered empty with finish "length": the row is flagged, the window goes on.
        results = [Generation("", "length", len(ids), 0) for ids in encoded]
        for i, out in zip(sent, outputs, strict=True):
            best = out.outputs[0]
            if best.finish_reason not in ("stop", "length"):
                raise EngineError(f"vLLM ended a request with finish reason {best.finish_reason!r}")
            results[i] = Generation(best.text, best.finish_reason, len(encoded[i]), len(best.token_ids))
        return results

    def close(self) -> None:
        """Stop vLLM's engine-core process and give its GPU memory back."""
        llm = self.__dict__.pop("llm", None)
        if llm is None:
            return
        with contextlib.suppress(Exception):
            llm.llm_engine.engine_core.shutdown()
        del llm
        import gc

        gc.collect()


def _require_vllm() -> None:

    if not vllm_installed():
        raise EngineError("engine 'vllm' needs the vllm package: pip install 'enrich[gpu]' on a GPU machine")
    if not cuda_available():
        raise EngineError("engine 'vllm' needs a CUDA GPU and none is present; use --engine transformers")


def _adapter_rank(adapter: str) -> int:
    cfg = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    rank = int(cfg.get("r", 16))
    return next(r for r in (8, 16, 32, 64, 128, 256, 512) if r >= rank)


def _llm_args(spec: ModelSpec, config: ModelConfig, gpu_bytes: int) -> dict[str, Any]:
    """vllm.LLM's arguments from the job's model settings, on a GPU of gpu_bytes memory.

    On a GPU of 70 GiB or more, the scheduler sizes the job leaves unset are 2048 sequences and 65536 tokens a step,
    where vLLM's own (1024 and 16384) left an H200 a fifth slower on an 8B model; and CUDA graphs are captured up to
    the step's sequence count (at most 2048), where vLLM's default stops at 512 and larger steps ran without them:
    enrich's runs then kept 0.96-0.97 of bare vLLM's speed, against 0.92 (bench/RESULTS.md, GPU section).
    Smaller GPUs keep vLLM's defaults.
    """
    args: dict[str, Any] = {
        "model": spec.path,
        "tokenizer": spec.path,
        "dtype": config.dtype,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "tensor_parallel_size": config.tensor_parallel_size,
        "enable_prefix_caching": config.enable_prefix_caching,
        "seed": 0,
    }
    large = gpu_bytes >= 70 * 2**30
    if large:
        args.update(max_num_seqs=2048, max_num_batched_tokens=65536)
    for key in ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "quantization"):
        if getattr(config, key) is not None:
            args[key] = getattr(config, key)
    if large and args["max_num_seqs"] > 256:  # vLLM captures up to min(2 x max_num_seqs, 512) by itself
        args["compilation_config"] = {"max_cudagraph_capture_size": min(args["max_num_seqs"], 2048)}
    if spec.adapter:
        args.update(enable_lora=True, max_loras=1, max_lora_rank=_adapter_rank(spec.adapter))
    return args


def _start_failure(ref: str, err: BaseException) -> str:
    """One line that says why vLLM did not start and what to change."""
    text = f"{err!r} {err.__cause__!r}".lower()
    if "out of memory" in text or "no available memory" in text or "kv cache" in text:
        hint = "not enough GPU memory: lower --max-model-len or --max-num-seqs, or raise --gpu-memory-utilization"
    elif "cuda" in text and ("no cuda" in text or "driver" in text or "not available" in text):
        hint = "no usable CUDA GPU"
    else:
        hint = "see vLLM's log above for the cause"
    return f"vLLM could not start {ref!r}: {_first_line(err)} ({hint})"


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]
