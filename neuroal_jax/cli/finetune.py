"""`neuroal-jax finetune`: the command line of `neuroal_jax.recovery.run.finetune`."""
from __future__ import annotations

import argparse

from .common import (
    EVAL_WINDOWS_HELP,
    MODEL_HELP,
    add_dtype,
    add_evaluation,
    add_model,
    add_output,
    add_quiet,
    run_keywords,
)


def add_cli(sub) -> None:
    from ..recovery.settings import FinetuneSettings
    from ..runs import DataSettings
    p = sub.add_parser(
        "finetune", help="recovery training of a pruned model that keeps every pruned weight at exactly zero",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a pruned model on windows of --data with its masks held fixed: the gradients, the AdamW\n"
                    "updates and the forward all cut to the mask, so the pruned entries stay exactly 0 during and\n"
                    "after training (--mode masked: the kept weights of every prunable layer; --mode lora: low-rank\n"
                    "adapters whose update is (B·A) ⊙ M, merged at the end). The masks come from --model's masks/\n"
                    "(a neuroal-jax prune output) or, with --mask-from-zeros, from its zero weights.\n\n"
                    "Warm-up + cosine learning rate, global-norm clipping, --accumulate micro-batches per step,\n"
                    "every block rematerialised in the backward pass; perplexity on --eval before and after.",
        epilog="examples:\n"
               "  neuroal-jax finetune --model runs/smol-neuroal --data pydoc --steps 200 --seqlen 256 \\\n"
               "      --eval pydoc --out runs/smol-neuroal-ft\n"
               "  neuroal-jax finetune --model runs/smol-neuroal --data pydoc --mode lora --lora-rank 16 ...\n"
               "  neuroal-jax finetune --model some/hf-folder --mask-from-zeros --data text:corpus.txt ...\n\n"
               "outputs: --out holds the trained model (Hugging Face checkpoint, --save-format), masks/,\n"
               "report.json and plots/loss.png, written atomically. While it runs, .<out>.partial/ keeps an\n"
               "orbax checkpoint every --save-every steps; after Ctrl-C or a kill, --resume continues from it\n"
               "(same settings and inputs, checked). --force replaces only an earlier output of neuroal-jax.")
    add_model(p, f"a neuroal-jax prune output folder, or with --mask-from-zeros {MODEL_HELP}")
    p.add_argument("--data", required=True, help="training text: the same specs as --calib (c4, pydoc, text:PATH, "
                                                 "tokens:PATH.npy, ...)")
    add_output(p, resume="continue the interrupted run of --out from its last checkpoint (same settings and inputs)")
    p.add_argument("--mask-from-zeros", action="store_true",
                   help="take the masks from the model's zero weights (for a model without masks/)")
    p.add_argument("--allow-mask-mismatch", action="store_true",
                   help="train with masks/ even where they disagree with the model's zero weights (a pruned entry "
                        "with a non-zero weight is set to 0, a kept zero may train); by default that is an error")
    g = p.add_argument_group("data", "Training: steps × accumulate × batch-size windows of SEQLEN tokens at random "
                                     "(--seed) starts in --data's training text or 1-D tokens file, or the first rows "
                                     "of a 2-D tokens file [n, SEQLEN]. " + EVAL_WINDOWS_HELP)
    DataSettings.add_flags(g, only=("seqlen",))
    add_evaluation(g)
    add_quiet(g)
    add_dtype(g, "the trained weights' master copy and the optimizer state")
    FinetuneSettings.add_flags(p.add_argument_group("training"))
    p.set_defaults(func=run)


def run(args) -> int:
    from ..recovery.run import finetune
    from ..recovery.settings import FinetuneSettings
    result = finetune(args.model, data=args.data, dtype=args.dtype, mask_from_zeros=args.mask_from_zeros,
                      allow_mask_mismatch=args.allow_mask_mismatch, resume=args.resume,
                      **run_keywords(args, ("seqlen",)), **FinetuneSettings.given_in(args))
    print(format_summary(result.report))
    print(f"\nwrote {result.out} (Hugging Face checkpoint, masks/, report.json, plots/loss.png)")
    return 0


def format_summary(report: dict) -> str:
    losses = report["loss_curve"]
    lines = [f"model {report['model']}  mode {report['mode']}  {len(losses)} steps  {report['tokens']:,} tokens  "
             f"{report['train_seconds']:.1f} s ({report['tokens_per_second']:,.0f} tokens/s)",
             f"loss {losses[0]:.4f} -> {losses[-1]:.4f}",
             f"sparsity before {report['sparsity_before']:.4f}  after {report['sparsity_after']:.4f}"]
    for spec, before in report["perplexity_before"].items():
        lines.append(f"perplexity {spec}: {before:.4f} -> {report['perplexity_after'][spec]:.4f}")
    return "\n".join(lines)
