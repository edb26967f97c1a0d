"""Timed training runs of the experiment scripts: `timed_run`, per-epoch training
time from step timestamps and compile events, and the persistent compilation cache.

Timing — what "training time" means in every table. The library's
``wall_time`` counts everything from the start of its loop: compilation, the
per-epoch evaluation and checkpoint. The experiments compare *training* cost,
so `timed_run` rebuilds it per epoch from the optimizer-step timestamps
(`train_and_evaluate`'s ``on_step`` hook), the library's scoring/selection
clocks and JAX's compile events (`jax.monitoring`):

    train_time(epoch) = steps + scoring + selection
    steps     = (t[last step] − t[first step]) · S / (S − 1)
    scoring   = Δ time_scoring   − compile time of the scoring function
    selection = Δ time_selecting − compile time of the teacher's kernels

The loop blocks on the first step of every epoch and fetches the metrics of the
last one, so both timestamps mark finished work; the first step (which
compiles in epoch 0) is charged at the epoch's mean step time. Evaluation,
checkpointing, data loading and all compilation are excluded (compile seconds
are reported separately). Evaluation happens once per epoch, so a "time to
reach accuracy a" has one-epoch resolution.

Compilation: `compile_cache` turns on JAX's persistent compilation cache for a
script's runs (a temporary folder unless ``--compile-cache DIR`` is given), so
repeated runs of one shape load their executables instead of compiling again.
It changes no number measured, only how long a script takes.

Example (what every script's ``run`` does per training run):
    >>> from attent_experiments import timing
    >>> # run = timing.timed_run(timing.mnist1d_config(cfg, seed=0, selection="soft"), "out/runs/soft")
    >>> # run["stages"]["train"]["train_time_s"], timing.final(run, "eval_accuracy")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from typing import Callable

import numpy as np

# jit names (as jax.monitoring reports them, without "jit(...)") whose compilation lands inside the
# library's scoring and selection clocks: the trainer's scoring pass and the teacher's planning kernels.
# The pass is training/scoring.py's order and per-chunk scorers since its split out of loop.py ("score"
# before): a name missing here charges its compilation to the measured scoring time.
_SCORING_FUNCTIONS = ("score", "scoring_order", "gather_chunk", "score_chunk")
_SELECTION_PREFIXES = ("_plan",)
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


# =========================================================================== compilation

@contextlib.contextmanager
def compile_cache(path: str | None = None):
    """Use JAX's persistent compilation cache inside the block (see the module docstring).

    A cache already configured by the caller is left as it is. Otherwise the
    previous settings are restored on exit and the cache is detached, so code
    running afterwards in the same process (e.g. other tests) is unaffected.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    if jax.config.jax_compilation_cache_dir:
        yield jax.config.jax_compilation_cache_dir
        return
    names = ("jax_persistent_cache_min_compile_time_secs", "jax_persistent_cache_min_entry_size_bytes")
    old = {n: getattr(jax.config, n) for n in names}
    tmp = None if path else tempfile.mkdtemp(prefix="attent_jax_cache_")
    cache_dir = os.path.abspath(path or tmp)
    os.makedirs(cache_dir, exist_ok=True)
    cc.reset_cache()
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    # Cache everything: the small programs here compile in well under the default 1 s threshold.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    try:
        yield cache_dir
    finally:
        cc.reset_cache()
        jax.config.update("jax_compilation_cache_dir", None)
        for n, v in old.items():
            jax.config.update(n, v)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


class CompileLog:
    """Records JAX compile events (trace, lowering, XLA compile) inside a ``with`` block.

    ``events``: (function name, seconds, perf_counter time at the event's end).
    """

    def __init__(self):
        self.events: list[tuple[str, float, float]] = []

    def _listener(self, event: str, duration: float, **kwargs):
        if event in _COMPILE_EVENTS:
            name = str(kwargs.get("fun_name", ""))
            if name.startswith("jit(") and name.endswith(")"):
                name = name[4:-1]
            self.events.append((name, float(duration), time.perf_counter()))

    def __enter__(self):
        from jax import monitoring
        monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        from jax import monitoring
        with contextlib.suppress(Exception):
            monitoring.unregister_event_duration_listener(self._listener)
        return False

    def total(self) -> float:
        return float(sum(d for _, d, _ in self.events))

    def by_function(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, d, _ in self.events:
            out[name] = out.get(name, 0.0) + d
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _is_scoring(name: str) -> bool:
    return name in _SCORING_FUNCTIONS


def _is_selection(name: str) -> bool:
    return name.startswith(_SELECTION_PREFIXES)


# =========================================================================== timed training runs

def turned(names, rep: int) -> list:
    """`names` turned left by `rep` places: the order of repetition `rep`, so a load that drifts within a
    repetition favours none of them."""
    names = list(names)
    k = rep % len(names)
    return names[k:] + names[:k]


def fresh_dir(path: str) -> str:
    """An empty folder at `path` (a previous run's folder there is removed: train_and_evaluate would resume it)."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)
    return path

def mnist1d_config(config, seed: int, **selection):
    """The `TrainConfig` of an MNIST-1D run of an experiment config (fields num_train, num_test, epochs,
    batch_size, learning_rate, width, depth, num_heads) with the given selection fields.

    Shared choices: no progress bar, one checkpoint at the end of the run (``checkpoint_epochs`` past any
    run's length: Orbax writes an epoch-end checkpoint in background threads during the next epoch, which on
    a CPU host slows that epoch's timed steps, more for a method with more, shorter epochs; experiments never
    resume, so those saves bought nothing and biased the clock; pass ``checkpoint_epochs=1`` where a
    caller reads every epoch's checkpoint), and the learning-rate schedule laid out over epochs (``lr_schedule_by="epochs"``, as the paper states it), so every method uses the same
    learning rate at a given epoch whatever its epoch sizes (and InfoBatch is supported fully).
    """
    from attent_jax.training.config import TrainConfig

    fields = dict(task="mnist1d", num_train=config.num_train, num_test=config.num_test, epochs=config.epochs,
                  batch_size=config.batch_size, learning_rate=config.learning_rate, width=config.width,
                  depth=config.depth, num_heads=config.num_heads, seed=seed, progress_bar=False,
                  checkpoint_every=10**9, checkpoint_epochs=10**6, log_every=50, lr_schedule_by="epochs")
    fields.update(selection)
    return TrainConfig.from_flat(**fields)


def scoring_passes(train_config) -> int:
    """Full scoring passes the run's teacher schedule asks for (host-side, from the library's schedule)."""
    from attent_jax.teaching.teacher import Teacher

    cfg = train_config.resolve()
    n = cfg.data.num_train
    if n < 1:
        raise ValueError(f"num_train: got {n}, expected the run's explicit training-set size")
    teacher = Teacher(cfg.teacher_config(), n,
                      labels=np.zeros(n, np.int32) if cfg.selection.selection == "class_weight" else None)
    return sum(p.needs_full_scoring for p in teacher.schedule(cfg.run.epochs))


def read_metrics(workdir: str) -> list[dict]:
    """The records of a run's metrics.jsonl (via the library's reader)."""
    from attent_jax.cli.plot import read_metrics as _read
    return _read(workdir)


def epoch_times(evals: list[dict], step_times: dict[int, float], compile_events, batch_size: int,
                examples_per_s: float | None = None) -> list[dict]:
    """Per-epoch training time (module docstring) from eval records, step timestamps and compile events.

    `evals`: the run's "eval" records in order (cumulative ``step``,
    ``time_scoring``, ``time_selecting``); `step_times`: step → perf_counter
    time of its ``on_step`` call; `compile_events`: (name, seconds, end time).
    An epoch of one step is charged the run's steady step time (the median
    over the other epochs, else ``batch_size / examples_per_s``).
    Returns one dict per eval record: epoch, stage, steps, steps_s, scoring_s,
    selection_s, compile_scoring_s, compile_selection_s, train_time_s (cumulative).
    """
    start = {"step": 0, "time_scoring": 0.0, "time_selecting": 0.0}
    firsts, steady = [], []   # per epoch: time of its first step; (t[last] − t[first], steps) when measurable
    for prev, r in zip([start] + evals[:-1], evals):
        s_first, s_last = prev["step"] + 1, r["step"]
        firsts.append(step_times.get(s_first) if s_last >= s_first else None)
        n = s_last - prev["step"]
        ok = n >= 2 and s_first in step_times and s_last in step_times
        steady.append((step_times[s_last] - step_times[s_first], n) if ok else None)
    per_step = [d / (n - 1) for d, n in filter(None, steady)]
    fallback = (float(np.median(per_step)) if per_step else
                batch_size / examples_per_s if examples_per_s else 0.0)

    # Each compile event belongs to the epoch whose first step comes next: it happened while that epoch
    # was planned (scoring, selection), or in its first step.
    def owner(t_end: float) -> int | None:
        for i, t_first in enumerate(firsts):
            if t_first is not None and t_end <= t_first:
                return i
        return None

    comp_score = [0.0] * len(evals)
    comp_select = [0.0] * len(evals)
    for name, dur, t_end in compile_events:
        i = owner(t_end)
        if i is None:
            continue
        if _is_scoring(name):
            comp_score[i] += dur
        elif _is_selection(name):
            comp_select[i] += dur

    rows, total = [], 0.0
    for i, (prev, r) in enumerate(zip([start] + evals[:-1], evals)):
        n = r["step"] - prev["step"]
        # Steps 2..S were timed; the first (blocked on, and compiling in epoch 0) is charged the epoch's mean.
        steps_s = steady[i][0] * n / (n - 1) if steady[i] else n * fallback
        d_score = r.get("time_scoring", 0.0) - prev.get("time_scoring", 0.0)
        d_select = r.get("time_selecting", 0.0) - prev.get("time_selecting", 0.0)
        scoring_s = max(0.0, d_score - comp_score[i])
        selection_s = max(0.0, d_select - comp_select[i])
        total += steps_s + scoring_s + selection_s
        rows.append({"epoch": r["epoch"], "stage": r.get("stage", "train"), "steps": n, "steps_s": steps_s,
                     "scoring_s": scoring_s, "selection_s": selection_s, "compile_scoring_s": comp_score[i],
                     "compile_selection_s": comp_select[i], "train_time_s": total})
    return rows


def timed_run(train_config, workdir: str, *, keep_checkpoints: bool = False,
              prepare: Callable[[str], None] | None = None) -> dict:
    """Train `train_config` from scratch in `workdir` (emptied first) and measure it (module docstring).

    Returns a JSON-able dict: ``config`` (resolved), ``result`` (what
    `train_and_evaluate` returned), ``epochs`` (per-epoch rows: the eval
    record's metrics plus the `epoch_times` columns), totals per stage
    (``stages``: train_time_s, steps_s, scoring_s, selection_s, examples_seen,
    fraction_seen), ``compile_s`` and ``compile_by_function``, and
    ``process_s`` (everything, data loading and compilation included), and
    ``load_average`` (the machine's 1/5/15-minute load at the run's start and
    end: a run measured on a busier machine is slower for no fault of its method).
    The checkpoints are deleted afterwards unless `keep_checkpoints`. `prepare(workdir)`, if given, runs
    on the emptied folder before training (e.g. to place a checkpoint the run then resumes from).
    """
    from attent_jax.training.loop import train_and_evaluate

    fresh_dir(workdir)
    if prepare is not None:
        prepare(workdir)
    step_times: dict[int, float] = {}

    def on_step(step: int) -> None:
        step_times[step] = time.perf_counter()

    load_start = _load_average()
    t0 = time.perf_counter()
    with CompileLog() as compiles:
        result = train_and_evaluate(train_config, workdir, on_step=on_step)
    process_s = time.perf_counter() - t0
    load_end = _load_average()
    if not keep_checkpoints:
        shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)

    evals = [r for r in read_metrics(workdir) if r.get("event") == "eval"]
    resolved = train_config.resolve()
    times = epoch_times(evals, step_times, compiles.events, resolved.run.batch_size, result.get("examples_per_s"))
    keys = ("step", "examples_seen", "fraction_selected", "eval_loss", "eval_accuracy", "exact_match", "train_loss")
    epochs = [{**t, **{k: r[k] for k in keys if k in r}} for r, t in zip(evals, times)]

    stages: dict[str, dict] = {}
    for row in epochs:
        st = stages.setdefault(row["stage"], {"epochs": 0, "steps_s": 0.0, "scoring_s": 0.0, "selection_s": 0.0,
                                              "steps": 0, "train_time_s": 0.0})
        st["epochs"] += 1
        st["steps"] += row["steps"]
        for k in ("steps_s", "scoring_s", "selection_s"):
            st[k] += row[k]
        st["train_time_s"] = st["steps_s"] + st["scoring_s"] + st["selection_s"]
        row["stage_time_s"] = st["train_time_s"]   # cumulative within the stage
    B = resolved.run.batch_size
    for name, st in stages.items():
        st["examples_seen"] = st["steps"] * B
        n = resolved.data.num_train if name in ("train", "finetune") else 0
        # Share of the examples an all-data run of the same epochs trains on (⌊N/B⌋·B per epoch: the
        # loop drops partial batches), so the all-data baseline is exactly 1.
        st["fraction_seen"] = st["examples_seen"] / (st["epochs"] * (n // B) * B) if n >= B else None
    return {"config": resolved.to_dict(), "result": result, "epochs": epochs, "stages": stages,
            "compile_s": compiles.total(), "compile_by_function": compiles.by_function(), "process_s": process_s,
            "load_average": {"start": load_start, "end": load_end}, "workdir": workdir}


def _load_average():
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def final(run: dict, key: str, stage: str | None = None) -> float:
    """The last epoch's value of `key` (within `stage` if given); NaN if absent."""
    rows = [r for r in run["epochs"] if stage is None or r["stage"] == stage]
    return float(rows[-1].get(key, float("nan"))) if rows else float("nan")


def time_to_target(run: dict, key: str, target: float, stage: str | None = None) -> dict:
    """The first epoch whose `key` ≥ `target`: its cumulative training time (within its stage), epoch, examples.

    Returns {"time_s", "epoch", "examples_seen"}; time NaN and the others None if never reached.
    """
    for r in run["epochs"]:
        if (stage is None or r["stage"] == stage) and key in r and r[key] >= target:
            return {"time_s": r["stage_time_s"], "epoch": r["epoch"], "examples_seen": r["examples_seen"]}
    return {"time_s": float("nan"), "epoch": None, "examples_seen": None}


# The two readings of "time to the target, relative to the baseline", named wherever they are printed.
TIME_RATIO_DEFINITIONS = {
    "vs_baseline_time_to_target": "method's time to the target / the all-data baseline's own time to the same "
                                  "target (mean over the baseline seeds that reach it): the headline",
    "vs_baseline_total_time": "method's time to the target / the baseline's whole training time (per seed): "
                              "flatters the method when the baseline reaches the target before its end",
}


def time_to_target_ratios(method_runs: list[dict], baseline_runs: list[dict], key: str, target: float,
                          stage: str | None = None) -> dict:
    """Both time-to-target ratios of a method against the baseline (`TIME_RATIO_DEFINITIONS`), per seed and mean.

    Runs are paired by position (seed). A method seed that never reaches `target` makes its ratio NaN and so
    the mean NaN (a miss); the baseline's own time to the target averages its seeds that reach it (the
    target is usually the baseline's mean final value, so its best seed always does).
    """
    return ratios_from_times([time_to_target(r, key, target, stage)["time_s"] for r in method_runs],
                             [time_to_target(r, key, target, stage)["time_s"] for r in baseline_runs],
                             [r["stages"][stage or "train"]["train_time_s"] for r in baseline_runs])


def ratios_from_times(t_method, t_base, total) -> dict:
    """`time_to_target_ratios` from per-seed times: the method's and the baseline's times to the target (NaN
    where unreached) and the baseline's whole training times."""
    reached = [t for t in t_base if np.isfinite(t)]
    own = float(np.mean(reached)) if reached else float("nan")
    out = {"definitions": TIME_RATIO_DEFINITIONS, "baseline_time_to_target_s": own,
           "baseline_seeds_reaching_target": len(reached)}
    for name, per_seed in (("vs_baseline_time_to_target", [t / own for t in t_method]),
                           ("vs_baseline_total_time", [t / b for t, b in zip(t_method, total)])):
        out[name] = float(np.mean(per_seed)) if per_seed else float("nan")
        out[name + "_per_seed"] = per_seed
    return out
