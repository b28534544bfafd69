"""GPU generation benchmark (issue 4): transformers, bare vLLM and `enrich run`, same prompts, same work.

Speed runs use the Llama-3.1-8B architecture with random weights (no hub on the device) and the embedded
model's tokenizer; every prompt generates exactly NEW_TOKENS tokens (ignore_eos / min_new_tokens), sampled at
temperature 0.7, top-p 0.9. Prompts are real titles (bench/data/gpu_catalog.parquet) in the chat template,
built by enrich's own prompt code. bench/device/run.sh runs it on the device; see bench/device/README.md.

  python bench/gpu_generate.py model DIR                  # config.json + tokenizer, no weights
  python bench/gpu_generate.py hf DIR PARTS               # (a) one row at a time, (b) batched, (c) generate_batch
  python bench/gpu_generate.py vllm DIR PARTS --label L [--max-num-seqs N ...] [--enrich-windows 8192,512]
  python bench/gpu_generate.py report PARTS               # bench/results/gpu_generate.json + bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tarfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "gpu_catalog.parquet"
TOKENIZER = HERE / "data" / "smollm2-tokenizer.tar.xz"
NEW_TOKENS = 256
TEMPERATURE, TOP_P = 0.7, 0.9
LLAMA_31_8B = {  # the published Llama-3.1-8B shapes; vocabulary of the embedded tokenizer
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
    "max_position_embeddings": 8192,
    "vocab_size": 49152,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
    "torch_dtype": "bfloat16",
    "dtype": "bfloat16",
}


def make_model(out: Path) -> Path:
    """A model directory with the 8B architecture, the embedded tokenizer and enrich.json; no weights."""
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(TOKENIZER) as tar:
        tar.extractall(out, filter="data")
    (out / "config.json").write_text(json.dumps(LLAMA_31_8B, indent=2))
    info = {
        "name": "llama-3.1-8b-arch-random",
        "template": "chat",
        "eos": "<|im_end|>",
        "stop": ["<|im_end|>"],
    }
    (out / "enrich.json").write_text(json.dumps(info, indent=2))
    return out


def titles(n: int) -> tuple[list[str], list[str]]:
    """The first n ids and titles of the bench catalog (real Amazon titles), stripped as enrich does."""
    import pyarrow.parquet as pq

    table = pq.read_table(DATA, columns=["id", "title"]).slice(0, n)
    if table.num_rows < n:
        raise SystemExit(f"{DATA} has {table.num_rows} rows, fewer than --prompts {n}")
    return table["id"].to_pylist(), [t.strip() for t in table["title"].to_pylist()]


ATTRIBUTES = (("brand", "Brand"), ("category", "Category"))


def products(n: int, attributes: bool) -> list[str]:
    """What the prompts state of the first n products: the title, and with attributes the Brand and Category
    lines that `enrich run --attr brand=Brand --attr category=Category` adds (enrich's own product block)."""
    import pyarrow.parquet as pq

    from enrich.model.prompts import product_block, stated_attributes

    tls = titles(n)[1]
    if not attributes:
        return tls
    columns = pq.read_table(DATA, columns=[c for c, _ in ATTRIBUTES]).slice(0, n).to_pydict()
    stated = stated_attributes(ATTRIBUTES, columns, n)
    return [product_block(t, a) for t, a in zip(tls, stated, strict=True)]


def prompts_for(tokenizer: Any, n: int, attributes: bool = False) -> list[str]:
    """The prompts `enrich run` builds for these products (chat template of the model's tokenizer)."""
    from enrich.model.prompts import build_prompts, get_template

    return build_prompts(products(n, attributes), get_template("chat"), tokenizer.apply_chat_template)


class GpuSampler:
    """Samples NVML's GPU utilization every 50 ms while a measurement runs (is the GPU kept busy?)."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        try:
            import pynvml

            pynvml.nvmlInit()
            # NVML numbers the host's GPUs and ignores CUDA_VISIBLE_DEVICES: sample the one this process uses.
            first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(first) if first.isdigit() else 0)
        except Exception:
            return self

        def loop() -> None:
            while not self.stop.wait(0.05):
                self.samples.append(int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))

        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join()

    @property
    def busy(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def write_part(parts: Path, label: str, **data: Any) -> None:
    parts.mkdir(parents=True, exist_ok=True)
    rows, secs, toks = data["rows"], data["seconds"], data["output_tokens"]
    data.update(rows_per_s=round(rows / secs, 3), output_tokens_per_s=round(toks / secs, 1), label=label)
    (parts / f"{label}.json").write_text(json.dumps(data, indent=2))
    print(
        f"{label:40s} rows={rows:5d} s={secs:8.2f} rows/s={rows / secs:9.2f} tok/s={toks / secs:10.1f}",
        flush=True,
    )


DEVICE = os.environ.get("BENCH_DEVICE", "cuda")  # cpu only for a local smoke test of the script


def _sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"


def bench_hf(model_dir: Path, parts: Path, n_one: int, n_batch: int, batch_size: int, n_cb: int) -> None:
    """(a) generate one row at a time, (b) batched generate with left padding, (c) generate_batch."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    prompts = prompts_for(tok, max(n_one, n_batch, n_cb))
    torch.manual_seed(0)
    t = time.perf_counter()
    config = AutoConfig.from_pretrained(model_dir)
    if os.environ.get("BENCH_TINY"):  # local smoke test: same code, a 2-layer model
        config.update(
            {
                "num_hidden_layers": 2,
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "head_dim": 16,
            }
        )
    with torch.device(DEVICE):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.eval()
    print(f"transformers: random 8B built on the GPU in {time.perf_counter() - t:.1f}s", flush=True)
    fixed = {
        "max_new_tokens": NEW_TOKENS,
        "min_new_tokens": NEW_TOKENS,
        "do_sample": True,
        "temperature": TEMPERATURE,
        "top_p": TOP_P,
        "pad_token_id": tok.pad_token_id,
    }
    common = {"device": _device_name(), "new_tokens": NEW_TOKENS}

    def run_batch(batch: list[str]) -> int:
        enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(DEVICE)
        with torch.inference_mode():
            out = model.generate(**enc, **fixed)
        return int((out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0])

    run_batch(prompts[:2])  # warm-up: kernels, allocator
    _sync()
    t, toks = time.perf_counter(), 0
    for p in prompts[:n_one]:
        toks += run_batch([p])
    _sync()
    write_part(
        parts,
        "a_transformers_one_row",
        engine="transformers generate, one row at a time",
        rows=n_one,
        seconds=time.perf_counter() - t,
        output_tokens=toks,
        **common,
    )
    t, toks = time.perf_counter(), 0
    for start in range(0, n_batch, batch_size):
        toks += run_batch(prompts[start : start + batch_size])
    _sync()
    write_part(
        parts,
        "b_transformers_batched",
        engine=f"transformers generate, batches of {batch_size}",
        rows=n_batch,
        seconds=time.perf_counter() - t,
        output_tokens=toks,
        batch_size=batch_size,
        **common,
    )
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    ids = tok(prompts[:n_cb], add_special_tokens=False)["input_ids"]
    config = GenerationConfig(
        max_new_tokens=NEW_TOKENS,
        do_sample=True,
        temperature=TEMPERATURE,
        top_p=TOP_P,
        eos_token_id=-1,
        pad_token_id=tok.pad_token_id,
    )
    t = time.perf_counter()
    out = model.generate_batch(
        inputs=ids, generation_config=config, progress_bar=False
    )  # not in inference_mode
    _sync()
    toks = sum(len(o.generated_tokens) for o in out.values())
    write_part(
        parts,
        "c_transformers_generate_batch",
        engine="transformers generate_batch (continuous batching)",
        rows=len(out),
        seconds=time.perf_counter() - t,
        output_tokens=toks,
        **common,
    )


@dataclasses.dataclass
class FixedLength:
    """The engine under test, with ignore_eos forced: enrich then generates exactly as many tokens as bare vLLM."""

    engine: Any

    def __post_init__(self) -> None:
        self.name, self.tokenizer, self.max_model_len = (
            self.engine.name,
            self.engine.tokenizer,
            self.engine.max_model_len,
        )

    def generate(self, prompts: Any, sampling: Any, on_progress: Any = None) -> Any:
        return self.engine.generate(prompts, dataclasses.replace(sampling, ignore_eos=True), on_progress)

    def close(self) -> None:
        pass


def effective_settings(llm: Any) -> dict[str, Any]:
    """What the engine runs with, enrich's defaults included: scheduler sizes and the CUDA-graph range."""
    config = getattr(llm.llm_engine, "vllm_config", None)
    if config is None:
        return {}
    return {
        "max_num_seqs": config.scheduler_config.max_num_seqs,
        "max_num_batched_tokens": config.scheduler_config.max_num_batched_tokens,
        "max_cudagraph_capture_size": config.compilation_config.max_cudagraph_capture_size,
        "quantization": config.model_config.quantization,
    }


def bench_vllm(
    model_dir: Path,
    parts: Path,
    label: str,
    n: int,
    settings: dict[str, Any],
    windows: list[int],
    bare: bool,
    cudagraph_max: int | None = None,
    attributes: bool = False,
) -> None:
    """(d) bare vllm.LLM.generate on the prompt list; (e) enrich.run.loop.run, Parquet in and out, same engine."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from vllm import SamplingParams

    from enrich.config import JobConfig, ModelConfig
    from enrich.model.engines import VLLMEngine
    from enrich.model.reference import resolve_model, versions

    spec = resolve_model(str(model_dir))
    t = time.perf_counter()
    job_model = {"ref": str(model_dir), "engine": "vllm", **settings}
    extra: dict[str, Any] = {"load_format": "dummy"}
    if cudagraph_max:  # vLLM captures CUDA graphs up to min(2 * max_num_seqs, 512) sequences by default
        extra["compilation_config"] = {"max_cudagraph_capture_size": cudagraph_max}
        settings = {**settings, "max_cudagraph_capture_size": cudagraph_max}
    engine = VLLMEngine(spec, ModelConfig(**job_model), 0, **extra)
    startup = time.perf_counter() - t
    print(f"{label}: vLLM started in {startup:.1f}s with {settings}", flush=True)
    llm = engine.llm
    prompts = prompts_for(engine.tokenizer, n, attributes)
    prompt_tokens = sum(len(ids) for ids in engine.tokenizer(prompts, add_special_tokens=False)["input_ids"])
    common = {
        "attributes": [label for _, label in ATTRIBUTES] if attributes else [],
        "mean_prompt_tokens": round(prompt_tokens / len(prompts), 1),
        "device": torch.cuda.get_device_name(),
        "new_tokens": NEW_TOKENS,
        "settings": settings,
        "startup_s": round(startup, 1),
        "effective": effective_settings(llm),
        "versions": versions(),
    }
    warm = SamplingParams(temperature=TEMPERATURE, top_p=TOP_P, max_tokens=16)
    llm.generate(prompts[:256], warm, use_tqdm=False)
    if bare:
        params = SamplingParams(
            temperature=TEMPERATURE,
            top_p=TOP_P,
            max_tokens=NEW_TOKENS,
            min_tokens=NEW_TOKENS,
            ignore_eos=True,
        )
        llm.reset_prefix_cache()
        with GpuSampler() as gpu:
            t = time.perf_counter()
            outs = llm.generate(prompts, params, use_tqdm=False)
            secs = time.perf_counter() - t
        toks = sum(len(o.outputs[0].token_ids) for o in outs)
        write_part(
            parts,
            f"d_vllm_{label}",
            engine="vllm.LLM.generate (bare)",
            rows=len(outs),
            seconds=secs,
            output_tokens=toks,
            gpu_util_pct=gpu.busy,
            **common,
        )
    ids, tls = titles(n)
    work = Path(os.environ.get("BENCH_WORK", "/tmp/enrich-bench"))
    work.mkdir(parents=True, exist_ok=True)
    source = work / f"catalog-{n}.parquet"
    pq.write_table(pa.table({"id": ids, "title": tls}), source)
    for w in windows:
        from enrich.run import run  # polars: only the (e) runs need it

        out = work / f"out-{label}-{w}.parquet"
        job = JobConfig.model_validate(
            {
                "input": {"path": str(source), "columns": {"id": "id", "title": "title", "content": None}},
                "output": {"path": str(out), "overwrite": True},
                "model": job_model,
                "sampling": {
                    "temperature": TEMPERATURE,
                    "top_p": TOP_P,
                    "max_new_tokens": NEW_TOKENS,
                    "repetition_penalty": 1.0,
                },
                "batch": {"window_rows": w},
                "run": {"restart": True},
            }
        )
        llm.reset_prefix_cache()
        with GpuSampler() as gpu:
            t = time.perf_counter()
            report = run(job, engine=FixedLength(engine))  # type: ignore[arg-type]
            secs = time.perf_counter() - t
        rows_out = pq.read_metadata(out).num_rows
        assert rows_out == n, f"{out}: {rows_out} rows, expected {n}"
        write_part(
            parts,
            f"e_enrich_{label}_w{w}",
            engine=f"enrich run (vLLM), window_rows={w}",
            rows=n,
            seconds=secs,
            output_tokens=report.tokens.output,
            window_rows=w,
            gpu_util_pct=gpu.busy,
            report_seconds=report.seconds.model_dump(),
            report_counts=report.counts.model_dump(),
            **common,
        )
    engine.close()


def report(parts: Path, json_out: Path) -> None:
    """Gather the parts into bench/results/gpu_generate.json and print the table for bench/RESULTS.md."""
    rows = [json.loads(p.read_text()) for p in sorted(parts.glob("[abcde]_*.json"))]
    bare = {r["label"][len("d_vllm_") :]: r for r in rows if r["label"].startswith("d_vllm_")}
    first = next((r for r in rows if "versions" in r), rows[0])
    result = {
        "device": first["device"],
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "versions": first.get("versions", {}),
        "model": "Llama-3.1-8B architecture, random bf16 weights, embedded tokenizer (vocab 49152)",
        "prompts": max(r["rows"] for r in rows),
        "new_tokens": NEW_TOKENS,
        "sampling": {"temperature": TEMPERATURE, "top_p": TOP_P, "fixed_length": True},
        "engines": {r["label"]: r for r in rows},
    }
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "| run | rows | rows/s | output tokens/s | vs bare vLLM (same settings) | GPU busy % |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = bare.get(r["label"].split("_")[2]) if r["label"][0] in "de" else None  # d_vllm_L, e_enrich_L_wN
        ratio = f"{r['output_tokens_per_s'] / ref['output_tokens_per_s']:.3f}" if ref else ""
        lines.append(
            f"| {r['label']}: {r['engine']} {r.get('settings', '')} | {r['rows']} | {r['rows_per_s']:,.2f} | "
            f"{r['output_tokens_per_s']:,.0f} | {ratio} | {r.get('gpu_util_pct') or ''} |"
        )
    print("\n".join(lines))
    (parts / "table.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("model")
    m.add_argument("dir", type=Path)
    h = sub.add_parser("hf")
    h.add_argument("dir", type=Path)
    h.add_argument("parts", type=Path)
    h.add_argument("--one", type=int, default=3)
    h.add_argument("--batched", type=int, default=256)
    h.add_argument("--batch-size", type=int, default=128)
    h.add_argument("--cb", type=int, default=256)
    v = sub.add_parser("vllm")
    v.add_argument("dir", type=Path)
    v.add_argument("parts", type=Path)
    v.add_argument("--label", required=True)
    v.add_argument("--prompts", type=int, default=2048)
    v.add_argument("--max-num-seqs", type=int)
    v.add_argument("--max-num-batched-tokens", type=int)
    v.add_argument("--quantization")
    v.add_argument("--no-prefix-caching", action="store_true")
    v.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    v.add_argument(
        "--enrich-windows", default="", help="comma-separated window_rows for (e); empty: skip (e)"
    )
    v.add_argument("--no-bare", action="store_true")
    v.add_argument("--cudagraph-max", type=int, help="capture CUDA graphs up to this many sequences")
    v.add_argument("--attrs", action="store_true", help="prompts with the Brand and Category lines")
    r = sub.add_parser("report")
    r.add_argument("parts", type=Path)
    r.add_argument("--json", type=Path, default=HERE / "results" / "gpu_generate.json")
    a = ap.parse_args()
    if a.cmd == "model":
        print(make_model(a.dir))
    elif a.cmd == "hf":
        bench_hf(a.dir, a.parts, a.one, a.batched, a.batch_size, a.cb)
    elif a.cmd == "vllm":
        settings: dict[str, Any] = {
            "gpu_memory_utilization": a.gpu_memory_utilization,
            "enable_prefix_caching": not a.no_prefix_caching,
        }
        for key in ("max_num_seqs", "max_num_batched_tokens", "quantization"):
            if getattr(a, key) is not None:
                settings[key] = getattr(a, key)
        windows = [int(w) for w in a.enrich_windows.split(",") if w]
        bench_vllm(
            a.dir, a.parts, a.label, a.prompts, settings, windows, not a.no_bare, a.cudagraph_max, a.attrs
        )
    else:
        report(a.parts, a.json)


if __name__ == "__main__":
    main()
