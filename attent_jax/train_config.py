"""`TrainConfig`: every knob of a training run, one frozen dataclass (one CLI flag per field).

`attent train` generates its flags from these fields (``--batch-size`` ↔
``batch_size``; help text = the field's comment), a ``--config FILE`` JSON may
set any of them, and the run folder keeps the *resolved* config
(`TrainConfig.resolve`: task-dependent defaults such as the model and its width
filled in) as ``config.json``.

Selection follows the paper's two regimes (Appendix C): ``scratch`` (ViT
pre-training: Soft selection, a ratio growing from 20% to 80%, re-selection at
a growing interval) and ``finetune`` (LLM fine-tuning: all data in epoch 1, then
the top 70% by loss). ``--selection none`` is the "w/o AtteNT" baseline.

``ratio`` and ``interval`` take a schedule name *or* a number, so both
``--ratio cosine`` (r from ``ratio_start`` to ``ratio_end``) and ``--ratio 0.7``
(fixed at 70%) work; likewise ``--interval incremental`` or ``--interval 3``.

Learning-rate schedule and shrinking epochs: AdamW with linear warm-up and
cosine decay (Appendix C). With selection an epoch holds fewer optimizer steps
than N / batch_size, so a schedule laid out over ``epochs × N / batch_size``
steps would never finish decaying. ``lr_schedule_by="steps"`` (default) lays it
out over the *planned* number of optimizer steps, which the teacher's host-side
schedule knows exactly before training starts (Σ_epochs ⌊n_active / batch⌋):
every step gets an equal share, and the decay ends at the last step.
``lr_schedule_by="epochs"`` instead gives every epoch an equal share of the
schedule, whatever its size (progress = (epoch + step/steps_in_epoch) / epochs),
as the paper states its schedule in epochs (40 warm-up epochs of 800). The two
agree without selection. InfoBatch decides its epoch sizes on device, so under
"steps" its epochs are planned as full ones (the decay then stops short);
prefer "epochs" with the infobatch regime.

Example:
    >>> from attent_jax.train_config import TrainConfig
    >>> cfg = TrainConfig(task="mnist1d", selection="soft", ratio="cosine", epochs=30).resolve()
    >>> cfg.model, cfg.regime, cfg.teacher_config().ratio_schedule
    ('encoder', 'scratch', 'cosine')
"""

import dataclasses
import inspect
import json
import math
import os
import re

from attent_jax import schedules, selection
from attent_jax.teacher import REGIMES, TeacherConfig

TASKS = ("teach", "mnist1d", "charlm", "arith")
MODELS = ("attention", "encoder", "decoder")
SELECTIONS = ("none",) + tuple(selection.SELECTORS)
SCORES = ("loss", "discrepancy")
LR_SCHEDULE_BY = ("steps", "epochs")

# The model each task trains (the only one whose inputs and outputs fit it).
TASK_MODEL = {"teach": "attention", "mnist1d": "encoder", "charlm": "decoder", "arith": "decoder"}
# model -> (width, depth, num_heads) defaults, full and quick; for "attention" width is d' (= d_qk).
_MODEL_SIZES = {"attention": ((16, 1, 1), (8, 1, 1)),
                "encoder": ((64, 2, 4), (32, 1, 2)),
                "decoder": ((128, 2, 4), (32, 1, 2))}
# The peak learning rate when the field is 0: full runs, and with --quick per task. The mnist1d quick run is
# a newcomer's first one, so it must visibly learn: at 1e-3 with 400 examples its 76 steps stayed near chance
# (19% test accuracy after 30 epochs); 2000 examples (data.py) at 5e-3 reach ~65% in ~440 steps.
_LEARNING_RATE = 1e-3
_QUICK_LEARNING_RATE = {"mnist1d": 5e-3}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # -- task and model
    task: str = "mnist1d"          # teach | mnist1d | charlm | arith
    model: str = ""                # attention | encoder | decoder; "" = the task's model
    quick: bool = False            # use the task's quick (test-sized) data and model defaults
    text_file: str = ""            # UTF-8 text for charlm, and for arith's pre-training stage
    num_train: int = 0             # training examples (questions, windows); 0 = the task's default
    num_test: int = 0              # held-out examples; 0 = the task's default
    context: int = 0               # charlm/arith token context T; 0 = the task's default
    width: int = 0                 # model width (d' for the attention learner); 0 = model default
    depth: int = 0                 # Transformer blocks (encoder/decoder); 0 = model default
    num_heads: int = 0             # attention heads; 0 = model default
    # -- AtteNT selection (attent_jax.teacher.TeacherConfig)
    selection: str = "soft"        # hard | soft | random | class_weight | none (all data: the baseline)
    score: str = "loss"            # what the teacher ranks: loss (per-example training loss) | discrepancy (‖f(S) − f*(S)‖, teach task)
    regime: str = ""               # scratch | finetune | every_epoch | infobatch | full; "" = by task
    ratio: str | float = "incremental"  # ratio schedule fixed | incremental | cosine, or a fixed ratio in (0, 1]
    ratio_fixed: float = 0.7       # ratio of the "fixed" schedule (Appendix C fine-tuning: top 70%)
    ratio_start: float = 0.2       # r at the start of incremental/cosine (Appendix C: 20% → 80%)
    ratio_end: float = 0.8         # r at the end of incremental/cosine
    interval: str | int = "incremental"  # re-selection interval schedule fixed | incremental, or fixed epochs >= 1
    interval_fixed: int = 2        # epochs between re-selections for the "fixed" schedule
    interval_min: int = 1          # incremental interval at the start (Table 3: growing saves time)
    interval_max: int = 10         # incremental interval at the end
    temperature: float = 1.0       # soft selection: draws ∝ exp(loss / temperature)
    normalize_scores: bool = False  # soft selection: divide losses by their std first
    full_epochs_per_cycle: int = 0  # scratch: all-data epochs closing each selection cycle
    final_full_share: float = 0.0  # scratch: the last share of epochs on all data (0 = the paper; our variant)
    greedy_full_scoring: bool = True  # every_epoch: re-score all examples before each selection
    rescore: str = "all"           # a scoring pass scores all examples (paper) | unselected (cheaper variant)
    infobatch_prune_ratio: float = 0.5  # infobatch: share of below-mean examples pruned per epoch
    infobatch_anneal: float = 0.125  # infobatch: final share of epochs on all data
    # -- optimisation (AdamW, warm-up + cosine; Appendix C)
    epochs: int = 30               # training epochs (the fine-tuning stage's, for arith)
    pretrain_epochs: int = 2       # arith: epochs of next-char pre-training on text_file first (0 = none)
    batch_size: int = 64           # global batch, split over devices; the last partial batch is dropped
    learning_rate: float = 0.0     # peak learning rate; 0 = 1e-3 (quick: the task's)
    weight_decay: float = 0.05     # AdamW decoupled weight decay on matrices (ViT runs: 0.05)
    b1: float = 0.9                # Adam β1
    b2: float = 0.95               # Adam β2 (ViT runs: 0.95)
    eps: float = 1e-8              # Adam ε
    warmup_ratio: float = 0.05     # share of the schedule spent in linear warm-up (ViT: 40/800)
    min_lr_ratio: float = 0.0      # final learning rate as a share of the peak
    lr_schedule_by: str = "steps"  # steps | epochs: what the schedule is laid out over (module docstring)
    grad_clip: float = 0.0         # clip the global gradient norm to this; 0 = off
    # -- devices, bookkeeping
    fsdp: bool = False             # shard big params and optimizer state over the "data" axis
    fsdp_min_size: int = 16384     # params with fewer elements stay replicated under fsdp
    eval_batch_size: int = 256     # chunk of the scoring and evaluation passes (rounded up to the device count)
    seed: int = 0                  # seeds the model init, the teacher and the data order
    log_every: int = 20            # fetch metrics, log and check for NaN every this many steps
    checkpoint_every: int = 200    # save a checkpoint every this many steps (and at every epoch end)
    keep_checkpoints: int = 3      # checkpoints kept on disk
    progress_bar: bool = True      # show a tqdm progress bar

    def __post_init__(self):
        ratio = _number_or_name(self.ratio, float)
        interval = _number_or_name(self.interval, int)
        object.__setattr__(self, "ratio", ratio)
        object.__setattr__(self, "interval", interval)
        _check_types(self)
        _one_of("task", self.task, TASKS)
        _one_of("model", self.model, ("",) + MODELS)
        _one_of("selection", self.selection, SELECTIONS)
        _one_of("score", self.score, SCORES)
        if self.score == "discrepancy" and self.task != "teach":
            raise ValueError(f"score: got 'discrepancy' for task {self.task!r}, expected the regression task 'teach' "
                             "(classification and LM tasks score by loss)")
        _one_of("regime", self.regime, ("",) + REGIMES)
        _one_of("lr_schedule_by", self.lr_schedule_by, LR_SCHEDULE_BY)
        if isinstance(ratio, str):
            _one_of("ratio", ratio, schedules.RATIO_SCHEDULES, "or a number in (0, 1]")
        elif not (math.isfinite(ratio) and 0.0 < ratio <= 1.0):
            raise ValueError(f"ratio: got {ratio!r}, expected a number in (0, 1] or one of {schedules.RATIO_SCHEDULES}")
        if isinstance(interval, str):
            _one_of("interval", interval, schedules.INTERVAL_SCHEDULES, "or an int >= 1")
        elif interval < 1:
            raise ValueError(f"interval: got {interval!r}, expected an int >= 1 "
                             f"or one of {schedules.INTERVAL_SCHEDULES}")
        for name in ("ratio_fixed", "ratio_start", "ratio_end"):
            _in_range(name, getattr(self, name), 0.0, 1.0, lo_open=True)
        for name in ("interval_fixed", "interval_min", "interval_max", "epochs", "batch_size", "eval_batch_size",
                     "log_every", "checkpoint_every", "keep_checkpoints", "fsdp_min_size"):
            _at_least(name, getattr(self, name), 1)
        for name in ("num_train", "num_test", "context", "width", "depth", "num_heads", "pretrain_epochs",
                     "full_epochs_per_cycle"):
            _at_least(name, getattr(self, name), 0)
        _in_range("learning_rate", self.learning_rate, 0.0, math.inf)
        _in_range("weight_decay", self.weight_decay, 0.0, math.inf)
        _in_range("b1", self.b1, 0.0, 1.0, hi_open=True)
        _in_range("b2", self.b2, 0.0, 1.0, hi_open=True)
        _in_range("eps", self.eps, 0.0, math.inf, lo_open=True)
        _in_range("warmup_ratio", self.warmup_ratio, 0.0, 1.0, hi_open=True)
        _in_range("final_full_share", self.final_full_share, 0.0, 1.0, hi_open=True)
        _in_range("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        _in_range("grad_clip", self.grad_clip, 0.0, math.inf)
        _in_range("temperature", self.temperature, 0.0, math.inf, lo_open=True)
        if self.model and self.model != TASK_MODEL[self.task]:
            raise ValueError(f"model: got {self.model!r}, expected {TASK_MODEL[self.task]!r} for task {self.task!r}")
        if self.text_file and not os.path.isfile(self.text_file):
            raise ValueError(f"text_file: got {self.text_file!r}, expected an existing text file")
        if self.task == "charlm" and not self.text_file:
            raise ValueError("text_file: got '', expected a text file to model for task 'charlm'")
        if self.task == "arith" and self.pretrain_epochs and not self.text_file:
            raise ValueError(f"text_file: got '', expected a text file for arith's {self.pretrain_epochs} "
                             f"pre-training epochs (or pretrain_epochs=0)")
        self.teacher_config()  # the teacher's own checks, as a backstop

    # -- derived views

    def resolve(self) -> "TrainConfig":
        """The same config with every task-dependent default ("" or 0) filled in (`quick`: the quick ones)."""
        model = self.model or TASK_MODEL[self.task]
        width, depth, heads = _MODEL_SIZES[model][1 if self.quick else 0]
        # An absolute text path: a run resumed from another working directory finds the same file.
        text_file = os.path.abspath(self.text_file) if self.text_file else ""
        lr = _QUICK_LEARNING_RATE.get(self.task, _LEARNING_RATE) if self.quick else _LEARNING_RATE
        return dataclasses.replace(self, model=model, regime=self._regime(), width=self.width or width,
                                   depth=self.depth or depth, num_heads=self.num_heads or heads, text_file=text_file,
                                   learning_rate=self.learning_rate or lr)

    def _regime(self) -> str:
        if self.selection == "none":
            return "full"
        return self.regime or ("finetune" if self.task == "arith" else "scratch")

    def teacher_config(self) -> TeacherConfig:
        """The `TeacherConfig` of this run (its selector is unused under the "full" regime)."""
        ratio, interval = self.ratio, self.interval
        return TeacherConfig(
            regime=self._regime(), selector="random" if self.selection == "none" else self.selection,
            temperature=self.temperature, normalize_scores=self.normalize_scores,
            ratio_schedule=ratio if isinstance(ratio, str) else "fixed",
            ratio=self.ratio_fixed if isinstance(ratio, str) else float(ratio),
            ratio_start=self.ratio_start, ratio_end=self.ratio_end,
            interval_schedule=interval if isinstance(interval, str) else "fixed",
            interval=self.interval_fixed if isinstance(interval, str) else int(interval),
            interval_min=self.interval_min, interval_max=self.interval_max,
            full_epochs_per_cycle=self.full_epochs_per_cycle, final_full_share=self.final_full_share,
            greedy_full_scoring=self.greedy_full_scoring,
            rescore=self.rescore,
            infobatch_prune_ratio=self.infobatch_prune_ratio, infobatch_anneal=self.infobatch_anneal,
            seed=self.seed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Build from a dict (e.g. a JSON file), naming any unknown key."""
        if not isinstance(values, dict):
            raise ValueError(f"config: got {type(values).__name__}, expected a JSON object of TrainConfig fields")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"config: got unknown field {unknown[0]!r}, expected fields of TrainConfig: "
                             f"{', '.join(sorted(known))}")
        return cls(**values)

    @classmethod
    def from_json_file(cls, path: str) -> "TrainConfig":
        if not os.path.isfile(path):
            raise ValueError(f"config: got {path!r}, expected an existing JSON file")
        try:
            with open(path) as f:
                values = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"config: {path!r} is not valid JSON ({err})") from None
        return cls.from_dict(values)


def check_workdir(workdir) -> str:
    """`workdir` unchanged if a run could be written there; else a one-line ValueError naming it.

    Checked at the boundary, before JAX loads the data: an empty path (which
    would train into the current folder), a file, a path below a file, or a
    folder (or its nearest existing parent) this process may not write into.
    Creates nothing.
    """
    if not isinstance(workdir, (str, os.PathLike)) or not os.fspath(workdir).strip():
        raise ValueError(f"workdir: got {workdir!r}, expected a folder path (a new or existing run folder)")
    path = os.path.abspath(os.fspath(workdir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"workdir: got {os.fspath(workdir)!r}, expected a folder (it is a file)")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"workdir: got {os.fspath(workdir)!r}, expected a folder path, but {existing!r} "
                         f"is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"workdir: got {os.fspath(workdir)!r}, but {existing!r} is not writable")
    return os.fspath(workdir)


def field_help() -> dict[str, str]:
    """Each field's trailing comment in the source above: the CLI's help text, kept in one place."""
    source = inspect.getsource(TrainConfig)
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s+(\w+):[^#\n]*#\s*(.*)$", source, re.M)}


# ---------------------------------------------------------------------------- checks

def _number_or_name(value, kind):
    """A string holding a number becomes that number (CLI and JSON give "0.7" or 0.7 alike)."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if kind is int:
            if not number.is_integer():
                return value  # reported by the caller as not an int
            return int(number)
        return number
    if isinstance(value, bool):
        return value
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
          "str | float": (str, int, float), "str | int": (str, int)}


def _check_types(config) -> None:
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        kinds = _TYPES[field.type if isinstance(field.type, str) else _type_name(field.type)]
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise ValueError(f"{field.name}: got {value!r}, expected a value of type {_type_name(field.type)}")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _one_of(name, value, allowed, extra=""):
    if value not in allowed:
        raise ValueError(f"{name}: got {value!r}, expected one of {tuple(allowed)}{(' ' + extra) if extra else ''}")


def _at_least(name, value, lo):
    if value < lo:
        raise ValueError(f"{name}: got {value!r}, expected an int >= {lo}")


def _in_range(name, value, lo, hi, lo_open=False, hi_open=False):
    ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open or hi == math.inf else ']'}"
        raise ValueError(f"{name}: got {value!r}, expected a number in {interval}")
