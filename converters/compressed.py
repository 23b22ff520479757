"""Sparse checkpoints in compressed-tensors' sparse-bitmask format (`--save-format compressed`).

Every prunable linear layer's weight [out, in] is stored by compressed-tensors' BitmaskCompressor as
`<layer>.compressed` (the non-zero values, row by row), `<layer>.bitmask` (uint8 [out, ceil(in / 8)], one bit per
weight), `<layer>.row_offsets` and `<layer>.shape`; every other tensor stays dense. config.json carries the
library's `quantization_config` with a `sparsity_config` (format sparse-bitmask, the global sparsity and the
layers it covers), so transformers with compressed-tensors installed decompresses the weights on load, and
`converters.load_model` reads such a folder back through the same decompressor. Nothing here writes the format
by hand: values, bitmask, offsets and the config entry all come from compressed-tensors.

Which release: compressed-tensors 0.14.0.1 is the last one with the sparse-bitmask compressor (0.15 removed it,
keeping only its config class), and transformers 5 requires compressed-tensors >= 0.15; so the `compressed`
extra pins compressed-tensors 0.14.0.1, which brings transformers 4.x. The JAX core needs neither.
"""
from __future__ import annotations

import re
from pathlib import Path

import ml_dtypes
import numpy as np

from neuroal_jax.errors import MissingDependency, UsageError
from neuroal_jax.outputs.files import SAVE_FORMATS

FORMAT = "sparse-bitmask"
INSTALL = "pip install 'neuroal-jax[compressed]' (compressed-tensors==0.14.0.1 with torch==2.13.0)"


def check_save_format(save_format: str) -> str:
    """A --save-format value, checked; "compressed" also needs the library (an ImportError names the install)."""
    if save_format not in SAVE_FORMATS:
        raise UsageError(f"unknown save format {save_format!r}; valid: {', '.join(SAVE_FORMATS)}")
    if save_format == "compressed":
        _library()
    return save_format


def _library():
    """(torch, compressed_tensors) with the sparse-bitmask compressor registered, or an ImportError saying how."""
    try:
        import compressed_tensors
        import torch
        from compressed_tensors.compressors import BaseCompressor
    except ImportError:
        raise MissingDependency(f"the compressed (sparse-bitmask) format needs compressed-tensors: {INSTALL}") from None
    try:
        BaseCompressor.get_value_from_registry(FORMAT)
    except Exception:
        raise MissingDependency(f"compressed-tensors {compressed_tensors.__version__} has no {FORMAT} compressor "
                                f"(it was removed in 0.15): {INSTALL}") from None
    return torch, compressed_tensors


# ---------------------------------------------------------------- numpy <-> torch, bfloat16 included

def _to_torch(torch, a: np.ndarray):
    a = np.ascontiguousarray(a)
    if a.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _to_numpy(torch, t) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


# ---------------------------------------------------------------- writing

def sparse_layers(cfg, tensors: dict) -> list[str]:
    """The HF module names of the prunable linear layers, e.g. model.layers.3.mlp.down_proj."""
    from neuroal_jax.models import prunable_layers

    from .hf_tables import TABLES
    prefix = TABLES[cfg.family].blocks
    names = [f"{prefix}.{b}.{m}" for b in range(cfg.num_layers) for m in prunable_layers(cfg)]
    return [n for n in names if f"{n}.weight" in tensors]


def sparsity_targets(layers: list[str], tensors: dict) -> list[str]:
    r"""The sparsity_config's targets: one regex per layer name with the block and expert numbers as \d+
    (model.layers.3.mlp.experts.5.up_proj -> re:^model\.layers\.\d+\.mlp\.experts\.\d+\.up_proj$), or each
    layer spelled out when those would also name a weight left dense. transformers (compressed-tensors) matches
    every module against every target on load: a target per expert layer takes hours on a large MoE."""
    def pattern(name):
        return "re:^" + r"\.".join(r"\d+" if part.isdigit() else re.escape(part) for part in name.split(".")) + "$"
    patterns = sorted({pattern(n) for n in layers})
    weights = [k.removesuffix(".weight") for k in tensors if k.endswith(".weight")]
    matched = {w for w in weights if any(re.match(p[3:], w) for p in patterns)}
    return patterns if matched == set(layers) else [f"re:^{re.escape(n)}$" for n in layers]


def _sparsity_config(compressed_tensors, layers: list[str], tensors: dict):
    from compressed_tensors.config import SparsityCompressionConfig
    zeros = sum(int(np.count_nonzero(tensors[f"{n}.weight"] == 0)) for n in layers)
    total = sum(tensors[f"{n}.weight"].size for n in layers)
    return SparsityCompressionConfig.load_from_registry(
        FORMAT, global_sparsity=zeros / max(total, 1), sparsity_structure="unstructured",
        targets=sparsity_targets(layers, tensors), ignore=[])


def write_compressed(folder: Path, cfg, tensors: dict[str, np.ndarray]) -> None:
    """model.safetensors with the prunable layers bitmask-compressed, and the sparsity_config added to the
    config.json already in `folder`."""
    torch, ct = _library()
    from compressed_tensors.compressors import BaseCompressor, ModelCompressor

    from . import safetensors_io
    layers = sparse_layers(cfg, tensors)
    config = _sparsity_config(ct, layers, tensors)
    compressor = BaseCompressor.load_from_registry(FORMAT, config=config)
    state = compressor.compress({k: _to_torch(torch, v) for k, v in tensors.items()}, compression_targets=set(layers))
    safetensors_io.save_file({k: _to_numpy(torch, v) for k, v in state.items()}, folder / "model.safetensors")
    ModelCompressor(sparsity_config=config).update_config(str(folder))


# ---------------------------------------------------------------- reading

def compression_format(hf: dict, where: str = "config.json") -> str | None:
    """FORMAT when a config.json dict describes a sparse-bitmask checkpoint, None when it has no
    quantization_config; any other compression (quantized weights) is an error."""
    q = hf.get("quantization_config")
    if q is None:
        return None
    sparsity = q.get("sparsity_config") if isinstance(q, dict) else None
    quantized = isinstance(q, dict) and (q.get("config_groups") or q.get("quant_method") != "compressed-tensors")
    if not isinstance(sparsity, dict) or sparsity.get("format") != FORMAT or quantized:
        raise UsageError(f"{where}: unsupported quantization_config (quant_method "
                         f"{q.get('quant_method') if isinstance(q, dict) else q!r}); neuroal-jax reads dense "
                         f"checkpoints and compressed-tensors' {FORMAT} sparse checkpoints, not quantized ones")
    return FORMAT


def read_compressed(folder: Path, sparsity_config: dict) -> dict[str, np.ndarray]:
    """Every tensor of a sparse-bitmask folder, the compressed layers decompressed (dense, their own dtype)."""
    torch, _ = _library()
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.config import SparsityCompressionConfig
    config = SparsityCompressionConfig.load_from_registry(FORMAT, **{
        k: v for k, v in sparsity_config.items() if k != "format"})
    compressor = BaseCompressor.load_from_registry(FORMAT, config=config)
    return {name: _to_numpy(torch, t) for name, t in compressor.decompress(str(folder))}
