"""Array generators behind the training tasks: the teaching target, MNIST-1D, text windows, arithmetic.

Pure numpy, no JAX and no `Dataset`: `attent_jax.tasks.datasets.load_task` assembles these
into datasets, and the theory scripts import the generators directly (e.g. the
teaching target of §4.3 / Algorithm 1 via `make_teach_data`).

Example:
    >>> from attent_jax.tasks.generators import make_teach_data
    >>> s, y = make_teach_data(16, seq_len=8, d_in=8, d_out=1, seed=0)
    >>> s.shape, y.shape
    ((16, 8, 8), (16, 8, 1))
"""

from __future__ import annotations

import dataclasses
import os
import random

import numpy as np

LEVELS = ("element", "sequence")
ARITH_OPS = "+-*"
# Always in the arithmetic vocabulary, whatever the operators or the text: a fixed
# symbol set keeps token ids of a checkpoint valid when the task options change.
ARITH_CHARS = "0123456789+-*=:QA\n"


# --------------------------------------------------------------------------- teaching target

def _check_positive(**fields: int) -> None:
    for name, value in fields.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: got {value!r}, expected a positive int")


@dataclasses.dataclass(frozen=True)
class TargetMapping:
    """The target mapping f* of the `teach` task: fixed, random, not an attention map; ℝ^{n×d} → ℝ^{n×o} (or ℝ^o).

    (Named for what it is: the AtteNT *teacher*, which selects examples, is
    `attent_jax.teaching.teacher.Teacher`.)

        h_i = tanh(s_i W1 + b1)                          (per-element 2-layer MLP, hidden width h)
        f*(S)_i = h_i W2 + (1/n Σ_j h_j) W3              (plus a mixing term across elements)

    The mean-over-elements term makes each target depend on the whole sequence,
    as the properties the paper's learners fit do, without being an attention map
    of the learner's own form (eq. 2), so a learner cannot match it exactly.
    Sequence level: f*(S) = 1/n Σ_i f*(S)_i.
    """

    w1_dxh: np.ndarray
    b1_h: np.ndarray
    w2_hxo: np.ndarray
    w3_hxo: np.ndarray
    level: str = "element"

    def __call__(self, s_Nxnxd: np.ndarray) -> np.ndarray:
        s_Nxnxd = np.asarray(s_Nxnxd)
        if s_Nxnxd.ndim != 3 or s_Nxnxd.shape[-1] != self.w1_dxh.shape[0]:
            raise ValueError(f"s_Nxnxd: got shape {s_Nxnxd.shape}, expected (N, n, {self.w1_dxh.shape[0]})")
        h_Nxnxh = np.tanh(s_Nxnxd @ self.w1_dxh + self.b1_h)
        y_Nxnxo = h_Nxnxh @ self.w2_hxo + h_Nxnxh.mean(axis=1, keepdims=True) @ self.w3_hxo
        return y_Nxnxo if self.level == "element" else y_Nxnxo.mean(axis=1)


def make_target_mapping(d_in: int, d_out: int, seed: int, level: str = "element", hidden: int = 32) -> TargetMapping:
    """Draw the random target mapping f* of `make_teach_data` (same `seed` → same f*).

    Weights are scaled by 1/√fan_in so targets are O(1) for standard-normal inputs.

    Example:
        >>> import numpy as np
        >>> make_target_mapping(4, 2, seed=0)(np.zeros((3, 5, 4))).shape
        (3, 5, 2)
    """
    _check_positive(d_in=d_in, d_out=d_out, hidden=hidden)
    if level not in LEVELS:
        raise ValueError(f"level: got {level!r}, expected one of {LEVELS}")
    rng = np.random.default_rng([seed, 0])  # stream 0: the target mapping; stream 1: the sequences
    return TargetMapping(w1_dxh=rng.standard_normal((d_in, hidden)) / np.sqrt(d_in),
                   b1_h=0.1 * rng.standard_normal(hidden),
                   w2_hxo=rng.standard_normal((hidden, d_out)) / np.sqrt(hidden),
                   w3_hxo=rng.standard_normal((hidden, d_out)) / np.sqrt(hidden),
                   level=level)


def make_teach_data(num_examples: int, seq_len: int, d_in: int, d_out: int, seed: int,
                    level: str = "element", *, teacher_seed: int | None = None, hidden: int = 32,
                    dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """The dense set {(S_j, f*(S_j))} of N sequence–property pairs the teacher selects from (§4.3).

    S_j ∈ ℝ^{n×d} has i.i.d. standard-normal entries; f* is `make_target_mapping(d_in,
    d_out, teacher_seed, level, hidden)` (`teacher_seed=None` → `seed`). Use one
    `teacher_seed` and different `seed`s for train and test sets of one target.

    Returns s (N, n, d) and y (N, n, o) for level "element" or (N, o) for "sequence".

    Example:
        >>> s, y = make_teach_data(4, 8, 8, 1, seed=0, level="sequence")
        >>> y.shape
        (4, 1)
    """
    _check_positive(num_examples=num_examples, seq_len=seq_len)
    target = make_target_mapping(d_in, d_out, seed if teacher_seed is None else teacher_seed, level, hidden)
    rng = np.random.default_rng([seed, 1])
    s_Nxnxd = rng.standard_normal((num_examples, seq_len, d_in))
    return s_Nxnxd.astype(dtype), target(s_Nxnxd).astype(dtype)


# --------------------------------------------------------------------------- MNIST-1D

# The generator's signal length (mnist1d.data.get_dataset_args().final_seq_length): configs check a patch size
# against it before any data is generated; make_mnist1d checks the generator still agrees.
MNIST1D_LENGTH = 40


def check_mnist1d_patch_size(patch_size: int) -> None:
    """A one-line ValueError unless `patch_size` divides the MNIST-1D signal (checked before any data is made)."""
    if MNIST1D_LENGTH % patch_size:
        raise ValueError(f"patch_size: got {patch_size}, expected a divisor of MNIST-1D's signal length "
                         f"{MNIST1D_LENGTH}")


def make_mnist1d(num_examples: int, seed: int = 42, cache_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Generate MNIST-1D locally (Greydanus 2020) with the `mnist1d` package; never downloads.

    Uses `mnist1d.data.make_dataset` (the generator), not `get_dataset` (which
    fetches a pickle from GitHub). The package draws samples per class, so the
    count is rounded up to a multiple of 10 and the shuffled result cut back to
    `num_examples`. It reseeds numpy's and Python's global RNGs; their states are
    restored afterwards so callers' global randomness is untouched. Costs ~0.7 ms
    per example; with `cache_dir`, arrays are saved as .npz and reused.

    Returns x (N, 40) float32 and y (N,) int32 in 0..9.
    """
    _check_positive(num_examples=num_examples)
    total = -(-num_examples // 10) * 10
    cache_path = None
    if cache_dir is not None:
        cache_path = os.path.join(cache_dir, f"mnist1d_n{total}_seed{seed}.npz")
        if os.path.exists(cache_path):
            with np.load(cache_path) as f:
                return f["x"][:num_examples], f["y"][:num_examples]

    import mnist1d.data  # deferred: it pulls in matplotlib and requests

    args = mnist1d.data.get_dataset_args()
    args.num_samples, args.seed, args.train_split = total, seed, 1.0
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = mnist1d.data.make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x, y = raw["x"].astype(np.float32), raw["y"].astype(np.int32)
    if x.shape[1] != MNIST1D_LENGTH:
        raise ValueError(f"mnist1d generator: got signals of length {x.shape[1]}, expected {MNIST1D_LENGTH} "
                         "(generators.MNIST1D_LENGTH)")
    if cache_path is not None:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = cache_path + f".tmp{os.getpid()}.npz"
        np.savez(tmp, x=x, y=y)
        os.replace(tmp, cache_path)  # a crash mid-write never leaves a truncated cache
    return x[:num_examples], y[:num_examples]


# --------------------------------------------------------------------------- text

@dataclasses.dataclass(frozen=True)
class CharVocab:
    """Character vocabulary: token id = position in `chars` (sorted, unique).

    Example:
        >>> v = CharVocab.from_text("abca")
        >>> v.encode("cab").tolist(), v.decode([2, 0])
        ([2, 0, 1], 'ca')
    """

    chars: str

    @classmethod
    def from_text(cls, *texts: str) -> "CharVocab":
        return cls("".join(sorted(set().union(*map(set, texts)))))

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        if not text:
            return np.zeros(0, np.int32)
        table = np.array(list(self.chars))
        codes = np.array(list(text))
        ids = np.searchsorted(table, codes)  # chars are sorted by code point, as numpy compares them
        bad = (ids >= len(table)) | (table[np.minimum(ids, len(table) - 1)] != codes)
        if bad.any():
            raise ValueError(f"text: character {codes[bad][0]!r} is not in the vocabulary of {self.size} chars")
        return ids.astype(np.int32)

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in np.asarray(ids).reshape(-1))


def read_text(path: str, max_chars: int | None = None) -> str:
    """Read a UTF-8 text file (its first `max_chars` characters if given)."""
    if path is None or not os.path.isfile(path):
        raise ValueError(f"text_path: got {path!r}, expected an existing text file")
    with open(path, encoding="utf-8") as f:
        text = f.read() if max_chars is None else f.read(max_chars)
    if not text:
        raise ValueError(f"text_path: {path!r} is empty, expected some text")
    return text


def text_windows(ids_T: np.ndarray, context: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut a token stream into windows of context+1 tokens starting every `stride` tokens.

    Returns inputs (N, context) = window[:-1] and next-token targets (N, context) = window[1:].
    """
    n = (len(ids_T) - (context + 1)) // stride + 1 if len(ids_T) >= context + 1 else 0
    starts_N = np.arange(n) * stride
    win_NxW = ids_T[starts_N[:, None] + np.arange(context + 1)]
    return win_NxW[:, :-1].astype(np.int32), win_NxW[:, 1:].astype(np.int32)


# --------------------------------------------------------------------------- arithmetic

def _apply(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def make_arith_questions(num_examples: int, num_digits: int, ops: str, seed: int) -> tuple[list[str], list[str]]:
    """Distinct questions "Q:23+58=A:" with answers "81\\n" (the newline marks where an answer ends).

    Operands are uniform in [0, 10^num_digits); (a, op, b) triples are drawn without
    replacement, so the first k of the result and the rest never share a question
    (the held-out split relies on this).
    """
    _check_positive(num_examples=num_examples, num_digits=num_digits)
    if not ops or any(o not in ARITH_OPS for o in ops) or len(set(ops)) != len(ops):
        raise ValueError(f"ops: got {ops!r}, expected distinct operators from {ARITH_OPS!r}")
    base = 10 ** num_digits
    space = len(ops) * base * base
    if num_examples > space:
        raise ValueError(f"num_examples: got {num_examples}, expected at most {space} distinct questions "
                         f"with num_digits={num_digits} and ops={ops!r}")
    codes = np.random.default_rng(seed).choice(space, size=num_examples, replace=False)
    op_ix, rest = np.divmod(codes, base * base)
    a, b = np.divmod(rest, base)
    questions, answers = [], []
    for o, x, y in zip(op_ix, a, b):
        op = ops[o]
        questions.append(f"Q:{x}{op}{y}=A:")
        answers.append(f"{_apply(op, int(x), int(y))}\n")
    return questions, answers


def arith_max_len(num_digits: int, ops: str) -> int:
    """Longest question+answer string for these operands, e.g. 14 for 2 digits and "+"."""
    top = 10 ** num_digits - 1
    longest = {"+": len(str(2 * top)), "-": len(str(-top)), "*": len(str(top * top))}
    return len("Q:") + 2 * num_digits + 1 + len("=A:") + max(longest[op] for op in ops) + len("\n")


def encode_arith(questions: list[str], answers: list[str], vocab: CharVocab, length: int,
                 pad: str = "\n") -> dict[str, np.ndarray]:
    """Teacher-forcing rows and decode prompts for question/answer pairs.

    Each full string q+a is right-padded with `pad` to `length` tokens, then
    x = row[:-1], y = row[1:] and mask[t] = 1 exactly where y[t] is a character of
    the answer (its digits and its closing newline): the loss on responses only.
    Prompts are the question tokens in a buffer of `length` tokens (the rest
    `pad`), with `prompt_len` = len(question), ready for `greedy_decode`.
    """
    n = len(questions)
    rows = np.full((n, length), vocab.encode(pad)[0], np.int32)
    prompts = rows.copy()
    mask = np.zeros((n, length - 1), np.float32)
    prompt_lens = np.zeros(n, np.int32)
    for i, (q, a) in enumerate(zip(questions, answers)):
        if len(q) + len(a) > length:
            raise ValueError(f"length: got {length}, expected at least {len(q) + len(a)} for {q + a!r}")
        rows[i, :len(q) + len(a)] = vocab.encode(q + a)
        prompts[i, :len(q)] = vocab.encode(q)
        prompt_lens[i] = len(q)
        # y[t] = row[t+1], and the answer fills row[len(q) : len(q)+len(a)].
        mask[i, len(q) - 1:len(q) + len(a) - 1] = 1.0
    return {"x": rows[:, :-1], "y": rows[:, 1:], "mask": mask, "prompts": prompts, "prompt_lens": prompt_lens}


def answers_match(tokens_BxT, prompt_lens_B, answers, vocab: CharVocab) -> np.ndarray:
    """Exact match per example: the generated text after the prompt, up to its first newline, equals the answer.

    `answers` are as produced by `make_arith_questions` (with or without the
    trailing newline). Returns bool (B,).
    """
    tokens_BxT, prompt_lens_B = np.asarray(tokens_BxT), np.asarray(prompt_lens_B)
    if tokens_BxT.ndim != 2 or prompt_lens_B.shape != (tokens_BxT.shape[0],) or len(answers) != tokens_BxT.shape[0]:
        raise ValueError(f"tokens_BxT: got shape {tokens_BxT.shape} with {prompt_lens_B.shape} prompt_lens_B and "
                         f"{len(answers)} answers, expected (B, T), (B,) and B answers")
    out = np.zeros(len(answers), bool)
    for i, (row, start, answer) in enumerate(zip(tokens_BxT, prompt_lens_B, answers)):
        generated = vocab.decode(row[start:])
        out[i] = "\n" in generated and generated.split("\n", 1)[0] == answer.rstrip("\n")
    return out


def exact_match(decode_fn, prompts_BxT, prompt_lens_B, answers, vocab: CharVocab,
                batch_size: int | None = None) -> np.ndarray:
    """Exact-match flags (B,) of greedy answers: `decode_fn(prompts, lens) -> tokens` fills the buffers.

    Example (with a trained decoder `model` and an arith `Dataset` `ds`):
        >>> # from attent_jax.models.decoder import greedy_decode
        >>> # ok = exact_match(lambda p, l: greedy_decode(model, p, l), ds.prompts_test,
        >>> #                  ds.prompt_lens_test, ds.answers_test, ds.vocab)
    """
    prompts_BxT, prompt_lens_B = np.asarray(prompts_BxT), np.asarray(prompt_lens_B)
    b = len(prompts_BxT) if batch_size is None else batch_size
    _check_positive(batch_size=b)
    flags = [answers_match(decode_fn(prompts_BxT[i:i + b], prompt_lens_B[i:i + b]), prompt_lens_B[i:i + b],
                           answers[i:i + b], vocab) for i in range(0, len(prompts_BxT), b)]
    return np.concatenate(flags) if flags else np.zeros(0, bool)
