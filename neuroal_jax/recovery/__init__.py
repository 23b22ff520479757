"""Recovery training after pruning that keeps every mask: `finetune` (masked full fine-tuning or masked LoRA).

`settings` (the options), `train` (the pure functions: trainable split, assembled params, loss, optimizer, step),
`loop` (micro-batches, progress bar, orbax checkpoints), `run` (the call: checks, data, evaluation, outputs).
The command line is `neuroal_jax.cli.finetune`.
"""
from .run import FinetuneResult, finetune
from .settings import FinetuneSettings

__all__ = ["FinetuneResult", "FinetuneSettings", "finetune"]
