"""`neuroal-jax export`: any model the loader reads, written as a Hugging Face PyTorch checkpoint folder."""
from __future__ import annotations

from .common import add_model, add_output


def add_cli(sub) -> None:
    p = sub.add_parser("export", help="write a model as a Hugging Face PyTorch checkpoint folder",
                       description="Convert a model (GGUF, HF folder, built-in) to a folder that "
                                   "transformers' AutoModelForCausalLM.from_pretrained loads.")
    add_model(p)
    add_output(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from converters import export_hf, load_model

    from ..outputs.files import output_lock
    from ..runs import OutputSettings, check_output
    output = check_output(OutputSettings.from_dict(OutputSettings.given_in(args), "export"), args.model)
    with output_lock(output.out):  # from the start: a second run on --out is refused at once
        model = load_model(args.model)
        out = export_hf(model.config, model.params, output.out, tokenizer=model.tokenizer, force=output.force,
                        save_format=output.save_format)
    print(f"wrote {out} (Hugging Face {model.config.family} checkpoint, float32 safetensors"
          + (", prunable layers sparse-bitmask compressed)" if output.save_format == "compressed" else ")"))
    return 0
