#!/usr/bin/env python
"""Build the offline lm-eval task `pydoc_next_sentence` from held-out pydoc text.

Each example shows a context of a few consecutive prose sentences from `pydoc_text("test")`
(the held-out split of the standard library's `pydoc_data.topics`) and four candidate
continuations: the true next sentence and three distractors. Distractors are prose sentences
from *other* sections of the held-out text, chosen among those closest in length to the true
sentence, by a `random.Random(seed)`; the answer's position is drawn from the same generator.

Everything is deterministic: the same Python standard library and seed give byte-identical
files. Output (in --out):
  pydoc_next_sentence.jsonl   one {"id", "section", "context", "choices", "label"} per line
  pydoc_next_sentence.yaml    the lm-eval task (multiple_choice, acc / acc_norm)

The YAML names the JSONL relative to its own folder; lm-eval resolves `data_files` against the
working directory, so `neuroal_jax.evaluation.zeroshot.run_zeroshot` rewrites it to an absolute path at run time.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from pathlib import Path

TASK = "pydoc_next_sentence"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "neuroal_jax" / "evaluation" / "tasks" / TASK
DEFAULTS = dict(seed=1234, context_sentences=3, min_context=2, max_examples=300, pool=16)
#: Answers and distractors: clean sentences of this many characters; shorter pieces cut a context.
MIN_CHARS, MAX_CHARS, MIN_CONTEXT_CHARS = 25, 320, 12
START_CHARS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ\"“*")
#: Abbreviations after which a period does not end a sentence.
NO_BREAK = ("e.g.", "i.e.", "etc.", "cf.", "vs.")
SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][)”]))\s+(?=[A-Z\"“*(])")


# ---------------------------------------------------------------- text → sentences

def _is_heading(lines: list[str]) -> bool:
    """True for a reST-style heading: a title line over a line of one repeated '*', '=', '-', ... ."""
    return len(lines) == 2 and bool(lines[1]) and len(set(lines[1])) == 1 and lines[1][0] in "*=-~^"


def _join_lines(lines: list[str]) -> str:
    """Join wrapped lines into one string, undoing hyphenation at line ends ("non-\\nnumeric")."""
    out = ""
    for line in (ln.strip() for ln in lines):
        out = out + line if out.endswith("-") or not out else f"{out} {line}"
    return re.sub(r"\s+", " ", out)


def _is_prose(lines: list[str]) -> bool:
    """Unindented paragraphs are prose; indented ones (grammar, code, notes) only when they read as
    sentences: no grammar rule or prompt, starting with a capital and ending with a period."""
    if not lines[0][:1].isspace():
        return not lines[0].startswith(("+-", "|"))
    text = _join_lines(lines)
    return "::=" not in text and ">>>" not in text and text[:1].isupper() and text.endswith(".")


def prose_runs(text: str) -> list[tuple[int, str]]:
    """(section index, joined prose) for every run of consecutive prose paragraphs.

    A run is broken by headings, code/grammar blocks and paragraphs that end with ':' (they
    introduce a block). Every heading starts a new section.
    """
    runs, current, section = [], [], 0
    for para in re.split(r"\n[ \t]*\n", text):
        lines = [ln.rstrip() for ln in para.strip("\n").split("\n")]
        if not lines[0].strip():
            continue
        heading = _is_heading(lines)
        prose = not heading and _is_prose(lines)
        if prose:
            current.append(_join_lines(lines))
        if not prose or current[-1].endswith(":"):
            if current:
                runs.append((section, " ".join(current)))
            current = []
        section += heading
    if current:
        runs.append((section, " ".join(current)))
    return runs


def _tidy(sentence: str) -> str:
    """Drop list markers: a leading "* " or "3. ", a trailing footnote/list number " 2."."""
    sentence = re.sub(r"^(?:\* |\d+\. )", "", sentence.strip())
    return re.sub(r" \d+\.$", "", sentence)


def split_sentences(prose: str) -> list[str]:
    """Split prose after '.', '!' or '?' (optionally closing a bracket or quote) followed by a space
    and a capital, an opening quote or '*'; "e.g." and "i.e." never end a sentence."""
    out = []
    for piece in SENTENCE_END.split(prose):
        if out and out[-1].endswith(NO_BREAK[:2]):
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return [t for t in map(_tidy, out) if t]


def is_clean(sentence: str) -> bool:
    """A self-contained prose sentence of moderate length with balanced quotes and brackets."""
    return (MIN_CHARS <= len(sentence) <= MAX_CHARS and sentence[0] in START_CHARS
            and sentence.endswith(".") and not sentence.endswith(NO_BREAK)
            and sentence.count('"') % 2 == 0 and sentence.count("(") == sentence.count(")")
            and sentence.count("“") == sentence.count("”") and not sentence.startswith("See also"))


def sentence_streams(text: str) -> list[tuple[int, list[str], list[bool]]]:
    """(section, consecutive sentences, which of them are clean) per prose run; a run is cut at
    fragments too short to be sentences."""
    streams = []
    for section, prose in prose_runs(text):
        stream = []
        for sentence in split_sentences(prose) + [""]:
            if len(sentence) >= MIN_CONTEXT_CHARS:
                stream.append(sentence)
            elif stream:
                streams.append((section, stream, [is_clean(s) for s in stream]))
                stream = []
    return streams


# ---------------------------------------------------------------- examples

def _distractors(answer: str, section: int, pool: list[tuple[int, str]], context: str,
                 rng: random.Random, k: int, n: int = 3) -> list[str]:
    """n sentences from other sections, drawn from the k closest in length to `answer`."""
    candidates = sorted({s for sec, s in pool if sec != section and s != answer and s not in context},
                        key=lambda s: (abs(len(s) - len(answer)), s))
    return rng.sample(candidates[:max(k, n)], n)


def build_examples(text: str, seed: int = DEFAULTS["seed"], context_sentences: int = DEFAULTS["context_sentences"],
                   min_context: int = DEFAULTS["min_context"], max_examples: int = DEFAULTS["max_examples"],
                   pool: int = DEFAULTS["pool"]) -> list[dict]:
    """Next-sentence multiple-choice examples (4 choices) from `text`, deterministically."""
    streams = sentence_streams(text)
    clean = [(sec, s) for sec, stream, ok in streams for s, c in zip(stream, ok) if c]
    targets = [(sec, stream[max(0, i - context_sentences):i], stream[i])
               for sec, stream, ok in streams for i in range(min_context, len(stream)) if ok[i]]
    rng = random.Random(seed)
    if len(targets) > max_examples:
        keep = sorted(rng.sample(range(len(targets)), max_examples))
        targets = [targets[i] for i in keep]
    examples = []
    for idx, (sec, context, answer) in enumerate(targets):
        joined = " ".join(context)
        choices = _distractors(answer, sec, clean, joined, rng, pool)
        label = rng.randrange(len(choices) + 1)
        choices.insert(label, answer)
        examples.append({"id": idx, "section": sec, "context": joined, "choices": choices, "label": label})
    return examples


# ---------------------------------------------------------------- files

def source_text() -> str:
    """The held-out pydoc text (imports the project from this checkout if it is not installed)."""
    try:
        from neuroal_jax.evaluation.data import pydoc_text
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from neuroal_jax.evaluation.data import pydoc_text
    return pydoc_text("test")


def task_yaml(jsonl_name: str, source_sha256: str, n: int, seed: int) -> str:
    """The lm-eval task config (written as text, so its bytes are stable)."""
    return f"""\
# Generated by scripts/make_pydoc_mc_task.py (seed {seed}); do not edit by hand.
# {n} next-sentence questions from neuroal_jax.evaluation.data.pydoc_text("test"), sha256 {source_sha256}.
# data_files is relative to this folder; neuroal_jax.evaluation.zeroshot.run_zeroshot makes it absolute at run time.
task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {jsonl_name}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: choices
doc_to_target: label
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def render(text: str, **kwargs) -> dict[str, bytes]:
    """File name → bytes of the task folder built from `text`."""
    examples = build_examples(text, **kwargs)
    jsonl = "".join(json.dumps(ex, ensure_ascii=False, sort_keys=True) + "\n" for ex in examples)
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    seed = kwargs.get("seed", DEFAULTS["seed"])
    return {f"{TASK}.jsonl": jsonl.encode("utf-8"),
            f"{TASK}.yaml": task_yaml(f"{TASK}.jsonl", sha, len(examples), seed).encode("utf-8")}


def write(files: dict[str, bytes], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(out / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="random seed (default: %(default)s)")
    parser.add_argument("--context-sentences", type=int, default=DEFAULTS["context_sentences"],
                        help="at most this many context sentences (default: %(default)s)")
    parser.add_argument("--min-context", type=int, default=DEFAULTS["min_context"],
                        help="at least this many context sentences (default: %(default)s)")
    parser.add_argument("--max-examples", type=int, default=DEFAULTS["max_examples"],
                        help="keep a seeded subset of at most N examples (default: %(default)s)")
    parser.add_argument("--pool", type=int, default=DEFAULTS["pool"],
                        help="draw distractors among the N sentences closest in length (default: %(default)s)")
    args = parser.parse_args(argv)
    files = render(source_text(), seed=args.seed, context_sentences=args.context_sentences,
                   min_context=args.min_context, max_examples=args.max_examples, pool=args.pool)
    write(files, args.out)
    n = files[f"{TASK}.jsonl"].count(b"\n")
    print(f"wrote {n} examples to {args.out} ({sum(map(len, files.values()))} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
