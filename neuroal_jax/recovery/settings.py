"""The recovery run's options: one frozen dataclass, the source of the `neuroal-jax finetune` flags, the API's
keyword arguments and the "settings" recorded in report.json (the options machinery of
`neuroal_jax.options`)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import UsageError
from ..options import Options, all_of, at_least, in_range, option, positive, unique

MODES = ("masked", "lora")
TRAINED = ("linear", "norms")
#: Peak learning rate per mode when --lr is not given: full fine-tuning moves every kept weight, so it takes a
#: smaller step than the low-rank adapters.
DEFAULT_LR = {"masked": 1e-4, "lora": 5e-4}


def _known_parts(parts) -> str | None:
    unknown = [p for p in parts if p not in TRAINED]
    return None if not unknown else (f"names unknown part(s) {', '.join(map(repr, unknown))} "
                                     f"(valid: {', '.join(TRAINED)})")


@dataclass(frozen=True)
class FinetuneSettings(Options):
    """How the pruned model is trained (the `neuroal-jax finetune` flags of the same names)."""
    mode: str = option("masked", "masked: train the kept weights of every prunable linear layer; lora: train "
                                 "low-rank adapters whose update is masked, (B·A) ⊙ M, merged at the end",
                       choices=MODES)
    train: tuple[str, ...] = option(("linear",), "what else is trained: norms adds the RMS/LayerNorm weights "
                                                 "(dense; they have no mask)", check=all_of(_known_parts, unique),
                                    metavar="linear[,norms]")
    steps: int = option(200, "optimizer steps", check=at_least(1), metavar="N")
    batch_size: int = option(4, "windows per micro-batch", check=at_least(1), metavar="B")
    accumulate: int = option(1, "micro-batches per optimizer step (optax.MultiSteps)", check=at_least(1),
                             metavar="K")
    lr: float | None = option(None, "peak learning rate (default: "
                                    + ", ".join(f"{v:g} {k}" for k, v in DEFAULT_LR.items()) + ")",
                              check=positive, metavar="LR")
    warmup: int | None = option(None, "linear warm-up steps before the cosine decay (default: 10% of --steps)",
                                check=at_least(0), metavar="N")
    min_lr_ratio: float = option(0.1, "the cosine decays to this fraction of the peak", check=in_range(0.0, 1.0),
                                 metavar="R")
    weight_decay: float = option(0.0, "AdamW decoupled weight decay of the trained matrices", check=at_least(0.0),
                                 metavar="WD")
    clip: float = option(1.0, "gradient clipping: the global norm is cut to this", check=positive, metavar="C")
    lora_rank: int = option(8, "LoRA rank r", check=at_least(1), metavar="R")
    lora_alpha: float = option(16.0, "LoRA scale α (the update is α / r · B·A)", check=positive, metavar="A")
    save_every: int = option(50, "orbax checkpoint of the training state every N steps (--resume continues from "
                                 "the last one)", check=at_least(1), metavar="N")
    seed: int = option(0, "seed of the training windows and the adapters' initialisation", check=at_least(0),
                       metavar="S")

    def complete(self, target=None) -> "FinetuneSettings":
        return replace(self, lr=self.lr if self.lr is not None else DEFAULT_LR[self.mode],
                       warmup=self.warmup if self.warmup is not None else self.steps // 10)

    def validate(self, target=None) -> None:
        if self.warmup > self.steps:
            raise UsageError(f"option warmup (--warmup) must be at most --steps ({self.steps}), got {self.warmup}")

    @property
    def windows(self) -> int:
        """Training windows the run reads: one per micro-batch row of every step."""
        return self.steps * self.accumulate * self.batch_size
