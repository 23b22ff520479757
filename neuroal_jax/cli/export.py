"""`neuroal-jax export`: any model the loader reads, written as a Hugging Face PyTorch checkpoint folder."""
from __future__ import annotations

from .common import add_model, add_output, add_save_format


def add_cli(sub) -> None:
    p = sub.add_parser("export", help="write a model as a Hugging Face PyTorch checkpoint folder",
                       description="Convert a model (GGUF, HF folder, built-in) to a folder that "
                                   "transformers' AutoModelForCausalLM.from_pretrained loads.")
    add_model(p)
    add_output(p)
    add_save_format(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from converters import export_hf, load_model
    from converters.compressed import check_save_format

    from ..outputs.files import check_out, output_lock
    from ..runs import model_inputs
    check_save_format(args.save_format)
    out = check_out(args.out, args.force, model_inputs(args.model))
    with output_lock(out):  # from the start: a second run on --out is refused at once
        model = load_model(args.model)
        out = export_hf(model.config, model.params, out, tokenizer=model.tokenizer, force=args.force,
                        save_format=args.save_format)
    print(f"wrote {out} (Hugging Face {model.config.family} checkpoint, float32 safetensors"
          + (", prunable layers sparse-bitmask compressed)" if args.save_format == "compressed" else ")"))
    return 0
