"""Exports of a fine-tuned adapter (adapter, merged16, gguf), each verified against base + adapter before success."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enrich.errors import ConfigError, EngineError
from enrich.events import Event, no_events
from enrich.model.reference import ENRICH_JSON, ModelSpec, read_enrich_json, resolve_model, write_enrich_json

FORMATS = ("adapter", "merged16", "gguf")
# Fixed titles the export is checked on: short and long, units and numbers, non-ASCII.
CHECK_TITLES = (
    "Stanley TRA708T Sharpshooter Heavy Duty Staples, 1/2-Inch, 1000-Pack",
    "Fluke 1AC-A1-II VoltAlert Non-Contact Voltage Tester",
    "Post-it® Super Sticky Notes, 3 in x 3 in, Assorted Colors, 12 Pads/Pack",
)
CHECK_TOKENS = 24
# Largest |logit difference| accepted, relative to the largest |logit| of base + adapter, by the exported weights'
# dtype: bf16 keeps 8 bits of mantissa (2^-8 = 0.4% per weight; errors add up over layers), fp16 11, fp32 24.
TOLERANCE = {"float32": 1e-5, "float16": 4e-3, "bfloat16": 1.6e-2}


@dataclass(frozen=True)
class Verification:
    """How the export compares with base + adapter on the fixed prompts."""

    prompts: int
    tokens: int
    max_abs_logit_diff: float
    tolerance: float  # absolute: the relative tolerance times the largest |logit| of base + adapter
    argmax_agreement: float  # share of positions where both pick the same next token
    unexplained_disagreements: int  # argmax differs where base + adapter's top-2 margin exceeds 2 x tolerance
    greedy_identical: int  # prompts whose greedy continuation is the same token for token
    passed: bool


def export(
    adapter_dir: Path, out_dir: Path, fmt: str, dtype: str = "bfloat16", on_event: Event = no_events
) -> Verification:
    """Write the export of adapter_dir into out_dir and verify it; raises EngineError when it does not match."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if dtype not in ("bfloat16", "float16"):
        raise ConfigError(f"--dtype {dtype}: merged exports are 16-bit; choose bfloat16 or float16")
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ConfigError(
            f"{adapter_dir}: not an adapter directory (no adapter_config.json); give finetune's -o DIR"
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir}: exists and is not empty; choose another -o")
    if fmt == "gguf":
        converter = _gguf_converter()  # fail before any work when the converter is missing
    spec = resolve_model(str(adapter_dir))
    info = read_enrich_json(adapter_dir)
    # The temporary folder beside the output, so that the final rename stays on one disk.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir.parent))
    try:
        if fmt == "adapter":
            # Every file but the checkpoints' folder: adapter, tokenizer, enrich.json, report, plot.
            for p in adapter_dir.iterdir():
                if p.is_file():
                    shutil.copy2(p, tmp / p.name)
            write_enrich_json(tmp, {**info, "kind": "adapter", "exported_from": str(adapter_dir.resolve())})
            tol = TOLERANCE["float32"]
        else:
            _merge(spec, tmp, dtype, on_event)
            write_enrich_json(tmp, {**_merged_info(info, spec), "kind": "merged16", "dtype": dtype})
            tol = TOLERANCE[dtype]
        candidate = resolve_model(str(tmp))
        on_event(
            "info",
            {"message": f"verifying on {len(CHECK_TITLES)} fixed prompts (tolerance {tol:g} x max |logit|)"},
        )
        result = verify(spec, candidate, tol)
        if fmt == "gguf":
            result = _to_gguf(converter, tmp, dtype, spec, on_event)
        if not result.passed:
            raise EngineError(
                f"{out_dir}: export does not match base + adapter (max |logit diff| {result.max_abs_logit_diff:.4g} > "
                f"{result.tolerance:g}, {result.unexplained_disagreements} unexplained greedy differences); not written"
            )
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _merged_info(info: dict[str, Any], spec: ModelSpec) -> dict[str, Any]:
    return {
        **{k: v for k, v in info.items() if k not in ("kind", "versions")},
        "name": info.get("name") or Path(spec.adapter or "").name,
        "template": spec.template,
        "eos": spec.eos,
        "stop": list(spec.stop),
        "sampling": spec.sampling,
        "merged_from": str(Path(spec.adapter or "").resolve()),
    }


def _merge(spec: ModelSpec, out: Path, dtype: str, on_event: Event) -> None:
    """Base in 16 bits or more (dequantized where it was 4-bit), adapter merged, saved as 16-bit safetensors."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from enrich.model.engines import load_tokenizer

    tokenizer = load_tokenizer(spec)  # the adapter's own, else the base's; before the minutes of merging
    target = getattr(torch, dtype)
    # Merge in float32 on the CPU, also where a GPU is present: W + BA is rounded to 16 bits once, at the save.
    # Merging in bf16 rounds twice, which took an H200 export past the verification's tolerance (0.30 > 0.25).
    base = AutoModelForCausalLM.from_pretrained(spec.path, dtype=torch.float32, use_safetensors=True)
    if getattr(base.config, "quantization_config", None) is not None:
        on_event("info", {"message": "the base is quantized: dequantizing to 16 bits before merging"})
        base = base.dequantize()  # type: ignore[no-untyped-call]  # never merge into 4-bit weights: the adapter's update would be rounded away
        base.to(torch.float32)
        if hasattr(base.config, "quantization_config"):
            del base.config.quantization_config
    model = PeftModel.from_pretrained(base, str(spec.adapter)).merge_and_unload()
    model.to(target)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def verify(reference: ModelSpec, candidate: ModelSpec, relative: float) -> Verification:
    """Compare logits and greedy outputs of candidate with reference (base + adapter) on the fixed prompts."""
    import torch

    from enrich.model.engines import load_hf

    # The weights may match and the export still never stop: a prompting mismatch is refused here, not at run time.
    prompted = {"template": (reference.template, candidate.template), "eos": (reference.eos, candidate.eos)}
    for what, (want, got) in prompted.items():
        if want != got:
            raise EngineError(
                f"export check: {candidate.ref} would be prompted with {what} {got!r}, the adapter was trained "
                f"with {want!r}; its enrich.json is missing or wrong"
            )
    sequences, ref_logits, ref_greedy, decode = _reference_outputs(reference)
    tolerance = relative * max(1.0, max(float(r.abs().max()) for r in ref_logits))
    _, cand_model = load_hf(candidate, "float32", "cpu")
    max_diff, agree, total, unexplained, identical = 0.0, 0, 0, 0, 0
    with torch.inference_mode():
        for seq, ref, greedy in zip(sequences, ref_logits, ref_greedy, strict=True):
            start = seq.shape[1] - len(greedy) - 1
            cand = cand_model(seq).logits[0, start:].float()
            max_diff = max(max_diff, float((cand - ref).abs().max()))
            same = cand.argmax(-1) == ref.argmax(-1)
            top2 = ref.topk(2, dim=-1).values
            margin = top2[:, 0] - top2[:, 1]
            agree += int(same.sum())
            total += len(same)
            unexplained += int((~same & (margin > 2 * tolerance)).sum())
            prompt_len = seq.shape[1] - len(greedy)
            out = cand_model.generate(seq[:, :prompt_len], **decode)
            identical += int(out[0, prompt_len:].tolist() == greedy)
    return Verification(
        prompts=len(sequences),
        tokens=total,
        max_abs_logit_diff=round(max_diff, 6),
        tolerance=round(tolerance, 6),
        argmax_agreement=round(agree / max(total, 1), 4),
        unexplained_disagreements=unexplained,
        greedy_identical=identical,
        passed=max_diff <= tolerance and unexplained == 0,
    )


def _reference_outputs(reference: ModelSpec) -> tuple[list[Any], list[Any], list[list[int]], dict[str, Any]]:
    """Base + adapter on the fixed prompts: each prompt followed by its greedy continuation, the logits over that
    continuation, the continuation's tokens, and the greedy decoding that the candidate is run with too."""
    import torch

    from enrich.model.engines import load_hf
    from enrich.model.prompts import build_prompts, get_template

    tok, ref_model = load_hf(reference, "float32", "cpu")
    template = get_template(reference.template)
    prompts = build_prompts(list(CHECK_TITLES), template, getattr(tok, "apply_chat_template", None))
    eos = [t for t in (tok.convert_tokens_to_ids(s) for s in reference.stop) if isinstance(t, int)]
    decode: dict[str, Any] = {
        "max_new_tokens": CHECK_TOKENS,
        "do_sample": False,
        "eos_token_id": eos or None,
        "pad_token_id": tok.pad_token_id,
        "temperature": None,
        "top_p": None,
        "top_k": None,
    }
    sequences, logits, greedy = [], [], []
    with torch.inference_mode():
        for p in prompts:
            ids = tok(p, add_special_tokens=False, return_tensors="pt")["input_ids"]
            out = ref_model.generate(ids, **decode)
            sequences.append(out)
            greedy.append(out[0, ids.shape[1] :].tolist())
            logits.append(ref_model(out).logits[0, ids.shape[1] - 1 :].float())
    return sequences, logits, greedy, decode


def _gguf_converter() -> Path:
    """llama.cpp's convert_hf_to_gguf.py: from LLAMA_CPP_DIR, or on PATH."""
    candidates = []
    if os.environ.get("LLAMA_CPP_DIR"):
        candidates.append(Path(os.environ["LLAMA_CPP_DIR"]) / "convert_hf_to_gguf.py")
    found = shutil.which("convert_hf_to_gguf.py") or shutil.which("convert-hf-to-gguf")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file():
            return c
    raise EngineError(
        "gguf export needs llama.cpp's convert_hf_to_gguf.py, which is not installed: clone llama.cpp and set "
        "LLAMA_CPP_DIR to it (or put convert_hf_to_gguf.py on PATH); --format merged16 works without it"
    )


def _to_gguf(converter: Path, merged: Path, dtype: str, spec: ModelSpec, on_event: Event) -> Verification:
    """Convert the verified merged directory to one GGUF file beside enrich.json, then check the GGUF itself."""
    outtype = {"bfloat16": "bf16", "float16": "f16"}[dtype]
    gguf = merged / "model.gguf"
    on_event("info", {"message": f"converting with {converter}"})
    proc = subprocess.run(
        [sys.executable, str(converter), str(merged), "--outfile", str(gguf), "--outtype", outtype],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise EngineError(f"{converter}: conversion failed: {tail[0]}")
    result = verify(spec, resolve_model(str(gguf)), TOLERANCE[dtype])
    info = read_enrich_json(merged)
    for p in list(merged.iterdir()):
        if p.name not in ("model.gguf", ENRICH_JSON):
            p.unlink() if p.is_file() else shutil.rmtree(p)
    write_enrich_json(merged, {**info, "kind": "gguf", "file": "model.gguf"})
    return result
