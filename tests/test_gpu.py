"""GPU tests: the vLLM engine on the embedded model's real weights, a killed run resumed, LoRA served vs merged.

Skipped without CUDA (conftest). On the device: bench/device/run.sh tests (bench/device/README.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enrich.config import ModelConfig
from enrich.model.engines import TransformersEngine, VLLMEngine
from enrich.model.generation import Sampling
from enrich.model.prompts import build_prompts, get_template
from enrich.model.reference import resolve_model

pytestmark = pytest.mark.gpu

TITLES = [
    "Stanley TRA708T Sharpshooter Heavy Duty Staple Gun",
    "Lodge 10.25 Inch Cast Iron Skillet, Pre-Seasoned",
    "Anker USB C Charger 20W, PIQ 3.0 Fast Charger",
    "Hydro Flask Wide Mouth Water Bottle, 32 oz, Stainless Steel",
]
GREEDY = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=32)
# Small model, small cache; eager mode skips compilation and CUDA graphs (seconds instead of a minute).
SMALL = {"gpu_memory_utilization": 0.25, "max_model_len": 2048}


def _prompts(engine: VLLMEngine | TransformersEngine) -> list[str]:
    return build_prompts(TITLES, get_template("chat"), engine.tokenizer.apply_chat_template)


def _vllm(ref: str) -> VLLMEngine:
    return VLLMEngine(resolve_model(ref), ModelConfig(engine="vllm", **SMALL), 0, enforce_eager=True)


def test_vllm_generates_real_text(embedded_dir: Path) -> None:
    engine = _vllm("smollm2-135m")
    try:
        prompts = _prompts(engine)
        too_long = (
            "word " * 3000
        )  # over max_model_len: answered empty for that row, the others still generate
        out = engine.generate([*prompts, too_long], GREEDY)
        again = engine.generate(prompts, GREEDY)
    finally:
        engine.close()
    for gen in out[:-1]:
        assert gen.finish_reason in ("stop", "length")
        assert 0 < gen.output_tokens <= 32 and gen.prompt_tokens > 10
        words = gen.text.split()
        assert len(words) >= 3, gen.text
        assert sum(w.isascii() for w in words) / len(words) > 0.9, gen.text  # English text, not token soup
    assert [g.text for g in again] == [g.text for g in out[:-1]]  # greedy is deterministic
    assert out[-1].text == "" and out[-1].output_tokens == 0 and out[-1].finish_reason == "length"
    print(json.dumps([g.text for g in out[:-1]], indent=1))


def test_transformers_continuous_batching_on_gpu(embedded_dir: Path) -> None:
    engine = TransformersEngine(resolve_model("smollm2-135m"), ModelConfig(device="cuda"), 4)
    try:
        out = engine.generate(_prompts(engine), GREEDY)
    finally:
        engine.close()
    assert all(len(g.text.split()) >= 3 and 0 < g.output_tokens <= 32 for g in out), out


def test_a_repetition_penalty_is_honoured_on_gpu(embedded_dir: Path) -> None:
    """transformers' continuous batching drops a repetition penalty (a log line, no error): with one, the GPU
    takes padded batches, so the penalty changes what greedy decoding writes, as it does on the CPU."""
    engine = TransformersEngine(resolve_model("smollm2-135m"), ModelConfig(device="cuda"), 4)
    try:
        plain = [g.text for g in engine.generate(_prompts(engine), GREEDY)]
        penalised = [
            g.text
            for g in engine.generate(_prompts(engine), dataclasses.replace(GREEDY, repetition_penalty=1.5))
        ]
    finally:
        engine.close()
    assert plain != penalised, plain


def _enrich(args: list[str], **kw: object) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "enrich.cli", "run", *args]
    return subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)  # type: ignore[call-overload]


def test_run_killed_and_resumed_on_gpu(embedded_dir: Path, catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    args = [
        str(catalog),
        "-o",
        str(out),
        "--engine",
        "vllm",
        "--model",
        "smollm2-135m",
        "--window-rows",
        "20",
        "--max-new-tokens",
        "64",
        "--temperature",
        "0",
        "--gpu-memory-utilization",
        "0.25",
        "--max-model-len",
        "2048",
        "--log-format",
        "json",
    ]
    # Its own session, so the kill takes vLLM's engine-core process with it, as a cron timeout or systemd would.
    first = _enrich(args, start_new_session=True)
    parts = out.parent / f"{out.name}.enrich" / "parts"
    deadline = time.monotonic() + 300
    while not list(parts.glob("part-*.parquet")):
        assert first.poll() is None, first.stdout.read() if first.stdout else ""
        assert time.monotonic() < deadline, "no part written in 300 s"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done_before = len(list(parts.glob("part-*.parquet")))
    assert not out.exists() and done_before < 10  # killed half way: 200 rows are 10 windows
    second = _enrich(args)
    log, _ = second.communicate(timeout=600)
    assert second.returncode in (0, 6), log
    import polars as pl

    result = pl.read_parquet(out)
    source = pl.read_parquet(catalog)
    assert result.height == source.height
    assert result["id"].to_list() == source["id"].to_list()  # one row per input row, input order
    assert (
        result["generated_description"].null_count()
        <= result.filter(pl.col("enrich_status") == "error").height
    )
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["resumed"] is True and report["counts"]["rows"] == source.height


def _adapter(base: Path, out: Path) -> Path:
    """A LoRA adapter with random non-zero weights on all seven projections of the embedded model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False)
    )
    with torch.no_grad():  # small enough to keep the text fluent, large enough to change it
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.mul_(0.1)
    peft.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    (out / "enrich.json").write_text(json.dumps({"base": "smollm2-135m", "template": "chat"}))
    return out


def _merge(adapter: Path, out: Path) -> Path:
    """The merged16 export's weights: the adapter merged into the 16-bit base (peft's merge_and_unload)."""
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    merged = AutoPeftModelForCausalLM.from_pretrained(adapter, dtype=torch.bfloat16).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(out)
    (out / "enrich.json").write_text(json.dumps({"base": "smollm2-135m", "template": "chat"}))
    return out


def test_lora_adapter_matches_merged_export(embedded_dir: Path, tmp_path: Path) -> None:
    adapter = _adapter(embedded_dir, tmp_path / "adapter")
    merged = _merge(adapter, tmp_path / "merged")
    texts = {}
    for name, ref in (("lora", adapter), ("merged", merged), ("base", "smollm2-135m")):
        engine = _vllm(str(ref))
        try:
            texts[name] = [g.text for g in engine.generate(_prompts(engine), GREEDY)]
        finally:
            engine.close()
    print(json.dumps(texts, indent=1))
    assert texts["lora"] != texts["base"]  # the adapter is served, not ignored
    # bf16 LoRA applied on the side and bf16 merged weights round differently; greedy text must still agree.
    same = sum(a == b for a, b in zip(texts["lora"], texts["merged"], strict=True))
    assert same >= len(TITLES) - 1, texts
