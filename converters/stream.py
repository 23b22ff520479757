"""Block streaming: read a model one block at a time and write a pruned one the same way.

    model = open_streamed("llama-7b/")            # or a .gguf file, or a built-in name
    model.params["blocks"][3]                     # read from disk now (memory-mapped), not cached
    writer = ShardWriter(folder, model.config)
    writer.write_block(3, pruned_block)           # model-block-00003.safetensors
    writer.write_top(model.params); writer.finish("float32")   # model-top.safetensors, index, config.json

Only the embedding, final norm and head are held in memory; `params["blocks"]` is a `LazyBlocks`
sequence, so code that visits blocks in order (the pruning pass, the NeuroAL search, OWL's
statistics, perplexity) holds about one block at a time.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import numpy as np

from neuroal_jax.config import ModelConfig
from neuroal_jax.errors import UsageError
from neuroal_jax.models import family_of
from neuroal_jax.outputs.files import write_json

from . import safetensors_io
from .hf import (
    block_tensors,
    compressed_sparsity_config,
    config_to_hf,
    nest_tensors,
    place,
    read_config,
    resolve_hf_source,
    top_tensors,
    weight_files,
    with_model_prefix,
)

INDEX = "model.safetensors.index.json"


class LazyBlocks(Sequence):
    """`params["blocks"]` that loads block b from disk on every `[b]` (nothing is cached)."""

    def __init__(self, cfg: ModelConfig, load: Callable[[int], dict]):
        self._cfg, self._load = cfg, load

    def __len__(self) -> int:
        return self._cfg.num_layers

    def __getitem__(self, b):
        if isinstance(b, slice):
            return [self[i] for i in range(*b.indices(len(self)))]
        if not -len(self) <= b < len(self):
            raise IndexError(f"block {b} out of range for a {len(self)}-block model")
        block = self._load(b % len(self))
        check_block(self._cfg, b % len(self), block)
        return block


def check_block(cfg: ModelConfig, b: int, block: dict) -> None:
    expected = family_of(cfg).param_shapes(cfg)["blocks"][b]
    got = {m: {k: tuple(v.shape) for k, v in leaves.items()} for m, leaves in block.items()}
    want = {m: dict(leaves) for m, leaves in expected.items()}
    if got != want:
        raise UsageError(f"block {b} does not match a {cfg.family} block: got {got}, expected {want}")


# ---------------------------------------------------------------- readers

def _hf_streamed(folder: Path, dtype) -> tuple[ModelConfig, dict]:
    cfg = read_config(folder)
    if compressed_sparsity_config(folder) is not None:
        raise UsageError(f"{folder}: block streaming reads dense checkpoints; this one is sparse-bitmask compressed "
                         "(read it without --stream, or write a dense copy with neuroal-jax export)")
    files = weight_files(folder)
    if any(f.suffix != ".safetensors" for f in files):
        raise UsageError(f"{folder}: block streaming reads safetensors checkpoints (or GGUF), not .bin files")
    # HF name (after the "model." fix-up) -> (file, name in the file)
    located = with_model_prefix({name: (f, name) for f in files for name in safetensors_io.read_header(f)[0]})
    groups: dict[int | None, dict[Path, set[str]]] = {}  # block index (None: top level) -> {file: names}
    for hf_name, (f, name) in located.items():
        where = place(cfg, hf_name)
        groups.setdefault(where[1] if where and where[0] == "blocks" else None, {}).setdefault(f, set()).add(name)

    def nest(b: int | None) -> tuple[dict, dict]:
        tensors = {}
        for f, names in groups.get(b, {}).items():
            tensors.update(safetensors_io.load_file(f, names))
        return nest_tensors(cfg, tensors, dtype, str(folder))

    return cfg, {**nest(None)[0], "blocks": LazyBlocks(cfg, lambda b: nest(b)[1].get(b, {}))}


def _gguf_streamed(path: Path, dtype) -> tuple[ModelConfig, dict]:
    from .gguf import dequantized, gguf_model, open_gguf

    reader = open_gguf(path)
    cfg, table, shapes = gguf_model(reader)
    groups: dict[int | None, list] = {}  # block index (None: top level) -> reader tensors
    for t in reader.tensors:
        groups.setdefault(int(t.name.split(".")[1]) if t.name.startswith("blk.") else None, []).append(t)

    def nest(b: int | None) -> tuple[dict, dict]:
        return nest_tensors(cfg, dequantized(table, cfg, shapes, groups.get(b, [])), dtype, str(path))

    return cfg, {**nest(None)[0], "blocks": LazyBlocks(cfg, lambda b: nest(b)[1].get(b, {}))}


def open_streamed(spec: str | os.PathLike, dtype=np.float32, tokenizer: bool = True):
    """Like `converters.load_model`, but blocks are read on access: a LoadedModel whose
    params["blocks"] is a LazyBlocks sequence."""
    from .load import LoadedModel, _folder_tokenizer, load_tokenizer, resolve_spec

    spec = os.fspath(spec)
    kind, where = resolve_spec(spec)
    if kind in ("builtin", "gguf"):
        cfg, params = _gguf_streamed(Path(where), dtype)
        tok = load_tokenizer(spec) if tokenizer else None
        return LoadedModel(spec if kind == "builtin" else Path(where).stem, cfg, params, tok, Path(where))
    folder = resolve_hf_source(str(where))
    cfg, params = _hf_streamed(folder, dtype)
    return LoadedModel(spec if kind == "hub" else folder.name, cfg, params,
                       _folder_tokenizer(folder) if tokenizer else None, folder)


# ---------------------------------------------------------------- writer

def block_file(b: int) -> str:
    return f"model-block-{b:05d}.safetensors"


TOP_FILE = "model-top.safetensors"


class ShardWriter:
    """Writes a HF checkpoint one block at a time: one safetensors shard per block, one for the
    embedding/norm/head, then `model.safetensors.index.json` and config.json (`finish`). Every file is
    written atomically, so a block's shard is either whole or absent."""

    def __init__(self, folder: str | os.PathLike, cfg: ModelConfig):
        self.folder, self.cfg = Path(folder), cfg

    def write_top(self, params: dict) -> None:
        safetensors_io.save_file(top_tensors(self.cfg, params), self.folder / TOP_FILE)

    def write_block(self, b: int, block: dict) -> None:
        safetensors_io.save_file(block_tensors(self.cfg, b, block), self.folder / block_file(b))

    def has_block(self, b: int) -> bool:
        return (self.folder / block_file(b)).is_file()

    def read_block(self, b: int, dtype) -> dict:
        tensors = safetensors_io.load_file(self.folder / block_file(b))
        return nest_tensors(self.cfg, tensors, dtype, str(self.folder))[1][b]

    def finish(self, dtype_name: str) -> None:
        files = [TOP_FILE] + [block_file(b) for b in range(self.cfg.num_layers)]
        weight_map, total = {}, 0
        for f in files:
            header, _ = safetensors_io.read_header(self.folder / f)
            for name, info in header.items():
                weight_map[name] = f
                total += info["data_offsets"][1] - info["data_offsets"][0]
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        write_json(self.folder / INDEX, index)
        write_json(self.folder / "config.json", config_to_hf(self.cfg, dtype_name))
