"""Training tasks as in-memory numpy datasets: `load_task(name, quick=False, **options) -> Dataset`.

Tasks (the training loop puts the arrays on device):
- "teach": regression on a dense set of sequence–property pairs from a fixed
  random non-attention target (the greedy-teaching setting of §4.3, Algorithm 1).
- "mnist1d": MNIST-1D classification (a small stand-in for the paper's ViT runs, §5).
- "charlm": character-level language modelling of any text file.
- "arith": fine-tuning in miniature (the paper's LLM runs, §5 / Appendix C: loss
  on responses only): arithmetic questions "Q:23+58=A:81\\n" with the loss mask on
  the answer, a held-out question set for exact match, and optional pretraining
  windows from a text file sharing one vocabulary.

Each task has a frozen config; `quick=True` starts from sizes small enough for
tests, and keyword options override single fields.

Example:
    >>> from attent_jax.tasks.datasets import load_task
    >>> ds = load_task("teach", quick=True, level="sequence")
    >>> ds.kind, ds.x_train.shape, ds.y_train.shape
    ('regression', (64, 4, 3), (64, 1))
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from attent_jax.tasks.generators import (ARITH_CHARS, LEVELS, CharVocab, arith_max_len, encode_arith,  # noqa: F401
                              exact_match, make_arith_questions, make_mnist1d, make_teach_data, read_text,
                              text_windows)

KINDS = ("classification", "regression", "lm")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """One task's arrays. Axis 0 of every array indexes examples."""

    name: str                                  # task name given to load_task
    kind: str                                  # "classification", "regression" or "lm"
    x_train: np.ndarray                        # inputs: (N, 40) float32 / (N, n, d) float32 / (N, T) int32 tokens
    y_train: np.ndarray                        # labels (N,) int32 / targets (N, n, o) or (N, o) / next tokens (N, T)
    x_test: np.ndarray                         # held-out inputs, same layout
    y_test: np.ndarray                         # held-out targets, same layout
    config: Any                                # the resolved task config that produced this dataset
    mask_train: np.ndarray | None = None       # lm: (N, T) float32, 1 where a position's loss counts
    mask_test: np.ndarray | None = None        # lm: held-out mask
    labels_train: np.ndarray | None = None     # classification: (N,) int32 for class-weighted sampling; else None
    num_classes: int | None = None             # classification: number of classes
    vocab_size: int | None = None              # lm: number of token ids
    vocab: CharVocab | None = None             # lm: id ↔ character map
    prompts_test: np.ndarray | None = None     # arith: (M, T+1) int32 question buffers for greedy_decode
    prompt_lens_test: np.ndarray | None = None  # arith: (M,) int32 question lengths
    answers_test: tuple[str, ...] | None = None  # arith: expected answers ("81\n") for exact match
    pretrain: "Dataset | None" = None          # arith: text windows in the same vocabulary (None without text)

    @property
    def num_train(self) -> int:
        return len(self.x_train)

    @property
    def num_test(self) -> int:
        return len(self.x_test)


# --------------------------------------------------------------------------- configs

def _positive(cls: str, allow_none: bool = False, **fields) -> None:
    for name, value in fields.items():
        if allow_none and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{cls}.{name}: got {value!r}, expected a positive int"
                             + (" or None" if allow_none else ""))


def _fraction(cls: str, name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{cls}.{name}: got {value!r}, expected a number in (0, 1)")


@dataclasses.dataclass(frozen=True)
class TeachConfig:
    num_train: int = 4096    # N: size of the dense set the teacher selects from
    num_test: int = 1024     # held-out sequences of the same target
    seq_len: int = 8         # n: elements per sequence
    d_in: int = 8            # d: features per element
    d_out: int = 1           # o: outputs per element (or per sequence)
    level: str = "element"   # "element": targets (n, o); "sequence": mean over elements, (o,)
    hidden: int = 32         # hidden width of the random MLP target
    seed: int = 0            # picks the target and the sequences

    def __post_init__(self):
        _positive("TeachConfig", num_train=self.num_train, num_test=self.num_test, seq_len=self.seq_len,
                  d_in=self.d_in, d_out=self.d_out, hidden=self.hidden)
        if self.level not in LEVELS:
            raise ValueError(f"TeachConfig.level: got {self.level!r}, expected one of {LEVELS}")


@dataclasses.dataclass(frozen=True)
class Mnist1dConfig:
    num_train: int = 4000         # training examples (the original MNIST-1D: 4000); 100k+ works (~0.7 ms each)
    num_test: int = 1000          # held-out examples (generated in the same run, disjoint)
    seed: int = 42                # the mnist1d generator seed (42 = the published dataset's)
    cache_dir: str | None = None  # where generated arrays are cached as .npz; None: regenerate

    def __post_init__(self):
        _positive("Mnist1dConfig", num_train=self.num_train, num_test=self.num_test)


@dataclasses.dataclass(frozen=True)
class CharLMConfig:
    text_path: str | None = None   # UTF-8 text file to model (required)
    context: int = 64              # T: tokens per training input (windows hold T+1 chars)
    stride: int | None = None      # window start spacing; None: T+1 (non-overlapping)
    test_fraction: float = 0.1     # the text's tail held out for validation windows
    max_chars: int | None = None   # read only the first max_chars characters; None: all
    num_train: int | None = None   # keep a seeded random subset of this many train windows; None: all
    num_test: int | None = None    # same for the held-out windows
    seed: int = 0                  # picks the subsets

    def __post_init__(self):
        _positive("CharLMConfig", context=self.context)
        _positive("CharLMConfig", allow_none=True, stride=self.stride, max_chars=self.max_chars,
                  num_train=self.num_train, num_test=self.num_test)
        _fraction("CharLMConfig", "test_fraction", self.test_fraction)


@dataclasses.dataclass(frozen=True)
class ArithConfig:
    text_path: str | None = None   # pretraining text file; None: no pretraining windows
    context: int = 64              # pretraining window length; also bounds the question+answer length
    stride: int | None = None      # pretraining window spacing; None: non-overlapping
    test_fraction: float = 0.1     # text tail held out for pretraining validation
    max_chars: int | None = None   # read only the first max_chars characters of the text
    num_digits: int = 2            # operands uniform in [0, 10^num_digits)
    ops: str = "+"                 # operators drawn uniformly, from "+-*"
    num_train: int = 2000          # fine-tuning questions
    num_test: int = 500            # held-out questions (never in the train set) for exact match
    seed: int = 0                  # picks the questions

    def __post_init__(self):
        _positive("ArithConfig", context=self.context, num_digits=self.num_digits, num_train=self.num_train,
                  num_test=self.num_test)
        _positive("ArithConfig", allow_none=True, stride=self.stride, max_chars=self.max_chars)
        _fraction("ArithConfig", "test_fraction", self.test_fraction)
        if not self.ops or any(o not in "+-*" for o in self.ops) or len(set(self.ops)) != len(self.ops):
            raise ValueError(f"ArithConfig.ops: got {self.ops!r}, expected distinct operators from '+-*'")
        if arith_max_len(self.num_digits, self.ops) > self.context:
            raise ValueError(f"ArithConfig.context: got {self.context}, expected at least "
                             f"{arith_max_len(self.num_digits, self.ops)} to hold a question and its answer")


# --------------------------------------------------------------------------- builders

def _load_teach(c: TeachConfig) -> Dataset:
    common = dict(seq_len=c.seq_len, d_in=c.d_in, d_out=c.d_out, level=c.level, hidden=c.hidden,
                  teacher_seed=c.seed)
    x_train, y_train = make_teach_data(c.num_train, seed=c.seed, **common)
    # Another sequence stream for the held-out set, the same target.
    x_test, y_test = make_teach_data(c.num_test, seed=c.seed + 1_000_003, **common)
    return Dataset("teach", "regression", x_train, y_train, x_test, y_test, config=c)


def _load_mnist1d(c: Mnist1dConfig) -> Dataset:
    x, y = make_mnist1d(c.num_train + c.num_test, seed=c.seed, cache_dir=c.cache_dir)
    return Dataset("mnist1d", "classification", x[:c.num_train], y[:c.num_train], x[c.num_train:],
                   y[c.num_train:], config=c, labels_train=y[:c.num_train], num_classes=10)


def _subset(name: str, arrays: tuple[np.ndarray, ...], keep: int | None, rng: np.random.Generator):
    n = len(arrays[0])
    if keep is None:
        return arrays
    if keep > n:
        raise ValueError(f"{name}: got {keep}, expected at most the {n} windows the text provides")
    ix = np.sort(rng.choice(n, size=keep, replace=False))
    return tuple(a[ix] for a in arrays)


def _text_dataset(name: str, c: CharLMConfig, text: str, vocab: CharVocab) -> Dataset:
    ids = vocab.encode(text)
    split = int(len(ids) * (1.0 - c.test_fraction))
    stride = c.context + 1 if c.stride is None else c.stride
    x_train, y_train = text_windows(ids[:split], c.context, stride)
    x_test, y_test = text_windows(ids[split:], c.context, stride)
    if not len(x_train) or not len(x_test):
        raise ValueError(f"text_path: {c.text_path!r} gives {len(ids)} chars, too few for train and test windows "
                         f"of context+1={c.context + 1} with test_fraction={c.test_fraction}")
    rng = np.random.default_rng(c.seed)
    x_train, y_train = _subset("num_train", (x_train, y_train), c.num_train, rng)
    x_test, y_test = _subset("num_test", (x_test, y_test), c.num_test, rng)
    return Dataset(name, "lm", x_train, y_train, x_test, y_test, config=c,
                   mask_train=np.ones(x_train.shape, np.float32), mask_test=np.ones(x_test.shape, np.float32),
                   vocab_size=vocab.size, vocab=vocab)


def _load_charlm(c: CharLMConfig) -> Dataset:
    text = read_text(c.text_path, c.max_chars)
    return _text_dataset("charlm", c, text, CharVocab.from_text(text))


def _load_arith(c: ArithConfig) -> Dataset:
    text = None if c.text_path is None else read_text(c.text_path, c.max_chars)
    vocab = CharVocab.from_text(ARITH_CHARS, *([] if text is None else [text]))
    # Pretraining windows take every text window: the subset sizes belong to the questions.
    pretrain = None if text is None else _text_dataset("arith-pretrain", CharLMConfig(
        text_path=c.text_path, context=c.context, stride=c.stride, test_fraction=c.test_fraction,
        max_chars=c.max_chars, seed=c.seed), text, vocab)
    questions, answers = make_arith_questions(c.num_train + c.num_test, c.num_digits, c.ops, c.seed)
    length = arith_max_len(c.num_digits, c.ops)
    train = encode_arith(questions[:c.num_train], answers[:c.num_train], vocab, length)
    test = encode_arith(questions[c.num_train:], answers[c.num_train:], vocab, length)
    return Dataset("arith", "lm", train["x"], train["y"], test["x"], test["y"], config=c,
                   mask_train=train["mask"], mask_test=test["mask"], vocab_size=vocab.size, vocab=vocab,
                   prompts_test=test["prompts"], prompt_lens_test=test["prompt_lens"],
                   answers_test=tuple(answers[c.num_train:]), pretrain=pretrain)


# name → (config class, quick overrides, builder)
_TASKS: dict[str, tuple[type, dict[str, Any], Callable[[Any], Dataset]]] = {
    "teach": (TeachConfig, dict(num_train=64, num_test=32, seq_len=4, d_in=3), _load_teach),
    # 2000 examples: 400 were too few for the quick run to learn from (train_config: 19% test accuracy).
    "mnist1d": (Mnist1dConfig, dict(num_train=2000, num_test=500), _load_mnist1d),
    "charlm": (CharLMConfig, dict(context=16, max_chars=20_000), _load_charlm),
    "arith": (ArithConfig, dict(context=16, max_chars=5_000, num_train=64, num_test=16), _load_arith),
}


def task_names() -> tuple[str, ...]:
    return tuple(_TASKS)


def task_config(name: str, quick: bool = False, **options):
    """The resolved config of task `name`: defaults, then the quick sizes, then `options`."""
    if name not in _TASKS:
        raise ValueError(f"name: got {name!r}, expected one of {list(_TASKS)}")
    config_cls, quick_fields, _ = _TASKS[name]
    valid = [f.name for f in dataclasses.fields(config_cls)]
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise ValueError(f"options: got {unknown[0]!r} for task {name!r}, expected one of {valid}")
    return config_cls(**{**(quick_fields if quick else {}), **options})


def load_task(name: str, quick: bool = False, **options) -> Dataset:
    """Build task `name` ("teach", "mnist1d", "charlm", "arith") as a `Dataset`.

    `quick=True` uses test-sized defaults; `options` set config fields (see
    `TeachConfig`, `Mnist1dConfig`, `CharLMConfig`, `ArithConfig`). Deterministic
    given the config.

    Example:
        >>> ds = load_task("arith", quick=True)  # no text_path: questions only
        >>> ds.vocab.decode(ds.prompts_test[0][:ds.prompt_lens_test[0]])[:2]
        'Q:'
    """
    config = task_config(name, quick, **options)
    return _TASKS[name][2](config)
