"""Models and devices that cannot work are refused before anything loads: one `error:` line, the right exit code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from _support import call

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")


def error_line(stderr: str) -> str:
    """The one `error: ...` line of a failed command (text logs), after checking that no traceback came."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def copy_model(tiny_model: Path, dest: Path, **config_changes: object) -> Path:
    """The tiny model with its config.json changed (a key set to None is removed)."""
    shutil.copytree(tiny_model, dest)
    config = json.loads((dest / "config.json").read_text())
    for key, value in config_changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (dest / "config.json").write_text(json.dumps(config))
    return dest


@NO_GPU
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_a_cuda_device_without_a_gpu_is_an_engine_error(
    device: str, source: Path, tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.parquet"
    r = call(
        "run",
        source,
        "-o",
        out,
        "--model",
        tiny_model,
        "--device",
        device,
        "--limit",
        "2",
        "--log-format",
        "text",
    )
    assert r.returncode == 5, r.stderr
    line = error_line(r.stderr)
    assert f"--device {device}: this machine has no CUDA GPU" in line and "--device cpu" in line
    assert not out.exists()


@pytest.mark.parametrize("device", ["bogus", "cuda0", "CUDA", "cuda:x"])
def test_a_device_that_is_no_device_is_a_usage_error(device: str, source: Path, tmp_path: Path) -> None:
    r = call("run", source, "-o", tmp_path / "out.parquet", "--device", device, "--log-format", "text")
    assert r.returncode == 2, r.stderr
    line = error_line(r.stderr)
    assert f"model.device: --device {device!r} is not a device" in line
    assert "cpu, cuda, cuda:N" in line and "mps" in line
    job = tmp_path / "job.toml"
    job.write_text(
        f'[input]\npath = "{source}"\n[output]\npath = "out.parquet"\n[model]\ndevice = "{device}"\n'
    )
    r = call("jobs", "validate", job, "--log-format", "text")
    assert r.returncode == 2, r.stderr
    assert f"error: {job}: model.device: --device {device!r} is not a device" in r.stderr


def test_cpu_and_cuda_devices_are_accepted_by_the_job(tmp_path: Path) -> None:
    from enrich.config import build_job

    table = {"input": {"path": "a.parquet"}, "output": {"path": "b.parquet"}}
    for device in ("cpu", "cuda", "cuda:0", "cuda:3", "mps"):
        assert build_job(table, {"model.device": device}).model.device == device


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"auto_map": {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}},
            "enrich never runs a model's own code",
        ),
        ({"model_type": None}, "no model_type"),
    ],
    ids=["auto_map", "no_model_type"],
)
def test_a_model_directory_that_needs_its_own_code_or_names_no_architecture_is_refused(
    change: dict[str, object], expected: str, source: Path, tiny_model: Path, tmp_path: Path
) -> None:
    model = copy_model(tiny_model, tmp_path / "model", **change)
    out = tmp_path / "out.parquet"
    r = call("run", source, "-o", out, "--model", model, "--limit", "2", "--log-format", "text")
    assert r.returncode == 2, r.stderr
    line = error_line(r.stderr)
    assert f"{model / 'config.json'}: " in line and expected in line
    assert not out.exists()


def test_an_adapter_on_a_base_that_needs_its_own_code_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    """The base named by an adapter is resolved as carefully as a model given directly."""
    from enrich.errors import ConfigError
    from enrich.model.reference import resolve_model

    base = copy_model(tiny_model, tmp_path / "base", auto_map={"AutoConfig": "configuration_x.XConfig"})
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base), "r": 8}))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="enrich never runs a model's own code") as err:
        resolve_model(str(adapter))
    assert str(base / "config.json") in str(err.value)


def test_the_bundled_models_resolve(tiny_model: Path) -> None:
    from enrich.model.reference import resolve_model

    assert resolve_model(str(tiny_model)).path == str(tiny_model)
