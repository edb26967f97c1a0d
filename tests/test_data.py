"""Tests for attent_jax.tasks.datasets and attent_jax.tasks.generators: shapes, dtypes, determinism, masks, offline MNIST-1D."""

import random
import socket

import numpy as np
import pytest

from attent_jax.tasks.datasets import Dataset, load_task, task_config
from attent_jax.tasks.generators import (CharVocab, answers_match, arith_max_len, exact_match, make_arith_questions,
                              make_teach_data, make_target_mapping)

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 12)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


# --------------------------------------------------------------------------- teach

def test_teach_shapes_dtypes_and_determinism():
    ds = load_task("teach", quick=True)
    c = ds.config
    assert ds.kind == "regression" and ds.labels_train is None
    assert ds.x_train.shape == (c.num_train, c.seq_len, c.d_in) and ds.x_train.dtype == np.float32
    assert ds.y_train.shape == (c.num_train, c.seq_len, c.d_out) and ds.y_train.dtype == np.float32
    assert ds.x_test.shape == (c.num_test, c.seq_len, c.d_in)
    again = load_task("teach", quick=True)
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    other = load_task("teach", quick=True, seed=1)
    assert not np.allclose(other.y_train, ds.y_train)
    assert not np.allclose(ds.x_test[: len(ds.x_train)], ds.x_train[: len(ds.x_test)])
    assert np.all(np.isfinite(ds.y_train)) and 0.05 < ds.y_train.std() < 10


def test_teach_test_set_shares_the_target():
    ds = load_task("teach", quick=True)
    teacher = make_target_mapping(ds.config.d_in, ds.config.d_out, ds.config.seed, hidden=ds.config.hidden)
    np.testing.assert_allclose(teacher(ds.x_test), ds.y_test, rtol=1e-5, atol=1e-6)


def test_teach_sequence_level_is_mean_of_elements_and_depends_on_other_elements():
    s, y_el = make_teach_data(5, 6, 3, 2, seed=7)
    s2, y_seq = make_teach_data(5, 6, 3, 2, seed=7, level="sequence")
    np.testing.assert_array_equal(s, s2)
    assert y_seq.shape == (5, 2)
    np.testing.assert_allclose(y_seq, y_el.mean(axis=1), rtol=1e-5, atol=1e-6)
    # The mixing term: changing element 1 moves the target of element 0.
    teacher = make_target_mapping(3, 2, seed=7)
    s_changed = s.astype(np.float64).copy()
    s_changed[:, 1] += 1.0
    assert np.abs(teacher(s_changed)[:, 0] - teacher(s)[:, 0]).max() > 1e-3


def test_teach_rejects_bad_level():
    with pytest.raises(ValueError, match="level"):
        make_teach_data(4, 3, 2, 1, seed=0, level="token")
    with pytest.raises(ValueError, match="level"):
        load_task("teach", quick=True, level="token")


# --------------------------------------------------------------------------- mnist1d

def test_mnist1d_quick_offline_with_cache(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("MNIST-1D generation tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    np_state, py_state = np.random.get_state(), random.getstate()
    ds = load_task("mnist1d", quick=True, cache_dir=str(tmp_path))
    # The generator reseeds the global RNGs; the loader must hand them back untouched.
    assert np.array_equal(np.random.get_state()[1], np_state[1]) and random.getstate() == py_state
    c = ds.config
    assert ds.kind == "classification" and ds.num_classes == 10
    assert ds.x_train.shape == (c.num_train, 40) and ds.x_train.dtype == np.float32
    assert ds.y_train.shape == (c.num_train,) and ds.y_train.dtype == np.int32
    assert ds.x_test.shape == (c.num_test, 40) and ds.y_test.dtype == np.int32
    assert set(np.unique(ds.y_train)) == set(range(10))
    np.testing.assert_array_equal(ds.labels_train, ds.y_train)
    assert list(tmp_path.glob("*.npz")), "expected a cached .npz"
    cached = load_task("mnist1d", quick=True, cache_dir=str(tmp_path))
    np.testing.assert_array_equal(cached.x_train, ds.x_train)
    np.testing.assert_array_equal(cached.y_test, ds.y_test)


# --------------------------------------------------------------------------- charlm

def test_charlm_windows_from_text_file(text_file):
    ds = load_task("charlm", text_path=text_file, context=8)
    assert ds.kind == "lm" and ds.labels_train is None
    assert ds.vocab.chars == "".join(sorted(set(TEXT))) and ds.vocab_size == len(set(TEXT))
    assert ds.x_train.shape[1] == 8 and ds.x_train.dtype == np.int32 and ds.y_train.dtype == np.int32
    np.testing.assert_array_equal(ds.x_train[:, 1:], ds.y_train[:, :-1])  # targets are inputs shifted by one
    np.testing.assert_array_equal(ds.mask_train, np.ones_like(ds.x_train, np.float32))
    split = int(len(TEXT) * 0.9)
    assert ds.vocab.decode(ds.x_train[0]) + ds.vocab.decode(ds.y_train[0][-1:]) == TEXT[:9]  # non-overlapping
    assert ds.vocab.decode(ds.x_train[1]) == TEXT[9:17]
    assert ds.vocab.decode(ds.x_test[0]) == TEXT[split:split + 8]  # validation comes from the held-out tail
    assert len(ds.x_train) == (split - 9) // 9 + 1
    strided = load_task("charlm", text_path=text_file, context=8, stride=3, num_train=10, seed=1)
    assert strided.x_train.shape == (10, 8)


def test_charlm_errors(text_file, tmp_path):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="nope.txt"):
        load_task("charlm", text_path=missing)
    with pytest.raises(ValueError, match="text_path"):
        load_task("charlm", text_path=text_file, context=len(TEXT))
    with pytest.raises(ValueError, match="num_train"):
        load_task("charlm", text_path=text_file, context=8, num_train=10**6)


def test_vocab_roundtrip_and_unknown_char():
    v = CharVocab.from_text("hello world\n")
    assert v.decode(v.encode("world hello")) == "world hello"
    with pytest.raises(ValueError, match="'z'"):
        v.encode("hez")


# --------------------------------------------------------------------------- arith

def test_arith_masks_cover_exactly_the_answers(text_file):
    ds = load_task("arith", quick=True, text_path=text_file)
    assert ds.kind == "lm" and set(TEXT) <= set(ds.vocab.chars) and set("0123456789+=:QA\n") <= set(ds.vocab.chars)
    length = arith_max_len(ds.config.num_digits, ds.config.ops)
    assert ds.x_train.shape == (ds.config.num_train, length - 1) and ds.mask_train.dtype == np.float32
    for x, y, m in zip(ds.x_train, ds.y_train, ds.mask_train):
        text = ds.vocab.decode(x) + ds.vocab.decode(y[-1:])
        question, rest = text.split("=A:", 1)
        answer = rest.split("\n", 1)[0] + "\n"
        a, b = question[2:].split("+")
        assert int(answer) == int(a) + int(b)
        assert ds.vocab.decode(y[m > 0]) == answer
        # The masked positions are contiguous and start right after the question.
        assert np.flatnonzero(m).tolist() == list(range(len(question) + 2, len(question) + 2 + len(answer)))
    for p, n, ans, y, m in zip(ds.prompts_test, ds.prompt_lens_test, ds.answers_test, ds.y_test, ds.mask_test):
        assert ds.vocab.decode(p[:n]).startswith("Q:") and ds.vocab.decode(p[:n]).endswith("=A:")
        assert ds.vocab.decode(y[m > 0]) == ans
    train_q = {ds.vocab.decode(x).split("A:")[0] for x in ds.x_train}
    test_q = {ds.vocab.decode(p[:n]) .split("A:")[0] for p, n in zip(ds.prompts_test, ds.prompt_lens_test)}
    assert not train_q & test_q, "held-out questions must not appear in training"
    assert ds.pretrain is not None and ds.pretrain.vocab == ds.vocab
    assert ds.pretrain.x_train.shape[1] == ds.config.context


def test_arith_deterministic_and_without_text():
    a = load_task("arith", quick=True)
    b = load_task("arith", quick=True)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.answers_test == b.answers_test and a.pretrain is None
    c = load_task("arith", quick=True, seed=5)
    assert not np.array_equal(a.x_train, c.x_train)
    with pytest.raises(ValueError, match="context"):
        load_task("arith", quick=True, num_digits=3, context=12)
    with pytest.raises(ValueError, match="num_examples"):
        make_arith_questions(101, num_digits=1, ops="+", seed=0)


def test_arith_other_ops_answers_are_right():
    questions, answers = make_arith_questions(50, num_digits=2, ops="-*", seed=3)
    for q, a in zip(questions, answers):
        expr = q[2:-3]
        op = "-" if "-" in expr else "*"
        x, y = map(int, expr.split(op))
        assert int(a) == (x - y if op == "-" else x * y) and a.endswith("\n")
        assert len(q) + len(a) <= arith_max_len(2, "-*")


def test_exact_match_scores_answers():
    ds = load_task("arith", quick=True)
    vocab = ds.vocab

    truth = {vocab.decode(p[:n]): a for p, n, a in zip(ds.prompts_test, ds.prompt_lens_test, ds.answers_test)}

    def oracle(prompts, lens):  # writes the true answer after each prompt
        out = np.array(prompts)
        for row, n in zip(out, lens):
            answer = vocab.encode(truth[vocab.decode(row[:n])])
            row[n:n + len(answer)] = answer
        return out

    flags = exact_match(oracle, ds.prompts_test, ds.prompt_lens_test, ds.answers_test, vocab, batch_size=5)
    assert flags.shape == (ds.num_test,) and flags.all()
    # An answer off by one digit, or one never closed by a newline, does not match.
    row = np.array(ds.prompts_test[:1])
    n = int(ds.prompt_lens_test[0])
    wrong = str(int(ds.answers_test[0]) + 1) + "\n"
    row[0, n:n + len(wrong)] = vocab.encode(wrong)
    assert not answers_match(row, ds.prompt_lens_test[:1], ds.answers_test[:1], vocab)[0]
    row[0, n:] = vocab.encode("1" * (row.shape[1] - n))
    assert not answers_match(row, ds.prompt_lens_test[:1], ["1" * (row.shape[1] - n)], vocab)[0]


def test_exact_match_with_greedy_decode_shapes():
    from flax import nnx
    from attent_jax.models.decoder import CausalDecoder, DecoderConfig, greedy_decode

    ds = load_task("arith", quick=True, num_test=4)
    model = CausalDecoder(DecoderConfig(vocab_size=ds.vocab_size, context=16, width=8, depth=1, num_heads=2,
                                        mlp_ratio=2), rngs=nnx.Rngs(0))
    out = greedy_decode(model, ds.prompts_test, ds.prompt_lens_test)
    assert out.shape == ds.prompts_test.shape
    flags = exact_match(lambda p, n: greedy_decode(model, p, n), ds.prompts_test, ds.prompt_lens_test,
                        ds.answers_test, ds.vocab)
    assert flags.shape == (4,) and flags.dtype == bool


# --------------------------------------------------------------------------- registry

def test_load_task_errors_and_dataset_type():
    with pytest.raises(ValueError, match="'cifar'"):
        load_task("cifar")
    with pytest.raises(ValueError, match="'bogus'"):
        load_task("teach", quick=True, bogus=1)
    assert task_config("teach", quick=True, seq_len=5).seq_len == 5
    assert isinstance(load_task("teach", quick=True), Dataset)
