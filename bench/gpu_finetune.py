"""GPU fine-tuning benchmark (issue 4): unsloth against transformers + peft + bitsandbytes, same recipe.

The reference recipe's shape: Llama-3.1-8B architecture (random bf16 weights, embedded tokenizer) loaded in
4 bits (NF4, double quantization, bf16 compute), LoRA r=16 alpha=16 on the seven projections, gradient
checkpointing, batch 4 x 4, lr 2e-4, adamw_8bit, trl SFTTrainer on real titles and descriptions in the
alpaca-pt template with EOS. Each backend runs in its own process (unsloth patches transformers and peft).
bench/device/run.sh runs it on the device; see bench/device/README.md.

  python bench/gpu_finetune.py model DIR                 # random bf16 weights, saved (both backends load it)
  python bench/gpu_finetune.py train DIR PARTS --backend unsloth|peft [--steps 8 --warmup 2] [--join-to 2048 --tag long]
  python bench/gpu_finetune.py report PARTS              # bench/results/gpu_finetune.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RECIPE = {
    "r": 16,
    "alpha": 16,
    "dropout": 0.0,
    "batch_size": 4,
    "grad_accum": 4,
    "lr": 2e-4,
    "max_seq_length": 2048,
    "optim": "adamw_8bit",
    "seed": 3407,
    "quantization": "nf4, double quant, bf16 compute",
}


def make_model(out: Path) -> None:
    """The 8B architecture with random bf16 weights, saved as safetensors with the embedded tokenizer."""
    import sys

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    sys.path.insert(0, str(HERE))
    from gpu_generate import make_model as make_config

    make_config(out)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out), dtype=torch.bfloat16)
    t = time.perf_counter()
    model.save_pretrained(out, max_shard_size="20GB")
    print(f"saved {out} in {time.perf_counter() - t:.1f}s", flush=True)


def texts(tokenizer: Any, n: int, join_to: int = 0) -> list[str]:
    """n training texts as enrich builds them: alpaca-pt prompt + real description + EOS.

    join_to > 0: each text is consecutive rows joined until it holds join_to tokens (cut there by max_length), the
    long-sequence case, where every step does the same work on both backends.
    """
    import pyarrow.parquet as pq

    from enrich.model.prompts import build_training_text, get_template

    table = pq.read_table(HERE / "data" / "gpu_catalog.parquet", columns=["title", "content"])
    template = get_template("alpaca-pt")
    out: list[str] = []
    joined, tokens = "", 0
    for title, content in zip(table["title"].to_pylist(), table["content"].to_pylist(), strict=True):
        prompt, completion = build_training_text(
            title.strip(), content.strip(), template, tokenizer.eos_token
        )
        if not join_to:
            out.append(prompt + completion)
        else:
            joined += prompt + completion
            tokens += len(tokenizer(prompt + completion, add_special_tokens=False)["input_ids"])
            if tokens >= join_to:
                out.append(joined)
                joined, tokens = "", 0
        if len(out) == n:
            return out
    raise SystemExit(f"{HERE / 'data' / 'gpu_catalog.parquet'}: too few rows for {n} texts")


def train(
    model_dir: Path, parts: Path, backend: str, steps: int, warmup: int, join_to: int, tag: str
) -> None:
    """Load in 4 bits, add LoRA, run `steps` optimizer steps; time the steps after `warmup`."""
    t_start = time.perf_counter()
    if backend == "unsloth":
        import unsloth  # noqa: F401  (first: it patches transformers, trl and peft)
        from unsloth import FastLanguageModel
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    t = time.perf_counter()
    if backend == "unsloth":
        model, tok = FastLanguageModel.from_pretrained(
            model_name=str(model_dir), max_seq_length=RECIPE["max_seq_length"], load_in_4bit=True, dtype=None
        )
        model = FastLanguageModel.get_peft_model(
            model,
            r=RECIPE["r"],
            lora_alpha=RECIPE["alpha"],
            lora_dropout=RECIPE["dropout"],
            target_modules=PROJECTIONS,
            bias="none",
            use_gradient_checkpointing="unsloth",
            random_state=RECIPE["seed"],
        )
    else:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

        tok = AutoTokenizer.from_pretrained(model_dir)
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, quantization_config=quant, dtype=torch.bfloat16, device_map={"": 0}
        )
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False}
        )
        lora = LoraConfig(
            r=RECIPE["r"],
            lora_alpha=RECIPE["alpha"],
            lora_dropout=RECIPE["dropout"],
            target_modules=PROJECTIONS,
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    load_s = time.perf_counter() - t
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    per_step = RECIPE["batch_size"] * RECIPE["grad_accum"]
    data = texts(tok, per_step * steps, join_to)
    lengths = [
        min(len(ids), RECIPE["max_seq_length"]) for ids in tok(data, add_special_tokens=False)["input_ids"]
    ]
    marks: dict[int, float] = {}

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            torch.cuda.synchronize()
            marks[state.global_step] = time.perf_counter()

    config = SFTConfig(
        output_dir=str(parts / f"trainer-{backend}"),
        per_device_train_batch_size=RECIPE["batch_size"],
        gradient_accumulation_steps=RECIPE["grad_accum"],
        max_steps=steps,
        learning_rate=RECIPE["lr"],
        lr_scheduler_type="linear",
        warmup_steps=0,
        logging_steps=1,
        optim=RECIPE["optim"],
        bf16=True,
        max_length=RECIPE["max_seq_length"],
        dataset_text_field="text",
        packing=False,
        report_to="none",
        seed=RECIPE["seed"],
        save_strategy="no",
        dataloader_num_workers=0,
        gradient_checkpointing=backend != "unsloth",
        gradient_checkpointing_kwargs={"use_reentrant": False} if backend != "unsloth" else None,
    )
    trainer = SFTTrainer(
        model=model,
        processing_class=tok,
        train_dataset=Dataset.from_dict({"text": data}),
        args=config,
        callbacks=[Clock()],
    )
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - t
    timed = marks[steps] - marks[warmup]
    # Real (unpadded) tokens of the timed steps: trl's running count where it logs one, else the data's mean.
    seen = {h["step"]: h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h}
    tokens = (
        seen[steps] - seen[warmup]
        if steps in seen and warmup in seen
        else sum(lengths) / steps * (steps - warmup)
    )
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    out = {
        "backend": backend,
        "tag": tag,
        "joined_to_tokens": join_to or None,
        "device": torch.cuda.get_device_name(),
        "steps": steps,
        "warmup_steps": warmup,
        "sequences_per_step": per_step,
        "mean_sequence_tokens": round(sum(lengths) / len(lengths), 1),
        "tokens_per_s": round(tokens / timed, 1),
        "seconds_per_step": round(timed / (steps - warmup), 3),
        "train_s": round(train_s, 1),
        "load_s": round(load_s, 1),
        "process_s": round(time.perf_counter() - t_start, 1),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
        "losses": losses,
        "trl_num_tokens": seen,
        "train_loss": result.training_loss,
        "recipe": RECIPE,
        "versions": _versions(),
    }
    parts.mkdir(parents=True, exist_ok=True)
    (parts / f"finetune_{backend}{'_' + tag if tag else ''}.json").write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k not in ("losses", "recipe")}), flush=True)


def _versions() -> dict[str, str]:
    import importlib.metadata

    out = {}
    for name in (
        "torch",
        "transformers",
        "peft",
        "trl",
        "bitsandbytes",
        "unsloth",
        "unsloth_zoo",
        "datasets",
    ):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def report(parts: Path, json_out: Path) -> None:
    """bench/results/gpu_finetune.json from the two parts, with the ratios the issue targets."""
    runs = {
        p.stem.removeprefix("finetune_"): json.loads(p.read_text()) for p in parts.glob("finetune_*.json")
    }
    result: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "runs": runs}
    for tag in sorted({r.get("tag", "") for r in runs.values()}):
        suffix = f"_{tag}" if tag else ""
        u, p = runs.get(f"unsloth{suffix}"), runs.get(f"peft{suffix}")
        if u is None or p is None:
            continue
        result["device"] = u["device"]
        result[f"unsloth_vs_peft{suffix}"] = {
            "mean_sequence_tokens": u["mean_sequence_tokens"],
            "tokens_per_s_ratio": round(u["tokens_per_s"] / p["tokens_per_s"], 3),
            "peak_reserved_ratio": round(u["peak_reserved_gib"] / p["peak_reserved_gib"], 3),
            "peak_allocated_ratio": round(u["peak_allocated_gib"] / p["peak_allocated_gib"], 3),
            "targets": {"tokens_per_s_ratio": ">= 1.5", "peak_memory_ratio": "<= 0.6"},
        }
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2) + "\n")
    print("| run | tokens a sequence | tokens/s | s/step | peak reserved GiB | peak allocated GiB | load s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in sorted(runs.items()):
        print(
            f"| {name} | {r['mean_sequence_tokens']} | {r['tokens_per_s']:,.0f} | {r['seconds_per_step']} | "
            f"{r['peak_reserved_gib']} | {r['peak_allocated_gib']} | {r['load_s']} |"
        )
    for key, ratios in result.items():
        if key.startswith("unsloth_vs_peft"):
            print(key, json.dumps(ratios))


def main() -> None:
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("model")
    m.add_argument("dir", type=Path)
    t = sub.add_parser("train")
    t.add_argument("dir", type=Path)
    t.add_argument("parts", type=Path)
    t.add_argument("--backend", choices=["unsloth", "peft"], required=True)
    t.add_argument("--steps", type=int, default=8)
    t.add_argument("--warmup", type=int, default=2)
    t.add_argument("--join-to", type=int, default=0, help="join rows into texts of this many tokens")
    t.add_argument("--tag", default="", help="suffix of the result's name (finetune_BACKEND_TAG.json)")
    r = sub.add_parser("report")
    r.add_argument("parts", type=Path)
    r.add_argument("--json", type=Path, default=HERE / "results" / "gpu_finetune.json")
    a = ap.parse_args()
    if a.cmd == "model":
        make_model(a.dir)
    elif a.cmd == "train":
        train(a.dir, a.parts, a.backend, a.steps, a.warmup, a.join_to, a.tag)
    else:
        report(a.parts, a.json)


if __name__ == "__main__":
    main()
