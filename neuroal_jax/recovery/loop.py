"""The training loop: micro-batches through `train.train_step`, a progress bar with the loss and tokens/s, and an
orbax checkpoint (trainable weights, optimizer state, loss curve) every `save_every` steps to resume from."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..config import ModelConfig
from ..errors import UsageError
from .settings import FinetuneSettings
from .train import optimizer, train_step

#: The run stops as diverged when a step's loss is not finite or exceeds this many times the first step's.
DIVERGED_FACTOR = 2.0
#: ... or when two steps in a row have the uniform distribution's loss, ln(vocab_size), to this relative tolerance:
#: a model that gives every token the same probability (perplexity = vocabulary size) has collapsed.
UNIFORM_RTOL = 1e-5


class TrainingDiverged(UsageError):
    """The loss became non-finite, exploded or collapsed to uniform (a learning rate too large): the run stops."""


def check_loss(losses: list[float], lr: float, vocab_size: int) -> None:
    """Raise TrainingDiverged when the last loss is not finite, more than DIVERGED_FACTOR × the first, or the last two
    are ln(vocab_size) (see UNIFORM_RTOL)."""
    loss, uniform = losses[-1], math.log(vocab_size)
    if not math.isfinite(loss) or loss > DIVERGED_FACTOR * losses[0]:
        why = f"loss {loss:.4g} (step 1: {losses[0]:.4g}; the limit is {DIVERGED_FACTOR:g}× that)"
    elif len(losses) > 1 and all(abs(x - uniform) <= UNIFORM_RTOL * uniform for x in losses[-2:]):
        why = (f"loss {loss:.6g} = ln(vocab_size {vocab_size}) two steps in a row: the model gives every token the "
               "same probability")
    else:
        return
    raise TrainingDiverged(f"the training diverged at step {len(losses)}: {why}; lower --lr (now {lr:g})")


@dataclass
class Progress:
    """What the loop has done: per-step mean losses, and the time spent (the first step includes compiling)."""
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    first_step_seconds: float | None = None

    def to_json(self) -> dict:
        return {"losses": self.losses, "seconds": self.seconds, "first_step_seconds": self.first_step_seconds}


def _manager(folder: Path):
    import orbax.checkpoint as ocp
    return ocp.CheckpointManager(folder.absolute(), options=ocp.CheckpointManagerOptions(
        max_to_keep=1, enable_async_checkpointing=False, create=True))


def _save(manager, step: int, trainable, opt_state, progress: Progress) -> None:
    import orbax.checkpoint as ocp
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave({"trainable": trainable,
                                                                             "opt_state": opt_state}),
                                               progress=ocp.args.JsonSave(progress.to_json())))
    manager.wait_until_finished()


def _restore(manager, trainable, opt_state):
    """(step, trainable, opt_state, progress) of the last checkpoint, or None when there is none."""
    import orbax.checkpoint as ocp
    step = manager.latest_step()
    if step is None:
        return None
    got = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore({"trainable": trainable, "opt_state": opt_state}),
        progress=ocp.args.JsonRestore()))
    return step, got.state["trainable"], got.state["opt_state"], Progress(**got.progress)


def train(cfg: ModelConfig, s: FinetuneSettings, frozen: dict, trainable: dict, masks: list[dict], windows: np.ndarray,
          checkpoints: Path | None, progress_bar: bool = True) -> tuple[dict, Progress]:
    """Run `s.steps` optimizer steps over windows [steps × accumulate × batch_size, T] in order; continue from the
    last checkpoint in `checkpoints` when there is one. Returns (trainable, progress)."""
    import jax
    import jax.numpy as jnp

    from ..models import block_contexts
    seqlen = windows.shape[1]
    batches = windows.reshape(s.steps, s.accumulate, s.batch_size, seqlen)
    ctxs = block_contexts(cfg, seqlen)
    opt_state = optimizer(s).init(trainable)
    manager = _manager(checkpoints) if checkpoints is not None else None
    start, progress = 0, Progress()
    if manager is not None and (saved := _restore(manager, trainable, opt_state)) is not None:
        start, trainable, opt_state, progress = saved
    tokens_per_step = s.accumulate * s.batch_size * seqlen
    bar = tqdm(total=s.steps, initial=start, desc=f"finetune ({s.mode})", disable=not progress_bar, leave=False)
    try:
        for step in range(start, s.steps):
            t0 = time.perf_counter()
            losses = []
            for tokens in batches[step]:
                trainable, opt_state, value = train_step(cfg, s, trainable, opt_state, frozen, masks, ctxs,
                                                         jnp.asarray(tokens))
                losses.append(value)
            progress.losses.append(float(np.mean(jax.device_get(losses))))
            check_loss(progress.losses, s.lr, cfg.vocab_size)
            took = time.perf_counter() - t0
            progress.seconds += took
            if progress.first_step_seconds is None:
                progress.first_step_seconds = took
            bar.update()
            bar.set_postfix(loss=f"{progress.losses[-1]:.3f}", tok_s=f"{tokens_per_step / took:,.0f}")
            if manager is not None and (step + 1) % s.save_every == 0 and step + 1 < s.steps:
                _save(manager, step + 1, trainable, opt_state, progress)
    finally:
        bar.close()
        if manager is not None:
            manager.close()
    return trainable, progress
