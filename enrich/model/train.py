"""LoRA fine-tuning: `train(config, out_dir) -> Path`, with the unsloth (GPU) or transformers + peft backend."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enrich.catalog.source import Source
from enrich.errors import ConfigError, EngineError, Interrupted
from enrich.events import Event, no_events
from enrich.model.trainconfig import TrainConfig

if TYPE_CHECKING:
    from enrich.model.reference import ModelSpec
    from enrich.model.traindata import TrainData
    from enrich.quality.vocabulary import Vocabulary


def train(config: TrainConfig, out_dir: Path, on_event: Event = no_events) -> Path:
    """Fine-tune a LoRA adapter on config.data into out_dir; returns out_dir."""
    from enrich.model import lora, traindata, trainreport
    from enrich.model.prompts import get_template

    out_dir = Path(out_dir)
    backend, gpu = lora.start_backend(config.backend, on_event)  # first: unsloth patches what comes after it
    spec = _base_model(config, gpu)
    checkpoints = out_dir / "checkpoints"
    resume_from = _resume_point(config, out_dir, checkpoints)
    template = get_template(config.template or spec.template)
    precision = lora.precision(config.precision, gpu)
    t0 = time.perf_counter()
    # Bad data fails before the model loads.
    attributes = tuple((a.column, a.text_label()) for a in config.attributes)
    source = Source.of(config.data, config.format, config.separator, config.columns, format_option="--format")
    rows = traindata.read_titles_and_descriptions(source.with_attributes(attributes))
    model, tokenizer = lora.load(backend, spec.path, config, gpu, precision)
    eos = spec.eos or tokenizer.eos_token
    if tokenizer.pad_token is None or tokenizer.pad_token == eos:
        # Padding with EOS would mask the EOS labels out of the loss in some collators: the model would never stop.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    data = traindata.prepare(
        rows,
        config.data,
        tokenizer,
        template,
        eos,
        config.max_seq_length,
        config.val_size,
        config.seed,
        config.min_chars,
        config.max_rows,
        config.max_response_tokens,
        config.targets,
    )
    on_event("info", {"message": f"data: {json.dumps(data.counts)}"})
    if data.faithful:
        cut = data.faithful
        on_event(
            "info",
            {
                "message": f"faithful targets: {cut['rows_cut']} descriptions cut ({cut['sentences_cut']} of "
                f"{cut['sentences_kept'] + cut['sentences_cut']} sentences), {cut['dropped']} rows left too short"
            },
        )
    _same_run(checkpoints, config, template.name, data.fingerprint)
    stop = _StopAfterStep(on_event)
    trainer = _trainer(model, tokenizer, data, config, checkpoints, precision, gpu, on_event, stop)
    initial, final = _fit(trainer, stop, checkpoints, resume_from)
    wall = time.perf_counter() - t0
    trainer.model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _write_enrich_json(out_dir, config, spec, template.name, eos, data)
    vocabulary = _write_claims(out_dir, config, data)
    report = trainreport.build(trainer, data.counts, config, backend, precision, gpu, initial, final, wall)
    report["faithful_targets"] = data.faithful
    report["claims"] = [
        {"term": t.term, "kind": t.kind, "stated": t.stated, "unsupported": t.unsupported}
        for t in vocabulary.top_terms(20)
    ]
    (out_dir / "training_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    trainreport.plot(report, out_dir / "loss.png")
    on_event("done", report)
    return out_dir


def _base_model(config: TrainConfig, gpu: bool) -> ModelSpec:
    """The base model to train on: a full model (not an adapter) that this machine can run."""
    from enrich.model.reference import resolve_model

    spec = resolve_model(config.base, gpu=gpu)
    if spec.adapter:
        raise ConfigError(f"base {config.base!r} is an adapter; give the full model it was trained on")
    if spec.needs_gpu and not gpu:
        raise EngineError(
            f"base {config.base!r} needs a GPU and none is present; use --preset cpu-small on CPU"
        )
    return spec


def _resume_point(config: TrainConfig, out_dir: Path, checkpoints: Path) -> Path | None:
    """The checkpoint that --resume continues from (None for a new run); refuses an out_dir that a new run would
    mix with: an earlier run's, or a folder of other files."""
    last = _last_checkpoint(checkpoints)
    if config.resume:
        if last is None:
            raise ConfigError(f"{checkpoints}: no checkpoint to resume from; run without --resume")
        return last
    if last is not None or (out_dir / "adapter_config.json").is_file():
        raise ConfigError(
            f"{out_dir}: holds an earlier run; pass --resume to continue it or choose another -o"
        )
    # Anything but the checkpoints folder of a run that saved none yet (killed early: it starts over).
    if out_dir.is_dir() and any(p.name != "checkpoints" for p in out_dir.iterdir()):
        raise ConfigError(
            f"{out_dir}: is not empty, and the adapter's files would overwrite its own; choose a new -o"
        )
    return None


def _fit(
    trainer: Any, stop: _StopAfterStep, checkpoints: Path, resume_from: Path | None
) -> tuple[float, float]:
    """Train, from resume_from where given; the validation loss before and after. A stop (Ctrl-C, SIGTERM) raises
    Interrupted, saying which checkpoint --resume continues from."""
    initial = float(trainer.evaluate()["eval_loss"])
    try:
        with stop.armed():
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the first step ended
        kept = _last_checkpoint(checkpoints)
        raise Interrupted(
            f"interrupted at step {trainer.state.global_step}; "
            + (
                f"steps up to {kept.name} are kept: re-run with --resume"
                if kept
                else "no checkpoint was saved yet"
            )
        ) from None
    if stop.requested:
        kept = _last_checkpoint(checkpoints)
        raise Interrupted(
            f"stopped at step {trainer.state.global_step}"
            + (f"; {kept.name} is saved: re-run with --resume to continue" if kept else "")
        )
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    # The last scheduled evaluation often falls on the last step; on CPU an evaluation costs minutes.
    if evals and evals[-1]["step"] == trainer.state.global_step:
        return initial, float(evals[-1]["eval_loss"])
    return initial, float(trainer.evaluate()["eval_loss"])


def _write_enrich_json(
    out_dir: Path, config: TrainConfig, spec: ModelSpec, template: str, eos: str, data: TrainData
) -> None:
    """enrich.json: the base, template, EOS and sampling that run and eval prompt the adapter with, and its data."""
    from enrich.model.reference import CLAIMS_JSON, MODEL_PRESETS, write_enrich_json

    write_enrich_json(
        out_dir,
        {
            "kind": "adapter",
            "name": out_dir.name,
            "base": config.base if config.base in MODEL_PRESETS else str(Path(spec.path).resolve()),
            "template": template,
            "eos": eos,
            "stop": list(dict.fromkeys([eos, *spec.stop])),
            "sampling": {**spec.sampling, **config.sampling},
            "data": {
                "path": str(Path(config.data).resolve()),
                "fingerprint": data.fingerprint,
                **data.counts,
            },
            "training": config.model_dump(mode="json"),
            # What run and eval prompt with, by label; a run maps other columns to them with --attr COLUMN=Label.
            "attributes": [{"column": a.column, "label": a.text_label()} for a in config.attributes],
            "claims": CLAIMS_JSON,
        },
    )


def _write_claims(out_dir: Path, config: TrainConfig, data: TrainData) -> Vocabulary:
    """claims.json beside enrich.json: the claim vocabulary learned from the training catalog (its terms,
    brands and product types), with the changes the command gave; run and eval check generations with it."""
    from enrich.model.reference import CLAIMS_JSON
    from enrich.quality.vocabulary import base_vocabulary

    vocabulary = data.vocabulary or base_vocabulary()
    if config.claims.add or config.claims.remove:
        vocabulary = vocabulary.with_changes(
            {str(k): v for k, v in config.claims.add.items()}, config.claims.remove
        )
    (out_dir / CLAIMS_JSON).write_text(vocabulary.to_json() + "\n", encoding="utf-8")
    return vocabulary


# What a resumed run may change: how long it trains, how often it logs, evaluates and saves; and where its data
# lies and how the file is spelled (the data's fingerprint, of its cleaned rows, says whether it is the same).
_RESUMABLE = {
    "resume", "epochs", "max_steps", "logging_steps", "eval_steps", "save_steps", "data", "format", "separator"
}  # fmt: skip
RUN_FILE = "enrich-run.json"  # in checkpoints/: the settings and data the checkpoints were trained with


def _same_run(checkpoints: Path, config: TrainConfig, template: str, data: str) -> None:
    """Record the run's settings beside its checkpoints; a resumed run must match them (a template or data
    changed mid-run would leave enrich.json describing a model that was not trained that way)."""
    settings = {k: v for k, v in config.model_dump(mode="json").items() if k not in _RESUMABLE}
    this = {"settings": settings, "template": template, "data_fingerprint": data}
    path = checkpoints / RUN_FILE
    if config.resume and path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        # A setting added to TrainConfig after the checkpoints were written counts as its default.
        defaults = {k: f.default for k, f in TrainConfig.model_fields.items()}
        changed = [k for k in settings if before["settings"].get(k, defaults.get(k)) != settings[k]]
        changed += [k for k in ("template", "data_fingerprint") if before.get(k) != this[k]]
        if changed:
            raise ConfigError(
                f"{checkpoints}: its checkpoints were trained with other settings ({', '.join(changed)}); "
                "resume with the same ones, or start a new -o"
            )
        return
    checkpoints.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(this, indent=2) + "\n", encoding="utf-8")


def _last_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint: transformers writes trainer_state.json last, so a checkpoint cut off
    while it was saved (a kill, a full disk) lacks it, or has weights whose header does not read."""
    found = [p for p in directory.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    for p in sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        if (p / "trainer_state.json").is_file() and _weights_readable(p):
            return p
    return None


def _weights_readable(checkpoint: Path) -> bool:
    from safetensors import safe_open

    weights = list(checkpoint.glob("*.safetensors"))
    try:
        for w in weights:
            with safe_open(str(w), framework="pt") as f:
                f.keys()
    except Exception:  # safetensors raises its own error types for a damaged header
        return False
    return bool(weights)


class _StopAfterStep:
    """Ctrl-C or SIGTERM during training: the step under way ends, a checkpoint of it is saved and training stops,
    so --resume loses nothing; a second signal stops at once (the last periodic checkpoint is kept)."""

    def __init__(self, on_event: Event) -> None:
        self.on_event = on_event
        self.requested = False

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers belong to the main thread; elsewhere a signal stops at once
            return
        # A signal the process was started ignoring stays ignored (SIGINT in a background job: `nohup ... &`).
        previous = {
            sig: handler
            for sig in (signal.SIGINT, signal.SIGTERM)
            if (handler := signal.getsignal(sig)) is not signal.SIG_IGN
        }

        def request(signum: int, frame: Any) -> None:
            # Only a flag: the handler runs between two bytecodes of the main thread, which may hold the log's
            # lock at that instant; printing from here could wait on it forever. The callback says it.
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True

        for sig in previous:
            signal.signal(sig, request)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def callback(self) -> Any:
        from transformers import TrainerCallback

        stop = self

        class Stop(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if stop.requested:
                    control.should_save = True
                    control.should_training_stop = True
                    stop.on_event(
                        "warning",
                        {
                            "message": f"stopping: saving checkpoint-{state.global_step} (again to stop at once)"
                        },
                    )

        return Stop()


def _trainer(
    model: Any,
    tokenizer: Any,
    data: TrainData,
    config: TrainConfig,
    checkpoints: Path,
    precision: str,
    gpu: bool,
    on_event: Event,
    stop: _StopAfterStep,
) -> Any:
    """trl's SFTTrainer on the tokenized data, with progress events and the stop after a step on a signal."""
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer  # type: ignore[attr-defined]

    from enrich.model import traindata

    per_epoch = max(1, -(-len(data.train) // (config.batch_size * config.grad_accum)))
    total = config.max_steps or max(1, int(per_epoch * config.epochs))
    trainer = SFTTrainer(
        model=model,
        args=_sft_args(config, checkpoints, precision, gpu, total),
        train_dataset=traindata.to_dataset(data.train),
        eval_dataset=traindata.to_dataset(data.val),
        processing_class=tokenizer,
        callbacks=[_progress_callback(on_event, total), stop.callback()],
    )
    # Without tqdm the trainer prints every log dict on stdout; our progress events say it once, and JSON
    # logs must stay JSON.
    trainer.remove_callback(PrinterCallback)
    return trainer


def _sft_args(config: TrainConfig, checkpoints: Path, precision: str, gpu: bool, total: int) -> Any:
    """The trainer's settings from the config, for a run of total optimizer steps."""
    from trl import SFTConfig  # type: ignore[attr-defined]

    eval_steps = config.eval_steps or max(1, -(-total // 4))  # four evaluations a run, the last at the end
    return SFTConfig(
        output_dir=str(checkpoints),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size * 2,
        gradient_accumulation_steps=config.grad_accum,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.lr,
        lr_scheduler_type=config.scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the steps (transformers 5)
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim="adamw_8bit" if gpu and importlib.util.find_spec("bitsandbytes") else "adamw_torch",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not gpu,
        gradient_checkpointing=False,  # the backends above set it up their own way
        max_length=config.max_seq_length,
        packing=config.packing,
        completion_only_loss=not config.train_on_prompt,
        logging_steps=config.logging_steps,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps or eval_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
    )


def _progress_callback(on_event: Event, total: int) -> Any:
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """Turns trainer logs into progress events: step, loss, tokens/s, ETA."""

        def __init__(self) -> None:
            self.t0 = time.perf_counter()
            self.start_step = 0
            self.start_tokens = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0 = time.perf_counter()
            self.start_step = state.global_step
            self.start_tokens = state.num_input_tokens_seen

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any
        ) -> None:
            elapsed = time.perf_counter() - self.t0
            done = max(state.global_step - self.start_step, 1)
            left = max(state.max_steps or total, state.global_step) - state.global_step
            on_event(
                "progress",
                {
                    "step": state.global_step,
                    "steps": state.max_steps or total,
                    "loss": (logs or {}).get("loss"),
                    "eval_loss": (logs or {}).get("eval_loss"),
                    "tokens_per_s": (state.num_input_tokens_seen - self.start_tokens) / max(elapsed, 1e-9),
                    "eta_s": elapsed / done * left,
                },
            )

    return Progress()
