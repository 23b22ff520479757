"""Hugging Face checkpoints (local folder or Hub id; safetensors, or .bin with weights_only) <-> pytree."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from neuroal_jax.config import ModelConfig
from neuroal_jax.errors import MissingDependency, UsageError
from neuroal_jax.models import validate_params
from neuroal_jax.outputs.files import output_folder, write_json

from . import safetensors_io
from .compressed import check_save_format, compression_format, read_compressed, write_compressed
from .hf_tables import GENERIC_IGNORED, TABLES, table_for_model_type

#: Buffers some checkpoints carry that are recomputed by the model.
IGNORED_TENSORS = re.compile(r".*(rotary_emb\.inv_freq|attn\.masked_bias|attn\.bias)$")
REQUIRED = ("vocab_size", "hidden_size", "num_layers", "num_heads")


# ---------------------------------------------------------------- configs

def config_from_hf(hf: dict) -> ModelConfig:
    """ModelConfig from a HF config.json dict; unhandled attributes are errors that name them."""
    if "model_type" not in hf:
        raise UsageError("config.json has no model_type; cannot tell the model family")
    t = table_for_model_type(hf["model_type"])
    known = t.fields.keys() | t.fixed.keys() | t.ignored | t.rope_keys | GENERIC_IGNORED
    unknown = {k: v for k, v in hf.items() if k not in known and v is not None}
    if unknown:
        raise UsageError(f"unhandled config attribute(s) for family {t.family}: "
                         + ", ".join(f"{k}={v!r}" for k, v in unknown.items()))
    for k, v in t.fixed.items():
        if k in hf and hf[k] != v:
            raise UsageError(f"unsupported config attribute {k}={hf[k]!r} (only {v!r} is supported)")
    kw = {"tie_word_embeddings": True, **t.defaults}  # absent = the HF PretrainedConfig default
    kw.update({ours: hf[k] for k, ours in t.fields.items() if hf.get(k) is not None})
    kw.update(t.derive(hf))
    missing = [f for f in REQUIRED if f not in kw]
    if missing:
        raise UsageError(f"config.json lacks required attribute(s) for {t.family}: {missing}")
    kw.setdefault("num_kv_heads", kw["num_heads"])
    kw.setdefault("head_dim", kw["hidden_size"] // kw["num_heads"])
    kw.setdefault("intermediate_size", 4 * kw["hidden_size"])
    kw.setdefault("max_position_embeddings", 2048)
    if isinstance(kw.get("eos_token_id"), list):
        kw["eos_token_id"] = tuple(kw["eos_token_id"])
    if isinstance(kw.get("layer_types"), list):
        kw["layer_types"] = tuple(kw["layer_types"])
    from neuroal_jax.models.layers import ACTIVATIONS
    if kw["hidden_act"] not in ACTIVATIONS:
        raise UsageError(f"unsupported config attribute hidden_act={kw['hidden_act']!r}; "
                         f"supported: {sorted(ACTIVATIONS)}")
    return ModelConfig(family=t.family, **kw)


def config_to_hf(cfg: ModelConfig, dtype: str = "float32") -> dict:
    """A HF config.json dict (v4 style, readable by transformers 4.x and 5.x); `dtype` of the weights."""
    t = TABLES[cfg.family]
    hf = {"architectures": [t.architecture], "model_type": t.model_types[0]}
    for k, ours in t.fields.items():
        v = getattr(cfg, ours)
        hf[k] = list(v) if isinstance(v, tuple) else v
    hf.update(t.fixed)
    hf.update(t.underive(cfg))
    hf["torch_dtype"] = dtype
    return hf


# ---------------------------------------------------------------- weights

def with_model_prefix(tensors: dict) -> dict:
    """Checkpoints saved from the bare decoder (e.g. facebook/opt-*: "decoder.layers...") get "model."."""
    if any(name.startswith("model.") for name in tensors):
        return tensors
    return {(n if n.startswith("lm_head.") else f"model.{n}"): v for n, v in tensors.items()}


def place(cfg: ModelConfig, name: str) -> tuple | None:
    """Where a HF tensor goes in our pytree: ("blocks", index, module, kind), (top, kind), () to skip it
    (a saved copy of a tied head, a recomputed buffer), or None when the family's table does not map it."""
    t = TABLES[cfg.family]
    if name.startswith(t.blocks + "."):
        index, rest = name[len(t.blocks) + 1:].split(".", 1)
        module, kind = rest.rsplit(".", 1)
        if int(index) < cfg.num_layers:
            return ("blocks", int(index), module, kind)
    top = next((ours for ours, hf in t.top.items() if name.startswith(hf + ".")), None)
    if top == "lm_head" and cfg.tie_word_embeddings:
        return ()
    if top is not None:
        return (top, name[len(t.top[top]) + 1:])
    return () if IGNORED_TENSORS.match(name) else None


def nest_tensors(cfg: ModelConfig, tensors: dict, dtype=np.float32, source: str = "checkpoint") -> tuple[dict, dict]:
    """(top-level params, {block index: block params}) of some HF-named tensors, as `dtype` arrays.
    A name the family's table does not map is an error."""
    top, blocks, unexpected = {}, {}, []
    for name, arr in with_model_prefix(tensors).items():
        where = place(cfg, name)
        if where is None:
            unexpected.append(name)
        elif where:
            leaf = jnp.asarray(np.asarray(arr, dtype=dtype))
            if where[0] == "blocks":
                blocks.setdefault(where[1], {}).setdefault(where[2], {})[where[3]] = leaf
            else:
                top.setdefault(where[0], {})[where[1]] = leaf
    if unexpected:
        raise UsageError(f"{source}: tensors the {cfg.family} table does not map: {unexpected[:8]}")
    return top, blocks


def params_from_tensors(cfg: ModelConfig, tensors: dict, source: str = "checkpoint", dtype=np.float32) -> dict:
    """Nest HF-named tensors into our params pytree using the family's table."""
    top, blocks = nest_tensors(cfg, tensors, dtype, source)
    params = {**top, "blocks": [blocks.get(b, {}) for b in range(cfg.num_layers)]}
    validate_params(cfg, params, source=f"weights in {source}")
    return params


def top_tensors(cfg: ModelConfig, params: dict) -> dict[str, np.ndarray]:
    """The non-block params (embedding, final norm, untied head) under their HF names."""
    t = TABLES[cfg.family]
    return {f"{hf}.{kind}": np.asarray(arr) for ours, hf in t.top.items() for kind, arr in params.get(ours, {}).items()}


def block_tensors(cfg: ModelConfig, b: int, block: dict) -> dict[str, np.ndarray]:
    """Block b's params under their HF names."""
    prefix = f"{TABLES[cfg.family].blocks}.{b}"
    return {f"{prefix}.{module}.{kind}": np.asarray(arr) for module, leaves in block.items()
            for kind, arr in leaves.items()}


def tensors_from_params(cfg: ModelConfig, params: dict) -> dict[str, np.ndarray]:
    """Flatten our params pytree back to HF tensor names (tied lm_head omitted)."""
    out = top_tensors(cfg, params)
    for i, block in enumerate(params["blocks"]):
        out.update(block_tensors(cfg, i, block))
    return out


# ---------------------------------------------------------------- loading

def read_json(path: Path) -> dict:
    """A JSON object from a checkpoint file; an unreadable one is an error that names the file."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise UsageError(f"{path} must hold a JSON object, not {type(value).__name__}")
    return value


def read_config(folder: Path) -> ModelConfig:
    """The ModelConfig of a HF checkpoint folder's config.json."""
    path = Path(folder) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder}: no config.json")
    try:
        hf = read_json(path)
        compression_format(hf, str(path))
        return config_from_hf({k: v for k, v in hf.items() if k != "quantization_config"})
    except ValueError as e:
        raise UsageError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None

def resolve_hf_source(source: str) -> Path:
    """A local folder as is; otherwise download the Hub repo's config, weights and tokenizer."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists() or source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{source} is not a model folder (expected a folder with config.json)")
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(source, allow_patterns=[
            "config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer*", "special_tokens_map.json",
            "*.model", "generation_config.json"]))
    except Exception as e:  # offline, unknown repo, gated repo...
        raise FileNotFoundError(f"could not get {source!r} from the Hugging Face Hub "
                                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                                "pass a local folder, a .gguf file or a built-in model name") from None


def weight_files(folder: Path) -> list[Path]:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).exists():
            shards = sorted(set(read_json(folder / index).get("weight_map", {}).values()))
            return [folder / s for s in shards]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (folder / single).exists():
            return [folder / single]
    raise FileNotFoundError(f"{folder}: no weight file (model.safetensors, pytorch_model.bin or a sharded index)")


def read_tensors(path: Path) -> dict:
    if path.suffix == ".safetensors":
        return safetensors_io.load_file(path)
    try:
        import torch
    except ImportError:
        raise MissingDependency(f"{path} is a PyTorch .bin checkpoint; reading it needs torch: "
                          "pip install 'neuroal-jax[torch]'") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in state.items()}


def load_hf(source: str | os.PathLike, dtype=np.float32) -> tuple[ModelConfig, dict, Path]:
    """(config, params, folder) of a HF causal-LM checkpoint, dense or sparse-bitmask compressed."""
    folder = resolve_hf_source(str(source))
    cfg = read_config(folder)
    sparsity = compressed_sparsity_config(folder)
    if sparsity is not None:
        tensors = read_compressed(folder, sparsity)
    else:
        tensors = {}
        for f in weight_files(folder):
            tensors.update(read_tensors(f))
    return cfg, params_from_tensors(cfg, tensors, source=str(folder), dtype=dtype), folder


def compressed_sparsity_config(folder: Path) -> dict | None:
    """The sparsity_config of a sparse-bitmask folder's config.json, None for a dense checkpoint."""
    hf = read_json(Path(folder) / "config.json")
    return hf["quantization_config"]["sparsity_config"] if compression_format(hf) else None


# ---------------------------------------------------------------- export

def write_hf(folder: Path, cfg: ModelConfig, params: dict, tokenizer=None, save_format: str = "dense") -> None:
    """config.json, model.safetensors and the tokenizer files into an existing folder; save_format "compressed"
    stores the prunable layers in compressed-tensors' sparse-bitmask format (converters.compressed)."""
    validate_params(cfg, params)
    dtype = np.dtype(params["embed"]["weight"].dtype).name
    write_json(folder / "config.json", config_to_hf(cfg, dtype))
    if check_save_format(save_format) == "compressed":
        write_compressed(folder, cfg, tensors_from_params(cfg, params))
    else:
        safetensors_io.save_file(tensors_from_params(cfg, params), folder / "model.safetensors")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))


def export_hf(cfg: ModelConfig, params: dict, out: str | os.PathLike, tokenizer=None, force: bool = False,
              save_format: str = "dense") -> Path:
    """Write a HF PyTorch checkpoint folder (config.json, model.safetensors, tokenizer) atomically; an existing
    `out` is replaced only with `force`, and only if neuroal-jax wrote it (neuroal_jax.outputs.files)."""
    validate_params(cfg, params)
    check_save_format(save_format)
    with output_folder(out, force=force, kind="export") as tmp:
        write_hf(tmp, cfg, params, tokenizer, save_format)
    return Path(out)
