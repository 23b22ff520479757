import random

import numpy as np
import pytest

from neuroal_jax.evaluation import data


def test_pydoc_split_is_deterministic_and_disjoint():
    train, test = data.pydoc_text("train"), data.pydoc_text("test")
    assert train == data.pydoc_text("train") and test == data.pydoc_text("test")
    assert len(train) > 3 * len(test) > 0
    assert test[:200] not in train


def test_random_windows_follow_python_random(word_tokenizer, tmp_path):
    text = " ".join(f"w{i}" for i in range(500))
    (tmp_path / "a.txt").write_text(text)
    got = data.calibration_windows(f"text:{tmp_path}", word_tokenizer, nsamples=4, seqlen=16, seed=3)
    ids = data.encode(word_tokenizer, text)
    rng = random.Random(3)
    starts = [rng.randint(0, len(ids) - 16 - 1) for _ in range(4)]
    np.testing.assert_array_equal(got, np.stack([ids[s:s + 16] for s in starts]))
    assert got.dtype == np.int32


def test_tokens_npy_2d_and_1d(tmp_path):
    windows = np.arange(40, dtype=np.int64).reshape(4, 10)
    np.save(tmp_path / "w.npy", windows)
    np.testing.assert_array_equal(data.calibration_windows(f"tokens:{tmp_path}/w.npy", None, 2, 10), windows[:2])
    np.testing.assert_array_equal(data.eval_windows(f"tokens:{tmp_path}/w.npy", None, 10), windows)
    # each row is a sequence: cut into non-overlapping windows, the rows' tails (< seqlen tokens) not scored
    np.testing.assert_array_equal(data.eval_windows(f"tokens:{tmp_path}/w.npy", None, 4),
                                  windows[:, :8].reshape(8, 4))
    np.save(tmp_path / "s.npy", np.arange(25))
    np.testing.assert_array_equal(data.eval_windows(f"tokens:{tmp_path}/s.npy", None, 10),
                                  np.arange(20).reshape(2, 10))


def test_eval_windows_cut_non_overlapping(word_tokenizer):
    w = data.eval_windows("pydoc", word_tokenizer, 64)
    ids = data.encode(word_tokenizer, data.pydoc_text("test"))
    assert w.shape == (len(ids) // 64, 64)
    np.testing.assert_array_equal(w.reshape(-1), ids[:w.size])


@pytest.mark.parametrize("spec, err, match", [
    ("imagenet", ValueError, "unknown dataset spec 'imagenet'.*pydoc"),
    ("text:/no/such/file.txt", FileNotFoundError, "does not exist"),
    ("tokens:", ValueError, "unknown dataset spec"),
])
def test_bad_specs(spec, err, match):
    with pytest.raises(err, match=match):
        data.parse_spec(spec)


def test_text_too_short(word_tokenizer, tmp_path):
    (tmp_path / "short.txt").write_text("only a few words here")
    with pytest.raises(ValueError, match="too short for windows of 128 tokens"):
        data.calibration_windows(f"text:{tmp_path}/short.txt", word_tokenizer, 4, 128)
    with pytest.raises(ValueError, match="fewer than seqlen=128"):
        data.eval_windows(f"text:{tmp_path}/short.txt", word_tokenizer, 128, 2)


def test_too_few_windows_requested(word_tokenizer):
    n = len(data.eval_windows("pydoc", word_tokenizer, 512))
    with pytest.raises(ValueError, match=f"only {n} windows"):
        data.eval_windows("pydoc", word_tokenizer, 512, n + 1)


def test_hub_sets_fail_clearly_offline(word_tokenizer):
    with pytest.raises((ConnectionError, ImportError), match="Hugging Face Hub|datasets"):
        data.eval_windows("wikitext2", word_tokenizer, 128)


def test_missing_tokenizer_is_explained():
    with pytest.raises(ValueError, match="needs a tokenizer"):
        data.eval_windows("pydoc", None, 128)
