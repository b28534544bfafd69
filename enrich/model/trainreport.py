"""What `finetune` writes besides the adapter: training_report.json's content and loss.png."""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any


def _peak_memory_mb(gpu: bool) -> dict[str, float]:
    """Peak resident memory of this process (and peak GPU memory allocated)."""
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    out = {"cpu_rss_mb": round(rss, 1)}
    if gpu:
        import torch

        out["gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def build(
    trainer: Any,
    counts: dict[str, Any],
    config: Any,
    backend: str,
    precision: str,
    gpu: bool,
    initial: float,
    final: float,
    wall: float,
) -> dict[str, Any]:
    """The training report: data counts, steps, losses, throughput, memory, time and the config."""
    state = trainer.state
    history = state.log_history
    # A resumed run's time is this process's; the tokens it trained are those seen since the checkpoint.
    resumed = next(
        (c.start_tokens for c in trainer.callback_handler.callbacks if hasattr(c, "start_tokens")), 0
    )
    train_loss = [[h["step"], h["loss"]] for h in history if "loss" in h]
    # One point per step: the evaluation after training repeats the last scheduled one.
    # trainer.train() starts a fresh log history, so the evaluation before training is added here.
    points = {
        0: initial,
        **{h["step"]: h["eval_loss"] for h in history if "eval_loss" in h},
        state.global_step: final,
    }
    val_loss = [[s, v] for s, v in sorted(points.items())]
    # The trainer's closing entry (the one with train_loss) holds the run's time; with trl the step logs carry
    # a running train_runtime too, so the first entry that has one is only the time to the first log.
    summary = [h for h in history if "train_loss" in h and "train_runtime" in h]
    train_s = summary[-1]["train_runtime"] if summary else wall
    return {
        "backend": backend,
        "device": "cuda" if gpu else "cpu",
        "precision": precision,
        "data": counts,
        "steps": state.global_step,
        "epochs": round(state.epoch or 0.0, 4),
        "train_loss": train_loss,
        "val_loss": val_loss,
        "initial_val_loss": initial,
        "final_val_loss": final,
        "final_train_loss": train_loss[-1][1] if train_loss else None,
        "tokens_seen": state.num_input_tokens_seen,
        "tokens_per_s": round((state.num_input_tokens_seen - resumed) / max(train_s, 1e-9), 1),
        "train_seconds": round(train_s, 1),
        "wall_seconds": round(wall, 1),
        "peak_memory_mb": _peak_memory_mb(gpu),
        "config": config.model_dump(mode="json"),
    }


def plot(report: dict[str, Any], path: Path) -> None:
    """loss.png: train and validation loss over steps."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        points = report[key]
        if points:
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                marker="o" if key == "val_loss" else None,
                label=label,
            )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"fine-tuning loss ({report['backend']}, {report['steps']} steps)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
