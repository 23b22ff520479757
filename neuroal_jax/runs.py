"""What every run shares, whatever it does (prune, compare, sweep, finetune): its data, evaluation and output settings
(options dataclasses: the one source of their flags, API keywords, checks and report entries), its inputs resolved
and checked before any work (the model, the dtype, the files an output must not hold), the rule for an interrupted
run's folder, and a timer per phase."""
from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .config import DTYPES, ModelConfig
from .errors import PrecisionWarning, UsageError
from .evaluation.data import SPEC_HELP, DatasetSpec, parse_spec
from .options import Options, at_least, comma_list, option, unique
from .outputs.files import SAVE_FORMATS, sibling
from .pruning import Structure
from .pruning.statistics import MOE_STATISTICS
from .pruning.targets import check_nm_mean

# ---------------------------------------------------------------- the settings of a run

@dataclass(frozen=True)
class DataSettings(Options):
    """The calibration windows of a run and how many windows go through the model at once."""
    calib: str = option("c4", f"calibration data: {SPEC_HELP}", metavar="SPEC")
    nsamples: int = option(128, "calibration windows (NeuroAL searches on the first --search-samples of them)",
                           check=at_least(1), metavar="N")
    seqlen: int | None = option(None, "tokens per window, calibration, training and evaluation; at most the model's "
                                      "context (default: min(2048, the model's context))", check=at_least(2),
                                metavar="SEQLEN")
    seed: int = option(0, "calibration sampling seed", metavar="S")
    batch_size: int = option(8, "windows per forward pass", check=at_least(1), metavar="B")
    moe_statistics: str = option("routed", "mixture of experts: an expert's calibration statistics over the tokens "
                                           "routed to it (routed; an expert no token reaches falls back to all), or "
                                           "over every token (all); routing itself is unchanged",
                                 choices=MOE_STATISTICS)

    def calib_specs(self) -> list[DatasetSpec]:
        """The calibration sets (a sweep may give several, comma-separated; the other runs one)."""
        return [parse_spec(c) for c in comma_list(self.calib)]

    def for_model(self, cfg: ModelConfig) -> "DataSettings":
        """With the model loaded: seqlen None becomes min(2048, the context), and is checked against the context."""
        return replace(self, seqlen=cfg.check_seqlen(default_seqlen(cfg, self.seqlen)))

    def configure(self, cfg: ModelConfig) -> ModelConfig:
        """`cfg` as the statistics read it: a mixture of experts' `moe_statistics` (a static setting of the jitted
        block functions, never exported)."""
        return cfg.replace(moe_statistics=self.moe_statistics) if cfg.num_experts else cfg


@dataclass(frozen=True)
class EvalSettings(Options):
    """The perplexity test sets of a run."""
    eval: tuple[str, ...] = option((), f"perplexity test sets: {SPEC_HELP}", check=unique, metavar="SPEC[,SPEC...]")
    eval_nsamples: int | None = option(None, "evaluate only the first N windows of each test set (default: all)",
                                       check=at_least(1), metavar="N")

    def specs(self) -> list[DatasetSpec]:
        return [parse_spec(s) for s in self.eval]


@dataclass(frozen=True)
class OutputSettings(Options):
    """Where a run writes (`outputs.files`: atomic folders, and only our own earlier output is ever replaced)."""
    out: Path | None = option(None, "output folder, written atomically (a temporary folder next to it, renamed at "
                                    "the end)", parse=lambda p: Path(os.fspath(p)), metavar="DIR")
    force: bool = option(False, "replace --out if it exists and is an output of neuroal-jax (nothing else is deleted)")
    save_format: str = option("dense", "the model's weights: dense safetensors, or compressed (compressed-tensors' "
                                       "sparse-bitmask format: the prunable layers' non-zero values and a bitmask; "
                                       "needs the compressed extra, pip install 'neuroal-jax[compressed]'; "
                                       "transformers with compressed-tensors loads it)", choices=SAVE_FORMATS)


def settings_of(cls: type[Options], values: dict, whose: str) -> Options:
    """`cls` from the keywords of an API call that are its fields (the others are ignored)."""
    names = {f.name for f in cls.option_fields()}
    return cls.from_dict({k: v for k, v in values.items() if k in names}, whose)


def run_settings(values: dict, whose: str) -> tuple[DataSettings, EvalSettings, OutputSettings]:
    """The data, evaluation and output settings given as an API call's keywords, checked."""
    return tuple(settings_of(cls, values, whose) for cls in (DataSettings, EvalSettings, OutputSettings))


def check_output(output: OutputSettings, model, data: Sequence[DatasetSpec] = (),
                 evaluation: Sequence[DatasetSpec] = (), data_flag: str = "--calib") -> OutputSettings:
    """`output` with its folder checked (`outputs.files.check_out`: it must not hold the model or a data file; an
    existing one needs force and must be ours) and the library of its save format present."""
    from .outputs.files import check_out
    if output.save_format != "dense":
        from converters.compressed import check_save_format
        check_save_format(output.save_format)
    inputs = model_inputs(model) + data_paths(data_flag, data) + data_paths("--eval", evaluation)
    return replace(output, out=check_out(output.out, output.force, inputs))


def default_seqlen(cfg: ModelConfig, seqlen: int | None) -> int:
    """`seqlen`, or when None the evaluation window of the commands that default it: min(2048, the context)."""
    return seqlen if seqlen is not None else min(2048, cfg.max_position_embeddings)


def check_model_fits(cfg: ModelConfig, structure: Structure, seqlen: int, method: str | None = None,
                     search: bool = False) -> None:
    """Checks that need the model: context length, N:M groups dividing every layer's inputs, a mixed N:M
    mean that whole N per block can meet, and (search: NeuroAL's search runs) no SparseGPT inside the search on a
    CPU, where XLA:CPU hangs (docs/algorithm.md, "SparseGPT inside the search")."""
    import jax

    from .models import family_of, prunable_layers
    from .pruning.methods import method_info
    cfg.check_seqlen(seqlen)
    if search and method_info(method).updates_weights and jax.default_backend() == "cpu":
        raise UsageError(f"{method} inside NeuroAL's search hangs XLA:CPU (on SmolLM2-135M and on mixtures of "
                         f"experts); on a CPU, search with wanda, magnitude or multiflow, or use {method} with "
                         "another top-up (docs/algorithm.md, SparseGPT inside the search)")
    if structure.mixed:
        check_nm_mean(structure, cfg.num_layers)
    if structure.kind == "nm":
        shapes = family_of(cfg).param_shapes(cfg)["blocks"]
        for b, block in enumerate(shapes):
            for name in prunable_layers(cfg):
                inp = block[name]["weight"][1]
                if inp % structure.m:
                    raise UsageError(f"structure {structure}: layer {b}.{name} has {inp} input features, "
                                     f"not divisible by M={structure.m}")


def model_path(model) -> str | None:
    """The local file or folder a model comes from (None for a Hub id or in-memory params)."""
    if isinstance(model, (str, os.PathLike)):
        from converters.load import resolve_spec
        try:
            kind, where = resolve_spec(model)
        except (ValueError, OSError):
            return None
        return None if kind == "hub" else os.fspath(where)
    source = getattr(model, "source", None)
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) and Path(source).exists() else None


def interrupted_run(out: Path, resuming: bool, force: bool, how: str = "--stream --resume") -> Path | None:
    """The folder of an interrupted resumable run of `out` (a --stream prune, a finetune) that this run discards
    (with `force`), or None; an error when one is there and the run neither resumes it (`how`) nor may discard it."""
    part = sibling(out, "partial")
    if not part.exists() or resuming:
        return None
    if not force:
        raise FileExistsError(f"an interrupted run of {out} is at {part}; pass {how} to continue it, or --force to "
                              "discard it")
    return part


def model_inputs(model) -> list[tuple[str, str]]:
    """[("--model", path)] for a model read from a local file or folder, else []: what an output must not hold.
    A spec that names no model is an error here, before the output folder is touched (`check_spec`)."""
    if isinstance(model, (str, os.PathLike)):
        from converters.load import check_spec
        check_spec(model)
    path = model_path(model)
    return [("--model", path)] if path else []


def data_paths(flag: str, specs: Sequence[DatasetSpec]) -> list[tuple[str, str]]:
    return [(flag, s.path) for s in specs if s.path]


def check_dtype(dtype: str) -> np.dtype:
    """The NumPy dtype of a --dtype name (weights and activations; statistics stay float32)."""
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    import ml_dtypes
    return np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float32)


def warn_emulated_bfloat16(dtype: str) -> None:
    """--dtype bfloat16 on a CPU without bfloat16 dot instructions runs, but slower than float32: say so once."""
    import jax

    from .runtime import BF16_CPU_FLAGS, cpu_has_bfloat16
    if dtype == "bfloat16" and jax.default_backend() == "cpu" and cpu_has_bfloat16() is False:
        warnings.warn(f"this CPU has no bfloat16 dot instructions ({' or '.join(BF16_CPU_FLAGS)}): --dtype bfloat16 "
                      "is emulated and slower than float32 here", PrecisionWarning, stacklevel=3)


def _cast(params: dict, dtype: np.dtype) -> dict:
    import jax
    import jax.numpy as jnp
    if params["embed"]["weight"].dtype == dtype:
        return params
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)


def resolve_model(model, dtype: str = "float32",
                  stream: bool = False) -> tuple[str, ModelConfig, dict, Any, str | None]:
    """(name, config, params, tokenizer, source) of a spec string / path (the name is the spec as given),
    a LoadedModel, or a (config, params) pair; params in `dtype`. stream=True opens a spec with lazily
    read blocks (converters.stream.open_streamed)."""
    np_dtype = check_dtype(dtype)
    warn_emulated_bfloat16(dtype)
    if isinstance(model, (str, os.PathLike)):
        if stream:
            from converters.stream import open_streamed as load_model
        else:
            from converters import load_model
        loaded = load_model(os.fspath(model), dtype=np_dtype)
        return os.fspath(model), loaded.config, loaded.params, loaded.tokenizer, _source(loaded)
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], ModelConfig):
        return "in-memory", model[0], _cast(model[1], np_dtype), None, None
    if hasattr(model, "config") and hasattr(model, "params"):
        return (str(getattr(model, "name", "in-memory")), model.config, _cast(model.params, np_dtype),
                getattr(model, "tokenizer", None), _source(model))
    raise UsageError(f"model must be a spec string, a LoadedModel or a (config, params) pair, got "
                     f"{type(model).__name__}")


def _source(loaded) -> str | None:
    src = getattr(loaded, "source", None)
    return None if src is None else os.fspath(src) if isinstance(src, os.PathLike) else str(src)


class Timer:
    """Accumulates wall time per phase: `with timer("prune"): ...`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def rounded(self) -> dict:
        return {k: round(v, 3) for k, v in self.seconds.items()}
