"""One entry point for every model source: `load_model(spec)` and `load_tokenizer(source)`.

A spec is, in this order:
    a built-in name       smollm2-135m, gemma3-270m (see converters.builtin)
    a .gguf file          any GGUF whose architecture converters.gguf maps
    a local folder        a Hugging Face checkpoint (config.json + safetensors / .bin)
    a Hub id              org/name, downloaded by converters.hf.load_hf (clear error when offline)
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neuroal_jax.config import ModelConfig
from neuroal_jax.errors import UsageError

from .builtin import BUILTINS, builtin_names, builtin_path, cache_dir


@dataclass
class LoadedModel:
    """A model ready for neuroal_jax: config, params pytree, tokenizer (None if the source has none)."""

    name: str
    config: ModelConfig
    params: dict
    tokenizer: Any
    source: Path | str  # the file or folder it came from (a Hub id resolves to its local snapshot)


def looks_like_path(spec: str) -> bool:
    """A spec that can only be a path, not a Hub id ("org/name" or "name")."""
    return (spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec
            or (os.sep != "/" and os.sep in spec) or spec.lower().endswith((".gguf", ".safetensors", ".json")))


def _unknown(why: str) -> str:
    return (f"{why}; a model spec is a built-in name ({', '.join(builtin_names())}), a .gguf file, "
            f"a local Hugging Face folder or a Hub id (org/name)")


def resolve_spec(spec: str | os.PathLike) -> tuple[str, Path | str]:
    """(kind, location) with kind in builtin | gguf | hf-folder | hub."""
    spec = os.fspath(spec)
    if spec in BUILTINS:
        return "builtin", builtin_path(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise UsageError(_unknown(f"{spec} is a file but not a .gguf file"))
        return "gguf", path
    if path.is_dir():
        return "hf-folder", path
    if looks_like_path(spec):
        raise FileNotFoundError(_unknown(f"no such file or folder: {spec}"))
    if spec.count("/") != 1:
        raise UsageError(_unknown(f"unknown model {spec!r}"))
    return "hub", spec


def check_spec(spec: str | os.PathLike) -> None:
    """Raise what `load_model` would raise for a spec that names no model, without loading anything: an unknown
    name, a missing path, a file that is not GGUF, a folder whose config.json names an unsupported family."""
    from .hf_tables import table_for_model_type

    kind, where = resolve_spec(spec)
    config = Path(where) / "config.json" if kind == "hf-folder" else None
    if config is None or not config.is_file():
        return
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (ValueError, AttributeError) as e:
        raise UsageError(f"{config} is not a JSON object: {e}") from None
    if model_type is not None:
        table_for_model_type(model_type)


def load_model(spec: str | os.PathLike, dtype=np.float32, tokenizer: bool = True) -> LoadedModel:
    """Load `spec` (see the module docstring) as float `dtype` params, with its tokenizer."""
    from .gguf import load_gguf, open_gguf
    from .hf import load_hf

    spec = os.fspath(spec)
    kind, where = resolve_spec(spec)
    if kind in ("builtin", "gguf"):
        reader = open_gguf(where)
        cfg, params = load_gguf(reader, dtype=dtype)
        tok = load_tokenizer(where, reader=reader) if tokenizer else None
        name = spec if kind == "builtin" else Path(where).stem
        return LoadedModel(name, cfg, params, tok, Path(where))
    try:
        cfg, params, folder = load_hf(where, dtype=dtype)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e} (built-in models: {', '.join(builtin_names())})") from None
    tok = _folder_tokenizer(folder) if tokenizer else None
    return LoadedModel(spec if kind == "hub" else Path(folder).name, cfg, params, tok, folder)


# ---------------------------------------------------------------- tokenizers

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def _folder_tokenizer(folder: Path):
    """AutoTokenizer of a HF folder, or None when the folder has no tokenizer files. A tokenizer.json saved by
    transformers 5 names the class TokenizersBackend, which transformers 4 (the compressed extra's) lacks: it is
    then read with the generic fast-tokenizer class (the same ids and special tokens)."""
    if not any((Path(folder) / f).exists() for f in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except ValueError as e:
        if "TokenizersBackend" not in str(e) or not (Path(folder) / "tokenizer.json").exists():
            raise
        return _fast_tokenizer_class().from_pretrained(str(folder))


def _fast_tokenizer_class():
    """The generic fast-tokenizer class (AutoTokenizer would import torch when it is installed)."""
    try:
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
        return TokenizersBackend
    except ImportError:  # transformers 4.x
        from transformers import PreTrainedTokenizerFast
        return PreTrainedTokenizerFast


def _tokenizer_cache_key(path: Path) -> str:
    """Changes when the file or the transformers version changes."""
    import transformers
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}"
    return f"{path.stem}-{hashlib.sha1(ident.encode()).hexdigest()[:16]}"


def _cached_gguf_tokenizer(path: Path, reader=None):
    """Building a GGUF tokenizer can take ~10 s (Gemma's merges); keep the result in the cache."""
    from .gguf import gguf_tokenizer

    folder = cache_dir() / "tokenizers" / _tokenizer_cache_key(path)
    if (folder / "tokenizer.json").is_file():
        try:
            return _fast_tokenizer_class().from_pretrained(str(folder))
        except Exception:  # an unreadable cache entry: rebuild it
            shutil.rmtree(folder, ignore_errors=True)
    tok = gguf_tokenizer(reader if reader is not None else path)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    try:
        tok.save_pretrained(str(tmp))
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, folder)
    except OSError:  # read-only or racing cache: the tokenizer is still good
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tok


def load_tokenizer(source: str | os.PathLike, reader=None, cache: bool = True):
    """A transformers fast tokenizer, without torch, for a built-in name, a .gguf file, a HF folder or Hub id.

    GGUF tokenizers are built from the file's metadata (converters.gguf.gguf_tokenizer) and cached in
    `cache_dir()/tokenizers` unless cache=False; `reader` reuses an already opened GGUF.
    """
    from .gguf import gguf_tokenizer

    source = os.fspath(source)
    kind, where = resolve_spec(source)
    if kind in ("builtin", "gguf"):
        return _cached_gguf_tokenizer(Path(where), reader) if cache else gguf_tokenizer(reader or where)
    if kind == "hf-folder":
        tok = _folder_tokenizer(Path(where))
        if tok is None:
            raise FileNotFoundError(f"{where} has no tokenizer files ({', '.join(TOKENIZER_FILES)})")
        return tok
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(where)


__all__ = ["LoadedModel", "load_model", "load_tokenizer", "resolve_spec"]
