"""Zero-shot accuracy through lm-eval (docs/algorithm.md §8), on a model exported as a Hugging Face folder.

The paper's tasks (`PAPER_TASKS`) download their data from the Hugging Face Hub. Offline, use the
task shipped with this package, `pydoc_next_sentence` (built by scripts/make_pydoc_mc_task.py from
held-out pydoc text: pick the true next sentence among four), or your own lm-eval YAML tasks given
with `tasks_dir`.

    neuroal-jax export --model smollm2-135m --out smollm2-hf
    neuroal-jax eval-zeroshot --model smollm2-hf --tasks pydoc_next_sentence
"""
from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from converters.load import TOKENIZER_FILES, looks_like_path

from ..errors import MissingDependency, UsageError

#: The paper's zero-shot suite (Hugging Face Hub datasets); the default.
PAPER_TASKS = ("rte", "winogrande", "boolq", "hellaswag", "arc_easy", "arc_challenge", "openbookqa")
#: Task folder shipped as package data; always on lm-eval's include path.
TASKS_DIR = Path(__file__).resolve().parent / "tasks"
#: Tasks that run without the Hub.
OFFLINE_TASKS = ("pydoc_next_sentence",)
INSTALL_HINT = "pip install 'neuroal-jax[eval]'"


# ---------------------------------------------------------------- checks

def _require_lm_eval():
    """(lm_eval, TaskManager, HFLM), or ImportError with the install command."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise MissingDependency(f"zero-shot evaluation needs lm-eval with its Hugging Face backend "
                          f"(torch, accelerate): {INSTALL_HINT} (missing: {e.name or e})") from None
    return lm_eval, TaskManager, HFLM


def parse_tasks(tasks: str | Sequence[str] | None) -> list[str]:
    """Task names from "t1,t2" or a sequence; None gives the paper's suite."""
    if tasks is None:
        return list(PAPER_TASKS)
    names = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise UsageError("no task given; e.g. --tasks pydoc_next_sentence")
    return list(dict.fromkeys(names))


def check_model(model: str) -> bool:
    """Validate --model; True for a local Hugging Face folder, False for a Hub id."""
    path = Path(model).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            raise UsageError(f"{model} is a GGUF file; lm-eval needs a Hugging Face folder: "
                             f"neuroal-jax export --model {model} --out DIR, then --model DIR")
        if not path.is_dir() or not (path / "config.json").is_file():
            raise UsageError(f"{model} is not a Hugging Face model folder (no config.json); "
                             "write one with `neuroal-jax export --model ... --out DIR`")
        if not any((path / f).is_file() for f in TOKENIZER_FILES):
            raise UsageError(f"{model} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); lm-eval needs one: "
                             "export from a model that has a tokenizer, or save one into the folder")
        return True
    if looks_like_path(model):
        raise FileNotFoundError(f"model folder {model} does not exist")
    return False


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    return ", ".join(dict.fromkeys(close + list(OFFLINE_TASKS) + list(PAPER_TASKS[:3])))


# ---------------------------------------------------------------- tasks

def _absolute_data_files(value, base: Path):
    """`data_files` (str, list or split → str/list) with paths relative to `base` made absolute."""
    if isinstance(value, dict):
        return {k: _absolute_data_files(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_absolute_data_files(v, base) for v in value]
    if isinstance(value, str) and not Path(value).is_absolute() and "://" not in value:
        return str((base / value).resolve())
    return value


def materialise_tasks(src: Path, dst: Path) -> Path:
    """Copy the task YAMLs under `src` to `dst`, making relative `data_files` absolute.

    lm-eval 0.4.13 passes `dataset_kwargs.data_files` to `datasets.load_dataset`, which resolves
    relative paths against the working directory, not the YAML's folder.
    """
    import yaml

    for path in sorted(src.rglob("*.yaml")):
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        files = (cfg.get("dataset_kwargs") or {}).get("data_files")
        if files is not None:
            cfg["dataset_kwargs"]["data_files"] = _absolute_data_files(files, path.parent)
        out = dst / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return dst


def task_manager(task_names: Sequence[str], include: list[Path]):
    """A TaskManager that knows every requested task, or ValueError naming the unknown ones.

    Indexing lm-eval's ~15k built-in tasks takes tens of seconds, so local folders are tried first.
    """
    _, TaskManager, _ = _require_lm_eval()
    paths = [str(p) for p in include]
    local = TaskManager(include_path=paths, include_defaults=False)
    if all(t in local.all_tasks for t in task_names):
        return local
    full = TaskManager(include_path=paths)
    unknown = [t for t in task_names if t not in full.all_tasks]
    if unknown:
        raise UsageError(f"unknown lm-eval task(s) {', '.join(unknown)}; did you mean: "
                         f"{_suggest(unknown[0], full.all_tasks)}? (lm-eval has {len(full.all_tasks)} tasks; "
                         "offline, use pydoc_next_sentence or YAML tasks in --tasks-dir)")
    return full


def load_tasks(manager, task_names: Sequence[str]) -> list:
    """Instantiate the tasks (this reads or downloads their data); Hub failures → ConnectionError."""
    try:
        return list(manager.load(list(task_names))["tasks"].values())
    except Exception as e:  # datasets raises many types when the Hub is unreachable
        detail = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        hub = [t for t in task_names if t not in OFFLINE_TASKS]
        raise ConnectionError(
            f"could not load the data of task(s) {', '.join(task_names)} ({detail}). Tasks such as "
            f"{', '.join(hub or PAPER_TASKS[:2])} download their data from the Hugging Face Hub; offline, "
            "use the shipped task --tasks pydoc_next_sentence, or local YAML tasks (dataset_path: json) "
            "in --tasks-dir") from None


# ---------------------------------------------------------------- evaluation

def load_lm(model: str, batch_size: int, device: str):
    """lm-eval's HFLM on a local folder or Hub id, with load failures turned into clear errors."""
    _, _, HFLM = _require_lm_eval()
    local = check_model(model)
    try:
        return HFLM(pretrained=str(Path(model).expanduser()) if local else model,
                    batch_size=batch_size, device=device)
    except OSError as e:
        if local:
            raise UsageError(f"could not load the Hugging Face folder {model}: {e}") from None
        raise ConnectionError(f"{model!r} is not a local folder, and loading it as a Hugging Face Hub id "
                              f"failed ({str(e).splitlines()[0]}); give an exported folder "
                              "(neuroal-jax export --model ... --out DIR)") from None


def summarize(results: dict) -> dict[str, dict]:
    """{task: {"acc": .., "acc_stderr": .., "acc_norm": .., ..., "n": docs}} from lm-eval's results."""
    out = {}
    for task, row in results["results"].items():
        metrics = {}
        for key, value in row.items():
            if "," not in key:
                continue
            metric, filt = key.split(",", 1)
            name = metric if filt == "none" else f"{metric},{filt}"
            metrics[name] = float(value) if isinstance(value, (int, float)) else None
        n = results.get("n-samples", {}).get(task, {})
        metrics["n"] = n.get("effective")
        out[task] = metrics
    return out


def run_zeroshot(model_dir: str | os.PathLike, tasks: str | Sequence[str] | None = None,
                 tasks_dir: str | os.PathLike | None = None, batch_size: int = 8, limit: int | None = None,
                 device: str = "cpu") -> dict[str, dict]:
    """0-shot lm-eval on `model_dir` (an exported Hugging Face folder, or a Hub id).

    tasks: names or "t1,t2" (default: PAPER_TASKS, which need the Hub); the shipped offline task
    folder is always on the include path, `tasks_dir` adds yours (in those YAMLs, relative
    `data_files` resolve against the working directory). limit: only the first N documents per task.
    Returns {task: {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr", ..., "n"}}.
    """
    lm_eval, _, _ = _require_lm_eval()
    names, model = parse_tasks(tasks), os.fspath(model_dir)
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be >= 1, got {limit}")
    if tasks_dir is not None and not Path(tasks_dir).is_dir():
        raise FileNotFoundError(f"tasks folder {tasks_dir} does not exist")
    check_model(model)
    with tempfile.TemporaryDirectory(prefix="neuroal-tasks-") as tmp:
        include = [materialise_tasks(TASKS_DIR, Path(tmp))] + ([Path(tasks_dir)] if tasks_dir else [])
        manager = task_manager(names, include)
        task_objs = load_tasks(manager, names)
        lm = load_lm(model, batch_size, device)
        results = lm_eval.simple_evaluate(model=lm, tasks=task_objs, task_manager=manager, num_fewshot=0,
                                          limit=limit, log_samples=False, batch_size=batch_size, device=device)
    return summarize(results)


# ---------------------------------------------------------------- the table the command line prints

def format_table(summary: dict[str, dict]) -> str:
    """A plain-text table: task, documents, acc ± stderr, acc_norm."""
    def num(x):
        return f"{x:.4f}" if isinstance(x, float) else "-"

    rows = [("task", "n", "acc", "± stderr", "acc_norm")]
    rows += [(t, str(m.get("n") or "-"), num(m.get("acc")), num(m.get("acc_stderr")), num(m.get("acc_norm")))
             for t, m in summary.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
