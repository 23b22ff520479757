"""`neuroal-jax eval-ppl` and `eval-zeroshot`: perplexity (`neuroal_jax.evaluation.perplexity`) and lm-eval's 0-shot
accuracy (`neuroal_jax.evaluation.zeroshot`) of a model."""
from __future__ import annotations

import time

from .common import add_dtype, add_model, add_quiet

JSON_HELP = "also write the result as JSON (an existing file is replaced only if neuroal-jax wrote it)"


def add_cli(sub) -> None:
    from ..evaluation.zeroshot import PAPER_TASKS
    p = sub.add_parser("eval-ppl", help="perplexity of a model on a dataset (reference protocol)",
                       description="Tokenize the test text as one sequence, cut it into non-overlapping "
                                   "windows of --seqlen tokens and report exp(mean next-token NLL). A tokens "
                                   "file's rows are sequences too: each is cut into windows; a sequence's last "
                                   "< --seqlen tokens are not scored. Token ids must lie in [0, vocab_size).")
    from ..evaluation.data import SPEC_HELP
    from ..runs import DataSettings, EvalSettings
    add_model(p)
    p.add_argument("--dataset", default="pydoc", help=f"test set: {SPEC_HELP} (default: pydoc held-out text)")
    DataSettings.add_flags(p, only=("seqlen", "batch_size"))
    EvalSettings.add_flags(p, only=("eval_nsamples",))
    add_dtype(p, "the perplexity's sums")
    p.add_argument("--json", metavar="PATH", help=JSON_HELP)
    add_quiet(p)
    p.set_defaults(func=eval_ppl)

    p = sub.add_parser(
        "eval-zeroshot", help="zero-shot accuracy (0-shot acc) of an exported model with lm-eval",
        description="Run lm-eval 0-shot (acc) on a Hugging Face folder written by `neuroal-jax export` "
                    f"(or a Hub id). Default tasks: {','.join(PAPER_TASKS)} (Hugging Face Hub). Offline: "
                    "--tasks pydoc_next_sentence (shipped), or your YAML tasks with --tasks-dir.")
    add_model(p, "exported Hugging Face folder or Hub id")
    p.add_argument("--tasks", default=None, help=f"comma-separated lm-eval tasks (default: {','.join(PAPER_TASKS)})")
    p.add_argument("--tasks-dir", default=None, metavar="DIR", help="extra folder of lm-eval YAML tasks")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N documents per task")
    p.add_argument("--batch-size", type=int, default=8, help="lm-eval's batch size (default: 8)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--json", metavar="PATH", help=JSON_HELP)
    p.set_defaults(func=eval_zeroshot)


def eval_ppl(args) -> int:
    from converters import load_model

    from ..evaluation.data import eval_windows, parse_spec
    from ..evaluation.perplexity import perplexity
    from ..outputs.files import check_json_out, write_result_json
    from ..runs import DataSettings, EvalSettings, check_dtype

    dtype = check_dtype(args.dtype)
    spec = parse_spec(args.dataset)
    data = DataSettings.from_dict(DataSettings.given_in(args), "eval-ppl")
    evaluation = EvalSettings.from_dict(EvalSettings.given_in(args), "eval-ppl")
    check_json_out(args.json)
    model = load_model(args.model, dtype=dtype)
    seqlen = data.for_model(model.config).seqlen
    windows = eval_windows(spec, model.tokenizer, seqlen, evaluation.eval_nsamples, model.config.vocab_size)
    t0 = time.perf_counter()
    ppl = perplexity(model.config, model.params, windows, batch_size=data.batch_size, progress=not args.quiet)
    result = {"model": args.model, "dataset": args.dataset, "seqlen": seqlen, "windows": int(len(windows)),
              "perplexity": ppl, "seconds": round(time.perf_counter() - t0, 3)}
    print(f"{args.model}  {args.dataset}  {len(windows)} × {seqlen} tokens  perplexity {ppl:.4f}")
    if args.json:
        write_result_json(args.json, result)
    return 0


def eval_zeroshot(args) -> int:
    from ..evaluation.zeroshot import format_table, run_zeroshot
    from ..outputs.files import check_json_out, write_result_json
    check_json_out(args.json)
    t0 = time.perf_counter()
    summary = run_zeroshot(args.model, tasks=args.tasks, tasks_dir=args.tasks_dir, batch_size=args.batch_size,
                           limit=args.limit, device=args.device)
    print(f"{args.model}  0-shot lm-eval" + (f"  (first {args.limit} documents per task)" if args.limit else ""))
    print(format_table(summary))
    if args.json:
        write_result_json(args.json, {"model": args.model, "limit": args.limit, "num_fewshot": 0, "results": summary,
                                       "seconds": round(time.perf_counter() - t0, 3)})
    return 0
