"""Converters: Hugging Face / GGUF checkpoints -> (ModelConfig, params pytree), and back to HF PyTorch.

    from converters import load_model
    model = load_model("smollm2-135m")      # built-in name, .gguf file, HF folder or Hub id
    model.config, model.params, model.tokenizer
"""
from .builtin import BUILTINS, MissingBuiltinPackage, builtin_names, builtin_path, cache_dir
from .gguf import load_gguf
from .hf import export_hf, load_hf
from .load import LoadedModel, load_model, load_tokenizer

__all__ = ["BUILTINS", "LoadedModel", "MissingBuiltinPackage", "builtin_names", "builtin_path", "cache_dir",
           "export_hf", "load_gguf", "load_hf", "load_model", "load_tokenizer"]
