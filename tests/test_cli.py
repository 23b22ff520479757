"""The `neuroal-jax` command line: commands end to end (in process) and bad input (as a subprocess)."""
from __future__ import annotations

import json

import pytest

from cli_run import assert_clean_error, run_cli_all
from neuroal_jax import cli
from neuroal_jax.cli.common import options_from_args

# ---------------------------------------------------------------- commands, in process

def test_eval_ppl(tiny_llama_dir, tiny_tokens, tmp_path, capsys):
    out = tmp_path / "ppl.json"
    rc = cli.main(["eval-ppl", "--model", str(tiny_llama_dir), "--dataset", f"tokens:{tiny_tokens}",
                   "--seqlen", "64", "--eval-nsamples", "4", "--json", str(out), "--quiet"])
    assert rc == 0
    assert "perplexity" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["windows"] == 4 and result["seqlen"] == 64 and result["perplexity"] > 1


def test_export(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "exported"
    assert cli.main(["export", "--model", str(tiny_llama_dir), "--out", str(out)]) == 0
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    assert cli.main(["export", "--model", str(tiny_llama_dir), "--out", str(out)]) == 2  # exists, no --force
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["export", "--model", str(tiny_llama_dir), "--out", str(out), "--force"]) == 0


def test_prune_end_to_end(tiny_llama_dir, tiny_tokens, tmp_path, capsys):
    out = tmp_path / "pruned"
    rc = cli.main(["prune", "--model", str(tiny_llama_dir), "--method", "wanda", "--sparsity", "0.5",
                   "--top-up", "owl", "--owl-m", "4", "--calib", f"tokens:{tiny_tokens}", "--nsamples", "8",
                   "--seqlen", "64", "--eval", f"tokens:{tiny_tokens}", "--eval-nsamples", "4", "--out", str(out),
                   "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "achieved 0." in printed and "perplexity" in printed and f"tokens:{tiny_tokens}" in printed
    for name in ("config.json", "model.safetensors", "report.json", "masks", "plots/block_sparsity.png",
                 "plots/owl_outlier_ratios.png"):
        assert (out / name).exists(), name
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == str(tiny_llama_dir) and report["top_up"] == "owl"
    assert report["options"] == {"owl_m": 4.0, "owl_lambda": 0.08} and report["owl_m"] == 4.0
    assert report["sparsity"] == pytest.approx(0.5, abs=0.02)


def test_help_texts(capsys):
    for argv in (["--help"], ["prune", "--help"], ["eval-ppl", "--help"], ["export", "--help"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--top-up", "--structure", "--owl-lambda", "--alpha-epsilon", "--eval-nsamples", "uniform", "owl",
                 "--dtype", "--stream", "--resume", "--distributed", "--devices", "--model-parallel"):
        assert flag in text, flag


# ---------------------------------------------------------------- top-up options from their dataclasses

def test_options_of_the_chosen_top_up_only():
    parser = cli.build_parser()
    base = ["prune", "--model", "m", "--method", "wanda", "--sparsity", "0.7", "--out", "o"]
    args = parser.parse_args([*base, "--top-up", "neuroal", "--neuroal-step", "block", "--lambdas-block", "0.01,0.05",
                              "--option", "lambda_chunk=2"])
    assert options_from_args(args) == {"neuroal_step": "block", "lambdas_block": "0.01,0.05", "lambda_chunk": 2}
    assert options_from_args(parser.parse_args([*base, "--top-up", "owl"])) == {}
    with pytest.raises(ValueError, match="--owl-m is an option of --top-up owl, not of --top-up uniform"):
        options_from_args(parser.parse_args([*base, "--top-up", "uniform", "--owl-m", "3"]))


# ---------------------------------------------------------------- bad input, as a subprocess

@pytest.fixture(scope="module")
def unknown_family_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("weird") / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "no_such_family", "hidden_size": 8}))
    return d


def prune_args(model, tokens, tmp, *extra):
    return ["prune", "--model", str(model), "--method", "wanda", "--sparsity", "0.5", "--top-up", "uniform",
            "--calib", f"tokens:{tokens}", "--nsamples", "4", "--seqlen", "64", "--out", str(tmp / "out"),
            "--quiet", *extra]


def test_bad_inputs_give_one_line_errors(tiny_llama_dir, tiny_tokens, unknown_family_dir, tmp_path):
    """As a subprocess: exit 2, one `neuroal-jax: error:` line naming the bad value, no traceback."""
    cases = [
        (["eval-ppl", "--model", str(tiny_llama_dir), "--dataset", "nosuchset"], ["'nosuchset'"]),
        (["eval-ppl", "--model", str(tiny_llama_dir), "--dataset", f"tokens:{tiny_tokens}", "--seqlen", "512"],
         ["seqlen 512", "256"]),
        (prune_args(tiny_llama_dir, tiny_tokens, tmp_path, "--sparsity", "1.5"), ["1.5"]),
        (prune_args("/no/such/model", tiny_tokens, tmp_path), ["/no/such/model"]),
        (prune_args(unknown_family_dir, tiny_tokens, tmp_path), ["no_such_family"]),
    ]
    for proc, (_, names) in zip(run_cli_all(*(argv for argv, _ in cases)), cases):
        assert_clean_error(proc, *names)
    assert not (tmp_path / "out").exists()


def test_a_bad_model_is_named_before_the_output_is_locked(tiny_tokens, unknown_family_dir, tmp_path):
    """The model spec is checked before the output's lock: a run on an output that another run holds still
    names its own bad model (concurrent bad runs on one output once reported the lock instead)."""
    from neuroal_jax.outputs.files import output_lock

    with output_lock(tmp_path / "out"):
        runs = run_cli_all(prune_args(unknown_family_dir, tiny_tokens, tmp_path),
                           prune_args("/no/such/model", tiny_tokens, tmp_path))
    assert_clean_error(runs[0], "no_such_family")
    assert_clean_error(runs[1], "/no/such/model")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, names", [
    (("--seqlen", "4096"), ["seqlen 4096", "256"]),
    (("--calib", "nosuchcalib"), ["'nosuchcalib'"]),
    (("--method", "nosuchmethod"), ["nosuchmethod", "wanda"]),
    (("--top-up", "nosuchtopup"), ["nosuchtopup", "uniform"]),
    (("--structure", "4:2"), ["4:2"]),
    (("--structure", "2:4", "--sparsity", "0.6"), ["2:4", "0.6"]),
    (("--top-up", "neuroal", "--lambdas-block", "0.1,x"), ["0.1,x"]),
    (("--dtype", "float16"), ["float16", "bfloat16"]),
    (("--top-up", "neuroal", "--devices", "3"), ["devices must be between 1 and the 1 available", "3"]),
    (("--top-up", "neuroal", "--devices", "1", "--model-parallel", "2"), ["model_parallel must divide"]),
])
def test_bad_prune_inputs_in_process(tiny_llama_dir, tiny_tokens, tmp_path, capsys, extra, names):
    try:
        rc = cli.main(prune_args(tiny_llama_dir, tiny_tokens, tmp_path, *extra))
    except SystemExit as e:  # argparse
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("neuroal-jax: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(n in lines[0] for n in names), lines[0]
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- what is a bad input, and what is a bug

def test_a_bug_in_our_code_keeps_its_traceback(tiny_llama_dir, tiny_tokens, monkeypatch):
    """A KeyError (or any exception that is not a UsageError or an OSError) raised inside our code is not reported
    as a bad input: it propagates with its traceback (exit status 1 from the command line)."""
    import neuroal_jax.evaluation.perplexity as perplexity

    def broken(*args, **kwargs):
        raise KeyError("a key our own code forgot")
    monkeypatch.setattr(perplexity, "perplexity", broken)
    with pytest.raises(KeyError, match="forgot"):
        cli.main(["eval-ppl", "--model", str(tiny_llama_dir), "--dataset", f"tokens:{tiny_tokens}", "--seqlen", "64",
                  "--quiet"])


def test_a_missing_optional_package_is_one_line(tiny_llama_dir, tiny_tokens, monkeypatch, capsys):
    import neuroal_jax.evaluation.perplexity as perplexity

    def needs_it(*args, **kwargs):
        import nosuchpackage_for_the_test  # noqa: F401
    monkeypatch.setattr(perplexity, "perplexity", needs_it)
    assert cli.main(["eval-ppl", "--model", str(tiny_llama_dir), "--dataset", f"tokens:{tiny_tokens}", "--seqlen",
                     "64", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == ("neuroal-jax: error: this needs the Python package "
                                               "'nosuchpackage_for_the_test', which is not installed "
                                               "(pip install nosuchpackage_for_the_test)")


def test_every_command_shares_its_flags(capsys):
    """The same flag has the same default, type, choices and stated default in every command that takes it (its
    help may name what the command uses it for)."""
    import argparse
    import re
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    seen: dict[str, tuple] = {}
    for name, sub in commands.items():
        for action in sub._actions:
            for flag in action.option_strings:
                if flag in ("-h", "--help", "--batch-size"):
                    continue  # finetune's --batch-size is a training option (windows per micro-batch)
                stated = re.findall(r"\(default: [^)]*\)", action.help or "")
                key = (action.choices, stated or [repr(action.default)])  # an option flag's default is None
                assert seen.setdefault(flag, key) == key, (name, flag, key, seen[flag])


def test_run_settings_are_written_once():
    """Every field of the run settings is a flag of prune, with the same help in every command that has it (not
    finetune's --batch-size and --seed: training options), and a keyword, with the field's default, of the entry
    point of every command that has the flag."""
    import argparse
    import dataclasses
    import inspect

    import neuroal_jax as nj
    from neuroal_jax.runs import DataSettings, EvalSettings, OutputSettings
    commands = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for cls in (DataSettings, EvalSettings, OutputSettings):
        for f in dataclasses.fields(cls):
            helps = {name: a.help for name, sub in commands.items() for a in sub._actions
                     if a.dest == f"option_{f.name}" and not (name == "finetune" and f.name in ("batch_size", "seed"))}
            assert "prune" in helps and len(set(helps.values())) == 1, (f.name, helps)
            for entry in (nj.prune, nj.compare, nj.sweep, nj.finetune):
                keywords = inspect.signature(entry).parameters
                assert (f.name in keywords) >= (entry.__name__ in helps), (entry.__name__, f.name)
                if f.name in keywords:
                    assert keywords[f.name].default == f.default, (entry.__name__, f.name)
