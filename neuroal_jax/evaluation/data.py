"""Calibration windows and perplexity test sets (docs/algorithm.md §1 and §8).

Dataset specs:
  c4, wikitext2, ptb    Hugging Face Hub sets, exactly as the reference builds them (need the Hub)
  pydoc                 the standard library's `pydoc_data.topics`, split into calibration/held-out text
  text:PATH             a local text file, or a folder of *.txt files (sorted, joined by blank lines)
  tokens:PATH.npy       token ids (integers in [0, vocab_size)): a 1-D stream, or [n, L] rows

How windows are made (nothing is dropped without being said here and in the CLI's --help):
  calibration   from text or a 1-D stream: `nsamples` windows of `seqlen` tokens at random starts (seeded);
                from [n, L] rows: the first `nsamples` rows, which must have exactly L = seqlen tokens
  evaluation    the text, or each row of a tokens file, is one sequence cut into non-overlapping windows of
                `seqlen` tokens (the perplexity protocol); a sequence's last < seqlen tokens are not scored
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MissingDependency, UsageError

HUB_SETS = ("c4", "wikitext2", "ptb")
LOCAL_SETS = ("pydoc",)
PREFIXES = ("text:", "tokens:")
#: What a dataset spec may be (the help of every flag that takes one).
SPEC_HELP = "c4 | wikitext2 | ptb (Hub), pydoc (offline), text:PATH, tokens:PATH.npy"
#: One topic in this many goes to the held-out split of `pydoc` (sorted topic names, index % 5 == 4).
PYDOC_HOLDOUT_EVERY = 5


@dataclass(frozen=True)
class DatasetSpec:
    kind: str  # c4 | wikitext2 | ptb | pydoc | text | tokens
    path: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}" if self.path else self.kind

    @property
    def short(self) -> str:
        """The name for tables: the kind and the file's own name (tokens:calib.npy)."""
        return f"{self.kind}:{Path(self.path).name}" if self.path else self.kind

    def holds_rows(self) -> bool:
        """A tokens file of [n, L] rows: calibration takes its first rows, whatever the seed."""
        if self.kind != "tokens":
            return False
        try:
            return np.load(self.path, mmap_mode="r", allow_pickle=False).ndim == 2
        except (ValueError, OSError):
            return False  # not a .npy file: npy_tokens says so when it is read


def short_name(spec: str) -> str:
    """`DatasetSpec.short` of a spec string: text:/a/b/c.txt -> text:c.txt (no file is read)."""
    prefix = next((p for p in PREFIXES if spec.startswith(p) and len(spec) > len(p)), None)
    return DatasetSpec(prefix[:-1], spec[len(prefix):]).short if prefix else spec


def parse_spec(spec: str) -> DatasetSpec:
    if spec in HUB_SETS or spec in LOCAL_SETS:
        return DatasetSpec(spec)
    for prefix in PREFIXES:
        if spec.startswith(prefix) and len(spec) > len(prefix):
            path = spec[len(prefix):]
            if not Path(path).exists():
                raise FileNotFoundError(f"dataset {spec!r}: {path} does not exist")
            if prefix == "tokens:" and not path.endswith(".npy"):
                raise UsageError(f"dataset {spec!r}: tokens: expects a .npy file of token ids")
            return DatasetSpec(prefix[:-1], path)
    raise UsageError(f"unknown dataset spec {spec!r}; valid: {', '.join(HUB_SETS + LOCAL_SETS)}, "
                     "text:PATH (file or folder of .txt), tokens:PATH.npy")


# ---------------------------------------------------------------- raw text

def pydoc_text(split: str) -> str:
    """Deterministic calibration ("train") / held-out ("test") text from `pydoc_data.topics`."""
    from pydoc_data.topics import topics
    names = sorted(topics)
    held = [i % PYDOC_HOLDOUT_EVERY == PYDOC_HOLDOUT_EVERY - 1 for i in range(len(names))]
    keep = [n for n, h in zip(names, held) if h == (split == "test")]
    return "\n\n".join(topics[n].strip() for n in keep)


def local_text(path: str) -> str:
    p = Path(path)
    files = sorted(p.rglob("*.txt")) if p.is_dir() else [p]
    if not files:
        raise UsageError(f"text:{path}: the folder holds no .txt files")
    return "\n\n".join(read_utf8(f, f"text:{path}") for f in files)


def read_utf8(file: Path, spec: str) -> str:
    """The text of `file`; a ValueError naming the file and the byte offset when it is not UTF-8 text (a byte that
    does not decode, or a NUL byte, which text never holds)."""
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{spec}: {file} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start} does "
                         "not decode); convert it to UTF-8, or give token ids with tokens:PATH.npy") from None
    if (nul := raw.find(b"\0")) >= 0:
        raise UsageError(f"{spec}: {file} is binary, not text (a NUL byte at offset {nul}); give a text file, or "
                         "token ids with tokens:PATH.npy")
    return text


def _hub(loader, name: str):
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise MissingDependency(f"dataset {name!r} needs the `datasets` package: "
                                "pip install 'neuroal-jax[data]'") from None
    try:
        return loader()
    except Exception as e:
        raise ConnectionError(
            f"dataset {name!r} comes from the Hugging Face Hub, which could not be reached "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "offline, use pydoc, text:PATH or tokens:PATH.npy") from None


def hub_documents(name: str, split: str) -> list[str] | str:
    """A list of documents (C4 train) or one joined text (everything else), as the reference does."""
    from datasets import load_dataset as ld
    c4_files = {"train": "en/c4-train.00000-of-01024.json.gz",
                "validation": "en/c4-validation.00000-of-00008.json.gz"}
    if name == "c4":
        split = "train" if split == "train" else "validation"
        data = _hub(lambda: ld("allenai/c4", data_files={split: c4_files[split]}, split=split), name)
        return list(data["text"]) if split == "train" else " ".join(data[:1100]["text"])
    if name == "wikitext2":
        data = _hub(lambda: ld("wikitext", "wikitext-2-raw-v1", split=split), name)
        return "\n\n".join(data["text"])
    data = _hub(lambda: ld("ptb_text_only", "penn_treebank", split=split), name)
    return " ".join(data["sentence"])


def encode(tokenizer, text: str) -> np.ndarray:
    """Token ids of `text` as one sequence (the tokenizer's special tokens included, as the reference)."""
    if tokenizer is None:
        raise UsageError("this dataset needs a tokenizer, and the model has none; "
                         "give token ids instead with tokens:PATH.npy")
    return np.asarray(tokenizer(text, verbose=False)["input_ids"], dtype=np.int32)


def check_token_ids(ids: np.ndarray, vocab_size: int | None, source: str) -> np.ndarray:
    """`ids` unchanged, or a ValueError naming the first id outside [0, vocab_size)."""
    if vocab_size is None or ids.size == 0:
        return ids
    bad = (ids < 0) | (ids >= vocab_size)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise UsageError(f"{source}: token id {int(ids[where])} at index {list(where)} is outside the model's "
                         f"vocabulary [0, {vocab_size}) (vocab_size {vocab_size}); {int(bad.sum())} such ids")
    return ids


# ---------------------------------------------------------------- calibration

def _random_windows(ids: np.ndarray, nsamples: int, seqlen: int, seed: int, source: str,
                    role: str = "calibration") -> np.ndarray:
    if len(ids) - seqlen - 1 < 0:
        raise UsageError(f"{role} data {source} has {len(ids)} tokens, too short for windows of "
                         f"{seqlen} tokens; lower --seqlen or give more text")
    rng = random.Random(seed)
    starts = [rng.randint(0, len(ids) - seqlen - 1) for _ in range(nsamples)]
    return np.stack([ids[s:s + seqlen] for s in starts])


def _document_windows(docs: list[str], tokenizer, nsamples: int, seqlen: int, seed: int,
                      role: str = "calibration") -> np.ndarray:
    """Reference C4 sampler: pick random documents until one is longer than seqlen, then a random window."""
    rng, out = random.Random(seed), []
    for _ in range(nsamples):
        for _attempt in range(100_000):
            ids = encode(tokenizer, docs[rng.randint(0, len(docs) - 1)])
            if len(ids) > seqlen:
                break
        else:
            raise UsageError(f"no {role} document is longer than seqlen={seqlen}")
        start = rng.randint(0, len(ids) - seqlen - 1)
        out.append(ids[start:start + seqlen])
    return np.stack(out)


def npy_tokens(path: str, vocab_size: int | None = None) -> np.ndarray:
    """int32 token ids of a .npy file (1-D or 2-D integers, each in [0, vocab_size))."""
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise UsageError(f"tokens:{path} is not a .npy file (no NumPy header); write token ids with numpy.save")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UsageError(f"tokens:{path} is not a NumPy .npy array of token ids ({' '.join(str(e).split())})") from None
    if arr.ndim not in (1, 2) or not np.issubdtype(arr.dtype, np.integer):
        raise UsageError(f"tokens:{path} must hold integer token ids, 1-D or [n, L]; got {arr.dtype} {arr.shape}")
    return check_token_ids(arr, vocab_size, f"tokens:{path}").astype(np.int32)


def calibration_windows(spec: str | DatasetSpec, tokenizer, nsamples: int, seqlen: int,
                        seed: int = 0, vocab_size: int | None = None, role: str = "calibration",
                        count: str = "nsamples (--nsamples)") -> np.ndarray:
    """int32 [nsamples, seqlen] calibration windows (see the module docstring). `role` and `count` name the
    windows and their number in messages (finetune's training data: "training", "steps × ...")."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if nsamples < 1 or seqlen < 2:
        raise UsageError(f"need nsamples >= 1 and seqlen >= 2, got nsamples={nsamples}, seqlen={seqlen}")
    if spec.kind == "tokens":
        arr = npy_tokens(spec.path, vocab_size)
        if arr.ndim == 1:
            return _random_windows(arr, nsamples, seqlen, seed, str(spec), role)
        if arr.shape[1] != seqlen:
            raise UsageError(f"{spec} holds windows of {arr.shape[1]} tokens, but seqlen is {seqlen}: give rows of "
                             "exactly seqlen tokens, or a 1-D token stream to sample windows from")
        if arr.shape[0] < nsamples:
            raise UsageError(f"{role} data {spec} holds {arr.shape[0]} windows of {seqlen} tokens; {count} asks "
                             f"for {nsamples}")
        return arr[:nsamples]
    if spec.kind == "c4":
        windows = _document_windows(hub_documents("c4", "train"), tokenizer, nsamples, seqlen, seed, role)
    else:
        windows = _random_windows(encode(tokenizer, raw_text(spec, "train")), nsamples, seqlen, seed, str(spec),
                                  role)
    return check_token_ids(windows, vocab_size, f"{spec} (tokenized)")


def raw_text(spec: DatasetSpec, split: str) -> str:
    if spec.kind == "pydoc":
        return pydoc_text(split)
    if spec.kind == "text":
        return local_text(spec.path)
    return hub_documents(spec.kind, split)


# ---------------------------------------------------------------- evaluation

def cut_windows(sequences: np.ndarray, seqlen: int) -> np.ndarray:
    """[n, L] (or 1-D) sequences → [n × ⌊L / seqlen⌋, seqlen] non-overlapping windows, in order."""
    rows = np.atleast_2d(sequences)
    per_row = rows.shape[1] // seqlen
    return rows[:, :per_row * seqlen].reshape(rows.shape[0] * per_row, seqlen)


def eval_windows(spec: str | DatasetSpec, tokenizer, seqlen: int, max_windows: int | None = None,
                 vocab_size: int | None = None) -> np.ndarray:
    """int32 [n, seqlen]: each test sequence cut into non-overlapping windows (see the module docstring);
    the first `max_windows` of them when given."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if max_windows is not None and max_windows < 1:
        raise UsageError(f"the number of evaluation windows must be >= 1, got {max_windows}")
    if spec.kind == "tokens":
        sequences = npy_tokens(spec.path, vocab_size)
    else:
        sequences = encode(tokenizer, raw_text(spec, "test"))
        if spec.kind == "c4":
            sequences = sequences[:256 * seqlen]
        check_token_ids(sequences, vocab_size, f"{spec} (tokenized)")
    longest = sequences.shape[-1]
    if longest < seqlen:
        raise UsageError(f"evaluation data {spec} holds sequences of {longest} tokens, fewer than seqlen={seqlen}")
    ids = cut_windows(sequences, seqlen)
    if len(ids) == 0:
        raise UsageError(f"evaluation data {spec} holds no sequence (shape {list(sequences.shape)}): it gives no "
                         f"window of {seqlen} tokens to evaluate")
    if max_windows is not None:
        if len(ids) < max_windows:
            raise UsageError(f"evaluation data {spec} gives only {len(ids)} windows of {seqlen} tokens; "
                             f"asked for {max_windows}")
        ids = ids[:max_windows]
    return ids
