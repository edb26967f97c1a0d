"""A training run's configuration: one small frozen dataclass per concern, composed into `TrainConfig`.

- `DataConfig` (the task and its data; consumed by `training.stages.load_dataset`),
- `ModelConfig` (which model and its size; `training.stages.model_builder`),
- `SelectionConfig` (AtteNT selection, the CLI's view of the teacher; its
  `teacher_config` builds the `teaching.teacher.TeacherConfig` the teacher reads),
- `OptimConfig` (AdamW and its learning-rate schedule; `training.optim`),
- `RunConfig` (epochs, batch, devices, seeds and bookkeeping; `training.loop`).

`attent train` has one flag per field (``--batch-size`` ↔ ``run.batch_size``:
field names are unique across sections, so flat flags stay); ``--config FILE``
reads a JSON object, either nested by section (what a run folder's
``config.json`` holds) or flat (the layout before the split, still loaded);
an unknown field is a one-line error naming it. `TrainConfig.resolve` fills
the task-dependent defaults ("" or 0: the model and its width, the regime).

Selection follows the paper's two regimes (Appendix C): ``scratch`` (ViT
pre-training: Soft selection, a ratio growing from 20% to 80%, re-selection at
a growing interval) and ``finetune`` (LLM fine-tuning: all data in epoch 1, then
the top 70% by loss). ``--selection none`` is the "w/o AtteNT" baseline.
``ratio`` and ``interval`` take a schedule name *or* a number: ``--ratio
cosine`` (from ``ratio_start`` to ``ratio_end``) and ``--ratio 0.7`` both work.

Learning-rate schedule and shrinking epochs: AdamW with linear warm-up and
cosine decay (Appendix C). With selection an epoch holds fewer optimizer steps
than N / batch_size, so a schedule laid out over ``epochs × N / batch_size``
steps would never finish decaying. ``lr_schedule_by="steps"`` (default) lays it
out over the *planned* number of optimizer steps, which the teacher's host-side
schedule knows exactly before training starts (Σ_epochs ⌊n_active / batch⌋).
``lr_schedule_by="epochs"`` gives every epoch an equal share of the schedule,
as the paper states its schedule in epochs (40 warm-up epochs of 800). The two
agree without selection. InfoBatch decides its epoch sizes on device, so under
"steps" its epochs are planned as full ones and the run ends before the decay
does (`training.stages.warn_lr_schedule` warns once); use "epochs" with infobatch.

Example:
    >>> from attent_jax.training.config import TrainConfig
    >>> cfg = TrainConfig.from_flat(task="mnist1d", selection="soft", ratio="cosine", epochs=30).resolve()
    >>> cfg.model.model, cfg.selection.regime, cfg.teacher_config().ratio_schedule
    ('encoder', 'scratch', 'cosine')
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import re

from attent_jax.tasks.generators import check_mnist1d_patch_size
from attent_jax.teaching import schedules, selection
from attent_jax.teaching.teacher_config import REGIMES, TeacherConfig
from attent_jax.training._checks import at_least, check_types, in_range, int_in_range, number_or_name, one_of

TASKS = ("teach", "mnist1d", "charlm", "arith")
MODELS = ("attention", "encoder", "decoder")
# A user's model factory by import path (`attent train --model package.module:factory`; stages.load_factory).
FACTORY_PATTERN = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*"
SELECTIONS = ("none",) + tuple(selection.SELECTORS)
SCORES = ("loss", "discrepancy")
OBJECTIVES = ("supervised", "mae")
# The scoring pass's forward precision (attent_jax.training.scoring); float32 = the paper's full rescoring.
SCORE_DTYPES = ("float32", "bfloat16")
LR_SCHEDULE_BY = ("steps", "epochs")
DATA_PLACEMENTS = ("device", "host")   # training.host_data
# The largest seed: jax.random.PRNGKey keeps only the low 32 bits of a seed (without x64, 2**32 gives seed 0's
# key, so two "different" runs would be the same run) and raises OverflowError past int64.
SEED_MAX = 2**32 - 1

# The model each task trains (the only one whose inputs and outputs fit it).
TASK_MODEL = {"teach": "attention", "mnist1d": "encoder", "charlm": "decoder", "arith": "decoder"}
# The peak learning rate when the field is 0: full runs, and with --quick per task. The mnist1d quick run is
# a newcomer's first one, so it must visibly learn: at 1e-3 with 400 examples its 76 steps stayed near chance
# (19% test accuracy after 30 epochs); 2000 examples (tasks/datasets.py) at 5e-3 reach ~65% in ~440 steps.
_LEARNING_RATE = 1e-3
_QUICK_LEARNING_RATE = {"mnist1d": 5e-3}
# batch_size and checkpoint_epochs when the field is 0, and the tasks whose --quick run differs. The mnist1d
# quick run is short on steps, not on data: batch 32 doubles its steps at the same examples (~64% over seeds
# 0-4 against ~55% at 64), and its 30 tiny epochs spent ~0.1 s each on an epoch-end checkpoint (~3 s of a
# ~17 s run), so it saves every 10th epoch (and the last).
_RUN_DEFAULTS = {"batch_size": 64, "checkpoint_epochs": 1}
_QUICK_RUN_DEFAULTS = {"mnist1d": {"batch_size": 32, "checkpoint_epochs": 10}}
# model -> (width, depth, num_heads) defaults, full and quick; for "attention" width is d' (= d_qk).
_MODEL_SIZES = {"attention": ((16, 1, 1), (8, 1, 1)),
                "encoder": ((64, 2, 4), (32, 1, 2)),
                "decoder": ((128, 2, 4), (32, 1, 2))}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    task: str = "mnist1d"          # teach | mnist1d | charlm | arith
    quick: bool = False            # use the task's quick (test-sized) data and model defaults
    text_file: str = ""            # UTF-8 text for charlm, and for arith's pre-training stage
    num_train: int = 0             # training examples (questions, windows); 0 = the task's default
    num_test: int = 0              # held-out examples; 0 = the task's default
    context: int = 0               # charlm/arith token context T; 0 = the task's default

    def __post_init__(self):
        check_types(self)
        one_of("task", self.task, TASKS)
        for name in ("num_train", "num_test", "context"):
            at_least(name, getattr(self, name), 0)
        if self.text_file and not os.path.isfile(self.text_file):
            raise ValueError(f"text_file: got {self.text_file!r}, expected an existing text file")
        if self.task == "charlm" and not self.text_file:
            raise ValueError("text_file: got '', expected a text file to model for task 'charlm'")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    model: str = ""                # attention | encoder | decoder, or package.module:factory (your own; README); "" = the task's model
    width: int = 0                 # model width (d' for the attention learner); 0 = model default
    depth: int = 0                 # Transformer blocks (encoder/decoder); 0 = model default
    num_heads: int = 0             # attention heads; 0 = model default
    patch_size: int = 0            # encoder patch length; 0 = the model default (4)
    objective: str = "supervised"  # supervised (the task's loss) | mae (masked-autoencoder pre-training of the encoder, mnist1d; models/mae.py)
    mask_ratio: float = 0.75       # mae: share of each example's patches masked and reconstructed (MAE: 0.75)
    decoder_width: int = 0         # mae: width of the light decoder; 0 = the encoder's width
    decoder_depth: int = 1         # mae: decoder blocks
    norm_pix_loss: bool = False    # mae: reconstruct patches normalized to zero mean, unit variance (MAE's option)
    mask_seed: int = 0             # mae: example i's mask is drawn from fold_in(key(mask_seed), i), fixed for the run; 0 .. 2**32 - 1
    lora_rank: int = 0             # LoRA: rank r of adapters on every linear layer (alpha = r), trained alone in the last (fine-tuning) stage with the base frozen; 0 = off, train all params

    def __post_init__(self):
        check_types(self)
        if not re.fullmatch(FACTORY_PATTERN, self.model):
            one_of("model", self.model, ("",) + MODELS, "or an import path package.module:factory")
        for name in ("width", "depth", "num_heads", "patch_size", "decoder_width", "lora_rank"):
            at_least(name, getattr(self, name), 0)
        int_in_range("mask_seed", self.mask_seed, 0, SEED_MAX)
        at_least("decoder_depth", self.decoder_depth, 1)
        one_of("objective", self.objective, OBJECTIVES)
        in_range("mask_ratio", self.mask_ratio, 0.0, 1.0, lo_open=True, hi_open=True)


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
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
    first_epoch: str = "select"    # scratch: select (the paper: score at init, train on the selected share) | full
    full_epochs_per_cycle: int = 0  # scratch: all-data epochs closing each selection cycle
    final_full_share: float = 0.0  # scratch: the last share of epochs on all data (0 = the paper; our variant)
    greedy_full_scoring: bool = True  # every_epoch: re-score all examples before each selection
    rescore: str = "all"           # a scoring pass scores all examples (paper) | unselected | unseen (cheaper variants)
    score_dtype: str = "float32"   # precision of the scoring passes' forward: float32 (paper) | bfloat16 (cheaper)
    infobatch_prune_ratio: float = 0.5  # infobatch: share of below-mean examples pruned per epoch
    infobatch_anneal: float = 0.125  # infobatch: final share of epochs on all data

    def __post_init__(self):
        ratio, interval = number_or_name(self.ratio, float), number_or_name(self.interval, int)
        object.__setattr__(self, "ratio", ratio)
        object.__setattr__(self, "interval", interval)
        check_types(self)
        one_of("selection", self.selection, SELECTIONS)
        one_of("score", self.score, SCORES)
        one_of("score_dtype", self.score_dtype, SCORE_DTYPES)
        one_of("regime", self.regime, ("",) + REGIMES)
        if isinstance(ratio, str):
            one_of("ratio", ratio, schedules.RATIO_SCHEDULES, "or a number in (0, 1]")
        elif not (math.isfinite(ratio) and 0.0 < ratio <= 1.0):
            raise ValueError(f"ratio: got {ratio!r}, expected a number in (0, 1] or one of {schedules.RATIO_SCHEDULES}")
        if isinstance(interval, str):
            one_of("interval", interval, schedules.INTERVAL_SCHEDULES, "or an int >= 1")
        elif interval < 1:
            raise ValueError(f"interval: got {interval!r}, expected an int >= 1 or one of {schedules.INTERVAL_SCHEDULES}")
        for name in ("ratio_fixed", "ratio_start", "ratio_end"):
            in_range(name, getattr(self, name), 0.0, 1.0, lo_open=True)
        for name in ("interval_fixed", "interval_min", "interval_max"):
            at_least(name, getattr(self, name), 1)
        at_least("full_epochs_per_cycle", self.full_epochs_per_cycle, 0)
        in_range("final_full_share", self.final_full_share, 0.0, 1.0, hi_open=True)
        in_range("temperature", self.temperature, 0.0, math.inf, lo_open=True)
        self.teacher_config("scratch", 0)  # the teacher's own checks, as a backstop

    def teacher_config(self, regime: str, seed: int) -> TeacherConfig:
        """The `TeacherConfig` of this selection under `regime` (its selector is unused under "full")."""
        ratio, interval = self.ratio, self.interval
        return TeacherConfig(
            regime=regime, selector="random" if self.selection == "none" else self.selection,
            temperature=self.temperature, normalize_scores=self.normalize_scores,
            ratio_schedule=ratio if isinstance(ratio, str) else "fixed",
            ratio=self.ratio_fixed if isinstance(ratio, str) else float(ratio),
            ratio_start=self.ratio_start, ratio_end=self.ratio_end,
            interval_schedule=interval if isinstance(interval, str) else "fixed",
            interval=self.interval_fixed if isinstance(interval, str) else int(interval),
            interval_min=self.interval_min, interval_max=self.interval_max,
            first_epoch=self.first_epoch,
            full_epochs_per_cycle=self.full_epochs_per_cycle, final_full_share=self.final_full_share,
            greedy_full_scoring=self.greedy_full_scoring, rescore=self.rescore,
            infobatch_prune_ratio=self.infobatch_prune_ratio, infobatch_anneal=self.infobatch_anneal, seed=seed)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    learning_rate: float = 0.0     # peak learning rate; 0 = 1e-3 (quick: the task's)
    weight_decay: float = 0.05     # AdamW decoupled weight decay on matrices (ViT runs: 0.05)
    b1: float = 0.9                # Adam β1
    b2: float = 0.95               # Adam β2 (ViT runs: 0.95)
    eps: float = 1e-8              # Adam ε
    warmup_ratio: float = 0.05     # share of the schedule spent in linear warm-up (ViT: 40/800)
    min_lr_ratio: float = 0.0      # final learning rate as a share of the peak
    lr_schedule_by: str = "steps"  # steps | epochs: what the schedule is laid out over (module docstring); use epochs with infobatch, whose pruned epochs "steps" plans as full ones
    grad_clip: float = 0.0         # clip the global gradient norm to this; 0 = off

    def __post_init__(self):
        check_types(self)
        one_of("lr_schedule_by", self.lr_schedule_by, LR_SCHEDULE_BY)
        in_range("learning_rate", self.learning_rate, 0.0, math.inf)
        in_range("weight_decay", self.weight_decay, 0.0, math.inf)
        in_range("b1", self.b1, 0.0, 1.0, hi_open=True)
        in_range("b2", self.b2, 0.0, 1.0, hi_open=True)
        in_range("eps", self.eps, 0.0, math.inf, lo_open=True)
        in_range("warmup_ratio", self.warmup_ratio, 0.0, 1.0, hi_open=True)
        in_range("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        in_range("grad_clip", self.grad_clip, 0.0, math.inf)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    epochs: int = 30               # training epochs (the fine-tuning stage's, for arith)
    pretrain_epochs: int = 2       # arith: epochs of next-char pre-training on text_file first (0 = none)
    batch_size: int = 0            # global batch, split over devices; the last partial batch is dropped; 0 = 64 (mnist1d --quick: 32)
    eval_batch_size: int = 256     # chunk of the scoring and evaluation passes (rounded up to the device count)
    fsdp: bool = False             # shard big params and optimizer state over the "data" axis
    data_placement: str = "device"  # device (whole dataset copied to every device, gathered there) | host (stays on the host; each process reads its devices' rows)
    prefetch: int = 2              # host placement: training blocks (and scoring/eval chunks) read and copied ahead by a thread
    host_block: int = 8            # host placement: training batches per host->device copy (one copy feeds this many steps)
    fsdp_min_size: int = 16384     # params with fewer elements stay replicated under fsdp
    seed: int = 0                  # seeds the model init, the teacher and the data order; 0 .. 2**32 - 1
    log_every: int = 20            # fetch metrics, log and check for NaN every this many steps (3 steps late, see loop.LOG_LAG)
    checkpoint_every: int = 200    # save a checkpoint every this many steps (and at epoch ends: checkpoint_epochs)
    checkpoint_epochs: int = 0     # also save at the end of every this-many-th epoch and of each stage's last; 0 = 1 (mnist1d --quick: 10)
    keep_checkpoints: int = 3      # checkpoints kept on disk
    progress_bar: bool = True      # show a tqdm progress bar
    coordinator: str = ""          # multi-process: HOST:PORT of process 0's coordinator ("" = one process, or SLURM/MPI/TPU detection)
    num_processes: int = 0         # multi-process: how many processes join (with coordinator and process_id)
    process_id: int = -1           # multi-process: this process's index, 0 .. num_processes-1 (process 0 writes logs)

    def __post_init__(self):
        check_types(self)
        from attent_jax.training.mesh import check_coordinator  # mesh imports JAX; config stays light until here
        check_coordinator(self.coordinator, self.num_processes, self.process_id)
        for name in ("epochs", "eval_batch_size", "log_every", "checkpoint_every", "keep_checkpoints",
                     "fsdp_min_size"):
            at_least(name, getattr(self, name), 1)
        for name in ("pretrain_epochs", "batch_size", "checkpoint_epochs"):
            at_least(name, getattr(self, name), 0)
        int_in_range("seed", self.seed, 0, SEED_MAX)
        one_of("data_placement", self.data_placement, DATA_PLACEMENTS)
        at_least("prefetch", self.prefetch, 1)
        at_least("host_block", self.host_block, 1)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "selection": SelectionConfig, "optim": OptimConfig,
            "run": RunConfig}
# flat field name -> its section (names are unique across sections: one flag per field)
FIELD_SECTION = {f.name: section for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
assert len(FIELD_SECTION) == sum(len(dataclasses.fields(c)) for c in SECTIONS.values()), "a field name repeats"
# Fields that change only what a run shows, how often it saves, or how its processes meet, never its numbers.
RESUME_MAY_CHANGE = ("progress_bar", "log_every", "checkpoint_every", "checkpoint_epochs", "keep_checkpoints",
                     "coordinator", "num_processes", "process_id", "prefetch", "host_block")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = DataConfig()                  # the task and its data
    model: ModelConfig = ModelConfig()               # which model, how big
    selection: SelectionConfig = SelectionConfig()   # AtteNT selection (the teacher)
    optim: OptimConfig = OptimConfig()               # AdamW and the learning-rate schedule
    run: RunConfig = RunConfig()                     # epochs, batch, devices, seed, bookkeeping

    def __post_init__(self):
        for section, cls in SECTIONS.items():
            if not isinstance(getattr(self, section), cls):
                raise ValueError(f"{section}: got {type(getattr(self, section)).__name__}, expected {cls.__name__}")
        d, m, s = self.data, self.model, self.selection
        # Checks that read two sections.
        if s.score == "discrepancy" and d.task != "teach":
            raise ValueError(f"score: got 'discrepancy' for task {d.task!r}, expected the regression task 'teach' "
                             "(classification and LM tasks score by loss)")
        if m.model in MODELS and m.model != TASK_MODEL[d.task]:
            raise ValueError(f"model: got {m.model!r}, expected {TASK_MODEL[d.task]!r} for task {d.task!r}")
        if m.objective == "mae" and (d.task != "mnist1d" or m.model not in ("", "encoder")):
            raise ValueError(f"objective: got 'mae' for task {d.task!r} and model {m.model or 'default'!r}, expected "
                             "task 'mnist1d' with its encoder (MAE pre-trains the ViT-style encoder)")
        if d.task == "mnist1d" and m.patch_size:
            # Checked here, not only by the encoder, so the error comes before any data is generated.
            check_mnist1d_patch_size(m.patch_size)
        if m.lora_rank and (m.model or TASK_MODEL[d.task]) in MODELS and (m.model or TASK_MODEL[d.task]) != "decoder":
            raise ValueError(f"lora_rank: got {m.lora_rank} for task {d.task!r} (model {TASK_MODEL[d.task]!r}), "
                             "expected 0 or a decoder task (arith, charlm)")
        if d.task == "arith" and self.run.pretrain_epochs and not d.text_file:
            raise ValueError(f"text_file: got '', expected a text file for arith's {self.run.pretrain_epochs} "
                             f"pre-training epochs (or pretrain_epochs=0)")

    # -- building

    @classmethod
    def from_flat(cls, **fields) -> "TrainConfig":
        """From flat field names (the CLI's flags, the pre-split config.json), naming any unknown one."""
        unknown = sorted(set(fields) - set(FIELD_SECTION))
        if unknown:
            raise ValueError(f"config: got unknown field {unknown[0]!r}, expected fields of TrainConfig: "
                             f"{', '.join(sorted(FIELD_SECTION))}")
        parts = {section: {} for section in SECTIONS}
        for name, value in fields.items():
            parts[FIELD_SECTION[name]][name] = value
        return cls(**{section: SECTIONS[section](**values) for section, values in parts.items()})

    def replace(self, **fields) -> "TrainConfig":
        """A copy with flat fields changed (``cfg.replace(epochs=3, selection="none")``)."""
        return TrainConfig.from_flat(**{**self.to_flat(), **fields})

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """From a JSON object: nested by section (this layout) or flat (the layout before the split)."""
        if not isinstance(values, dict):
            raise ValueError(f"config: got {type(values).__name__}, expected a JSON object of TrainConfig fields")
        if values and all(isinstance(v, dict) for v in values.values()):
            unknown = sorted(set(values) - set(SECTIONS))
            if unknown:
                raise ValueError(f"config: got unknown section {unknown[0]!r}, expected {', '.join(SECTIONS)}")
            flat = {}
            for section, part in values.items():
                wrong = sorted(set(part) - {f.name for f in dataclasses.fields(SECTIONS[section])})
                if wrong:
                    raise ValueError(f"config: got unknown field {section}.{wrong[0]}, expected fields of "
                                     f"{SECTIONS[section].__name__}")
                flat.update(part)
            return cls.from_flat(**flat)
        return cls.from_flat(**values)

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

    # -- views

    def to_flat(self) -> dict:
        return {k: v for section in SECTIONS for k, v in dataclasses.asdict(getattr(self, section)).items()}

    def to_dict(self) -> dict:
        return {section: dataclasses.asdict(getattr(self, section)) for section in SECTIONS}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def regime(self) -> str:
        if self.selection.selection == "none":
            return "full"
        return self.selection.regime or ("finetune" if self.data.task == "arith" else "scratch")

    def teacher_config(self) -> TeacherConfig:
        """The `TeacherConfig` of the run's main stage."""
        return self.selection.teacher_config(self.regime(), self.run.seed)

    def resolve(self) -> "TrainConfig":
        """The same config with every task-dependent default ("" or 0) filled in."""
        d, m = self.data, self.model
        model = m.model or TASK_MODEL[d.task]
        # A user's factory gets the sizes of the task's own model when the flags leave them at 0.
        width, depth, heads = _MODEL_SIZES[model if model in MODELS else TASK_MODEL[d.task]][1 if d.quick else 0]
        # An absolute text path: a run resumed from another working directory finds the same file.
        text_file = os.path.abspath(d.text_file) if d.text_file else ""
        lr = _QUICK_LEARNING_RATE.get(d.task, _LEARNING_RATE) if d.quick else _LEARNING_RATE
        run_defaults = {**_RUN_DEFAULTS, **(_QUICK_RUN_DEFAULTS.get(d.task, {}) if d.quick else {})}
        run = dataclasses.replace(self.run, **{k: getattr(self.run, k) or v for k, v in run_defaults.items()})
        return dataclasses.replace(
            self, data=dataclasses.replace(d, text_file=text_file), run=run,
            optim=dataclasses.replace(self.optim, learning_rate=self.optim.learning_rate or lr),
            model=dataclasses.replace(m, model=model, width=m.width or width, depth=m.depth or depth,
                                      num_heads=m.num_heads or heads),
            selection=dataclasses.replace(self.selection, regime=self.regime()))


def field_help() -> dict[str, str]:
    """Each field's trailing comment in the sections above: the CLI's help text, kept in one place."""
    helps = {}
    for cls in SECTIONS.values():
        source = inspect.getsource(cls)
        helps.update({m.group(1): m.group(2).strip()
                      for m in re.finditer(r"^\s+(\w+):[^#\n]*#\s*(.*)$", source, re.M)})
    return helps


def field_defaults() -> dict[str, dataclasses.Field]:
    """Flat field name -> its dataclass field (type and default), for the CLI."""
    return {f.name: f for cls in SECTIONS.values() for f in dataclasses.fields(cls)}
