"""Converters: Hugging Face / GGUF checkpoints -> (ModelConfig, params pytree), and back to HF PyTorch."""
