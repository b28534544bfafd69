"""finetune -> export (adapter, merged16) -> verify -> run -> eval on the tiny random Llama, and the failure paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest
from _support import CATALOG, enrich

from enrich.errors import ConfigError
from enrich.model.engines import TOKENIZER_FILES, load_tokenizer
from enrich.model.export import TOLERANCE, verify
from enrich.model.reference import resolve_model


@pytest.fixture(scope="module")
def adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on the tiny Llama, trained hard enough (lr 0.05) that it moves the logits."""
    out = tmp_path_factory.mktemp("ft") / "adapter"
    r = enrich(
        "finetune",
        CATALOG,
        "-o",
        out,
        "--base",
        tiny_model,
        "--template",
        "chat",
        "--max-steps",
        "3",
        "--max-rows",
        "24",
        "--val-size",
        "4",
        "--batch-size",
        "2",
        "--lr",
        "0.05",
        "--log-format",
        "json",
    )
    assert r.exit_code == 0, r.output
    return out


def test_merged16_export_verifies_and_runs(
    adapter: Path, tiny_model: Path, catalog: Path, tmp_path: Path
) -> None:
    merged = tmp_path / "merged"
    r = enrich("export", adapter, "-o", merged, "--format", "merged16", "--log-format", "json")
    assert r.exit_code == 0, r.output
    assert f"tolerance {TOLERANCE['bfloat16']:g} x max |logit|" in r.output
    config = json.loads((merged / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and "quantization_config" not in config
    assert not (merged / "adapter_config.json").exists()
    info = json.loads((merged / "enrich.json").read_text())
    assert info["kind"] == "merged16" and info["template"] == "chat" and info["eos"] == "<|im_end|>"

    # Plain transformers loads it: a standard HF directory.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoTokenizer.from_pretrained(merged)
    AutoModelForCausalLM.from_pretrained(merged)

    # The verification can fail: the base alone is not base + adapter.
    assert not verify(resolve_model(str(adapter)), resolve_model(str(tiny_model)), 1e-9).passed
    assert verify(resolve_model(str(adapter)), resolve_model(str(merged)), TOLERANCE["bfloat16"]).passed

    # enrich run takes the merged directory and the adapter directory, prompting as enrich.json says.
    for model in (merged, adapter):
        out = tmp_path / f"{model.name}.parquet"
        r = enrich(
            "run",
            catalog,
            "-o",
            out,
            "--model",
            model,
            "--limit",
            "6",
            "--max-new-tokens",
            "4",
            "--temperature",
            "0.7",
            "--log-format",
            "json",
        )
        assert r.exit_code in (0, 6), (
            r.output
        )  # 6: random weights can write empty text, which the policy rejects
        report = json.loads(Path(f"{out}.report.json").read_text())
        assert report["counts"]["rows"] == 6 and report["model"]["template"] == "chat"
        assert pl.read_parquet(out).height == 6

    # enrich eval scores the export against its base (from enrich.json, by default) on held-out rows.
    ev = tmp_path / "eval"
    r = enrich(
        "eval",
        merged,
        catalog,
        "-o",
        ev,
        "--sample",
        "6",
        "--max-new-tokens",
        "4",
        "--log-format",
        "json",
    )
    assert r.exit_code == 0, r.output
    report = json.loads((ev / "eval_report.json").read_text())
    assert set(report["models"]) == {"model", "baseline"} and report["rows"] == 6
    assert Path(report["models"]["baseline"]["ref"]).resolve() == tiny_model.resolve()


def test_adapter_export_is_a_peft_dir(adapter: Path, tmp_path: Path) -> None:
    out = tmp_path / "lora"
    r = enrich("export", adapter, "-o", out, "--format", "adapter", "--log-format", "json")
    assert r.exit_code == 0, r.output
    assert "max |logit diff| 0 " in r.output  # the same weights: bit for bit the same logits
    assert (out / "adapter_config.json").is_file() and not (out / "checkpoints").exists()
    assert json.loads((out / "enrich.json").read_text())["kind"] == "adapter"


def test_export_errors(adapter: Path, tiny_model: Path, tmp_path: Path) -> None:
    r = enrich("export", tiny_model, "-o", tmp_path / "x", "--format", "merged16")
    assert r.exit_code == 2 and "not an adapter directory" in r.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    r = enrich("export", adapter, "-o", tmp_path / "full", "--format", "merged16")
    assert r.exit_code == 2 and "not empty" in r.output
    if not os.environ.get("LLAMA_CPP_DIR"):
        r = enrich("export", adapter, "-o", tmp_path / "g", "--format", "gguf")
        assert r.exit_code == 5 and "convert_hf_to_gguf.py" in r.output
        assert not (tmp_path / "g").exists()
    # An adapter folder copied without its weights: one line, not a Hub lookup's traceback.
    partial = tmp_path / "partial"
    partial.mkdir()
    for p in adapter.iterdir():
        if p.is_file() and p.name != "adapter_model.safetensors":
            (partial / p.name).write_bytes(p.read_bytes())
    r = enrich("export", partial, "-o", tmp_path / "p", "--format", "merged16")
    assert r.exit_code == 2 and "adapter weights missing" in r.output, r.output


def copy_adapter(adapter: Path, dest: Path, tokenizer: bool) -> Path:
    """The adapter's files (not its checkpoints), with or without the tokenizer that finetune saved beside it."""
    dest.mkdir()
    for p in adapter.iterdir():
        if p.is_file() and (tokenizer or (p.name not in TOKENIZER_FILES and p.name != "chat_template.jinja")):
            (dest / p.name).write_bytes(p.read_bytes())
    return dest


def test_a_bare_adapter_takes_the_bases_tokenizer_and_a_broken_one_is_refused(
    adapter: Path, tiny_model: Path, tmp_path: Path
) -> None:
    assert (adapter / "tokenizer.json").is_file()  # finetune saves the tokenizer beside the adapter
    assert Path(load_tokenizer(resolve_model(str(adapter))).name_or_path) == adapter
    # A bare PEFT checkpoint holds no tokenizer: LoRA leaves the vocabulary alone, the base's is the model's.
    bare = copy_adapter(adapter, tmp_path / "bare", tokenizer=False)
    assert Path(load_tokenizer(resolve_model(str(bare))).name_or_path).resolve() == tiny_model.resolve()
    # Tokenizer files that do not load are an error naming the folder, never quietly swapped for the base's.
    broken = copy_adapter(adapter, tmp_path / "broken", tokenizer=True)
    (broken / "tokenizer.json").write_text((adapter / "tokenizer.json").read_text()[:5000])
    with pytest.raises(ConfigError, match=f"^{broken}: its tokenizer does not load \\(JSONDecodeError: "):
        load_tokenizer(resolve_model(str(broken)))
    r = enrich("export", broken, "-o", tmp_path / "merged", "--format", "merged16", "--log-format", "text")
    assert r.exit_code == 2 and f"error: {broken}: its tokenizer does not load" in r.output, r.output
    assert len([line for line in r.output.splitlines() if line.startswith("error:")]) == 1
    assert not (tmp_path / "merged").exists()


@pytest.mark.slow
def test_a_gguf_export_is_prompted_as_it_was_trained(catalog: Path, tmp_path: Path) -> None:
    """A folder of `export --format gguf` (model.gguf + enrich.json) keeps the trained template and EOS.

    The embedded model's real GGUF stands in for the converter's output (llama.cpp is not installed here).
    """
    from enrich.errors import EngineError
    from enrich.model.reference import embedded_gguf

    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "model.gguf").symlink_to(embedded_gguf())
    info = {
        "kind": "gguf",
        "file": "model.gguf",
        "name": "fine-tuned",
        "template": "alpaca",
        "eos": "<|im_end|>",
    }
    (folder / "enrich.json").write_text(json.dumps(info))
    for ref in (folder, folder / "model.gguf"):
        spec = resolve_model(str(ref))
        assert (spec.template, spec.eos, spec.name) == ("alpaca", "<|im_end|>", "fine-tuned"), ref
    bare = tmp_path / "bare" / "model.gguf"  # the same file without enrich.json: the GGUF's own chat template
    bare.parent.mkdir()
    bare.symlink_to(embedded_gguf())
    assert resolve_model(str(bare)).template == "chat"
    with pytest.raises(EngineError, match="would be prompted with template 'chat'"):
        verify(resolve_model(str(folder)), resolve_model(str(bare)), TOLERANCE["float32"])

    out = tmp_path / "out.parquet"
    r = enrich("run", catalog, "-o", out, "--model", folder, "--limit", "2", "--max-new-tokens", "8")
    assert r.exit_code == 0, r.output
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["model"]["template"] == "alpaca" and pl.read_parquet(out).height == 2
