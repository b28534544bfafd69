"""What an engine takes and gives: the sampling settings, one prompt's generation, the Engine protocol. The
engines (engines.py, vllm.py) and everything that drives them share these."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Sampling:
    """How to sample; temperature 0 is greedy."""

    temperature: float
    top_p: float
    max_new_tokens: int
    repetition_penalty: float = 1.0
    seed: int = 0
    ignore_eos: bool = False  # benchmarks: every prompt generates exactly max_new_tokens
    penalty_scope: str = "all"  # "output": the repetition penalty counts the generated tokens only

    def identity(self) -> dict[str, Any]:
        """Every field, the penalty's scope only where it is not "all": runs started before the scope existed
        keep their fingerprints."""
        fields = asdict(self)
        if self.penalty_scope == "all":
            del fields["penalty_scope"]
        return fields

    def reported(self) -> dict[str, Any]:
        """The fields a report states (ignore_eos is a benchmark's, never a run's)."""
        return {k: v for k, v in self.identity().items() if k != "ignore_eos"}


@dataclass(slots=True)
class Generation:
    """One prompt's result (slots, not frozen: one is made per row, and a frozen init costs 3x)."""

    text: str
    finish_reason: str  # "stop" (EOS or a stop token) or "length" (the token limit)
    prompt_tokens: int
    output_tokens: int


# Called with the number of prompts done so far, where an engine works through them in several batches.
Progress = Callable[[int], None]


class Engine(Protocol):
    """What the run needs of an inference engine."""

    name: str
    tokenizer: Any
    max_model_len: int

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, on_progress: Progress | None = None
    ) -> list[Generation]: ...

    def close(self) -> None: ...


def stop_token_ids(tokenizer: Any, stop: Sequence[str], extra: Any = None) -> list[int]:
    """The token ids that end a generation: each stop string that is one token, then extra (the model's EOS ids)."""
    ids: list[int] = []
    for token in stop:
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.append(tid)
    for tid in extra if isinstance(extra, list) else [extra]:
        if isinstance(tid, int) and tid not in ids:
            ids.append(tid)
    return ids


def cuda_available() -> bool:
    """True where torch sees a CUDA GPU."""
    import torch

    return bool(torch.cuda.is_available())
