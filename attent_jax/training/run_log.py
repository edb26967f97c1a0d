"""The host-side side of a training run: its clock, timers, metrics log, progress bar and NaN stop.

`Session` is the bookkeeping of one `attent_jax.training.loop.Trainer.run`; `MetricsLog`
writes the run folder's JSON lines. Nothing here touches device arrays except
`Session.flush`, which fetches the pending step metrics by an explicit
``jax.device_get``.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING

import jax
import numpy as np

from attent_jax.training.checkpoint import Checkpointer

if TYPE_CHECKING:
    from attent_jax.training.config import RunConfig

# The run's clock: global step; stage, epoch and position in it; the epoch's planned steps; steps of the
# stage so far; whether the current epoch has been planned. Kept here only, saved in each checkpoint's meta.
CLOCK = ("step", "stage", "epoch", "pos", "steps_in_epoch", "stage_step", "planned")
# What a train step returns, in this order, as one float32 array (finite: 1.0 if the loss and params are).
STEP_METRICS = ("loss", "accuracy", "lr", "finite")


def new_clock() -> dict:
    return {k: 0 for k in CLOCK}


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss or parameters; the run stopped, its last checkpoint is good."""


class NonFiniteScoreError(NonFiniteLossError):
    """A scoring pass produced NaN/Inf per-example scores; the run stopped before ranking them."""


class Session:
    """Host-side bookkeeping of one `Trainer.run`: the clock, counters, timers, logs and checkpoints.

    The clock (`CLOCK`) exists here only: the loop decides what to do next from
    it without fetching anything, and hands each train step the entries it
    reads. It and the counters that are not part of the training state (wall
    time, examples seen, scoring/selection time, the running epoch loss) travel
    in each checkpoint's JSON meta.
    """

    def __init__(self, config: "RunConfig", learning_rate: float, stage_epochs: list[int], total_steps: int,
                 ckpt: Checkpointer, log: "MetricsLog", meta: dict, resumed: bool):
        # The run's config is read for what it shows (batch, progress bar); the lr is named in a NaN stop.
        self.config, self.learning_rate, self.ckpt, self.log = config, learning_rate, ckpt, log
        self.clock = {k: int(v) for k, v in meta.get("clock", new_clock()).items()}
        # The checkpoint's clock says how many epochs it has evaluated: an epoch without optimizer steps
        # logs its eval record at the same step as the epoch before, so the step alone cannot tell.
        evals = sum(stage_epochs[:self.clock["stage"]]) + self.clock["epoch"]
        log.truncate_after(self.clock["step"] if resumed else -1, evals=evals if resumed else 0)
        self.totals = {k: float(meta.get(k, 0.0)) for k in ("wall_time", "time_scoring", "time_selecting")}
        self.examples_seen = int(meta.get("examples_seen", 0))
        self.n_active = int(meta.get("n_active", 0))
        self.last_saved = self.clock["step"] if resumed else None
        # Training losses of the current epoch so far, for the epoch-mean in its eval record.
        self.epoch_loss = {"sum": 0.0, "count": 0}
        if self.clock["planned"]:  # resumed mid-epoch
            self.epoch_loss.update(meta.get("epoch_loss", {}))
        self._start = time.perf_counter() - self.totals["wall_time"]
        self.pending: list = []  # (step, metrics still on device) per step not yet flushed
        self._window_start = time.perf_counter()   # since the last flush (or the epoch's start)
        self._timed = {"examples": 0, "seconds": 0.0, "since": None}
        self.bar = progress_bar(config.progress_bar and jax.process_index() == 0, total_steps, self.clock["step"])

    def wall(self) -> float:
        return time.perf_counter() - self._start

    def start_window(self) -> None:
        self._window_start = time.perf_counter()

    def start_timer(self) -> None:
        self._timed["since"] = time.perf_counter()

    def stop_timer(self) -> None:
        if self._timed["since"] is not None:
            self._timed["seconds"] += time.perf_counter() - self._timed["since"]
            self._timed["since"] = None

    def throughput(self) -> float | None:
        """Training examples per second over this session's steps, excluding each epoch's first (compiling) one."""
        return self._timed["examples"] / self._timed["seconds"] if self._timed["seconds"] else None

    def step_done(self, metrics, compiled: bool) -> None:
        batch = self.config.batch_size
        self.clock.update(step=self.clock["step"] + 1, pos=self.clock["pos"] + 1,
                          stage_step=self.clock["stage_step"] + 1)
        self.pending.append((self.clock["step"], metrics))
        self.examples_seen += batch
        if compiled:
            self._timed["examples"] += batch
        self.bar.update(1)

    def save(self, state) -> None:
        meta = dict(self.totals, wall_time=self.wall(), examples_seen=self.examples_seen, n_active=self.n_active,
                    epoch_loss=dict(self.epoch_loss), clock=dict(self.clock))
        self.ckpt.save(self.clock["step"], state, meta)
        self.last_saved = self.clock["step"]

    def check_scores(self, stage, epoch: int, non_finite: int) -> None:
        """Stop before the teacher ranks a scoring pass that gave `non_finite` NaN/Inf scores."""
        if non_finite:
            raise NonFiniteScoreError(
                f"a scoring pass gave {non_finite} non-finite (NaN/Inf) per-example scores before epoch {epoch} "
                f"of stage {stage.name!r}; stopped: {self._last_good()}. Lower --learning-rate "
                f"(got {self.learning_rate}) or set --grad-clip.")

    def _last_good(self) -> str:
        return (f"the last good checkpoint is step {self.last_saved} in {self.ckpt.directory}"
                if self.last_saved is not None else "no checkpoint was saved")

    def flush(self, stage, through: int | None = None) -> None:
        """Fetch the pending metrics of steps up to `through` (all if None), stop on NaN/Inf, log, update the bar.

        The loop fetches a log_every-th step's metrics a few steps later (while
        the device still has those steps queued): fetching the newest step
        would idle the device while the host reads and writes the record, which
        cost small models a few per cent of their step rate. The fetched steps
        are logged as one record per log_every-th step they cross (and one for
        the rest), so a record's step, examples and losses do not depend on how
        late its steps were fetched (its wall time and rate do).
        """
        n = len(self.pending) if through is None else sum(1 for step, _ in self.pending if step <= through)
        if n == 0:
            return
        # Each step's metrics are one array (STEP_METRICS): fetching is one transfer per step.
        steps = [step for step, _ in self.pending[:n]]
        values = [dict(zip(STEP_METRICS, v.tolist())) for v in jax.device_get([m for _, m in self.pending[:n]])]
        del self.pending[:n]
        bad = [i for i, v in enumerate(values) if not bool(v["finite"])]
        if bad:
            raise NonFiniteLossError(
                f"training loss became {float(values[bad[0]]['loss'])} (or the parameters non-finite) at step "
                f"{steps[bad[0]]}, epoch {self.clock['epoch']}; stopped: {self._last_good()}. Lower --learning-rate "
                f"(got {self.learning_rate}) or set --grad-clip.")
        now = time.perf_counter()
        # The fetched steps' examples over the time since the last flush (steps dispatched but not yet fetched
        # are counted by the next flush).
        rate = len(steps) * self.config.batch_size / max(now - self._window_start, 1e-9)
        self._window_start = now
        every, start = self.config.log_every, 0
        for i, step in enumerate(steps):
            if step % every == 0 or i + 1 == len(steps):
                self._record(stage, steps[i], values[start:i + 1], rate)
                start = i + 1

    def _record(self, stage, step: int, values: list[dict], rate: float) -> None:
        for v in values:  # one at a time: the same sum whatever the flush boundaries
            self.epoch_loss["sum"] += float(v["loss"])
            self.epoch_loss["count"] += 1
        loss = float(np.mean([v["loss"] for v in values]))
        acc = float(np.mean([v["accuracy"] for v in values]))
        selected = self.n_active / stage.num_train
        # The examples seen up to `step`: later steps may already be counted (dispatched, not yet fetched).
        seen = self.examples_seen - (self.clock["step"] - step) * self.config.batch_size
        record = {"event": "train", "step": step, "stage": stage.name, "epoch": self.clock["epoch"],
                  "wall_time": self.wall(), "examples_seen": seen, "train_loss": loss,
                  "lr": float(values[-1]["lr"]), "fraction_selected": selected, "examples_per_s": rate,
                  **self._timings()}
        postfix = {"loss": f"{loss:.4g}", "sel": f"{selected:.0%}", "ex/s": f"{rate:.0f}"}
        if stage.has_accuracy:
            record["train_accuracy"] = acc
            postfix["acc"] = f"{acc:.3f}"
        self.log.write(record)
        self.bar.set_postfix(postfix, refresh=False)

    def log_eval(self, stage, epoch: int, metrics: dict) -> None:
        record = {"event": "eval", "step": self.clock["step"], "stage": stage.name, "epoch": epoch,
                  "wall_time": self.wall(), "examples_seen": self.examples_seen,
                  "fraction_selected": self.n_active / stage.num_train, **self._timings(), **metrics}
        if self.epoch_loss["count"]:
            record["train_loss"] = self.epoch_loss["sum"] / self.epoch_loss["count"]
        self.epoch_loss.update(sum=0.0, count=0)
        self.log.write(record)
        self.bar.write(eval_line(record))

    def _timings(self) -> dict:
        return {"time_scoring": self.totals["time_scoring"], "time_selecting": self.totals["time_selecting"]}


class MetricsLog:
    """Append-only JSON lines; a resumed run first drops records newer than its checkpoint."""

    def __init__(self, path: str, enabled: bool):
        self.path, self.enabled, self._file = path, enabled, None

    def truncate_after(self, step: int, evals: int | None = None) -> None:
        """Keep the records of steps <= `step` and, if `evals` is given, only the first `evals` eval records."""
        if not self.enabled:
            return
        kept = []
        seen_evals = 0
        if os.path.exists(self.path):
            with open(self.path) as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut short by a kill
                    if record.get("step", 0) > step:
                        continue
                    if record.get("event") == "eval":
                        seen_evals += 1
                        if evals is not None and seen_evals > evals:
                            continue
                    kept.append(line if line.endswith("\n") else line + "\n")
        write_atomic(self.path, "".join(kept))
        self._file = open(self.path, "a")

    def write(self, record: dict) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def eval_line(record: dict) -> str:
    parts = [f"{record['stage']} epoch {record['epoch'] + 1}: eval_loss {record['eval_loss']:.4f}"]
    for key in ("eval_accuracy", "exact_match"):
        if key in record:
            parts.append(f"{key} {record[key]:.3f}")
    parts.append(f"selected {record['fraction_selected']:.0%}")
    return ", ".join(parts)


_warned: set = set()


def warn_once(message: str) -> None:
    import warnings
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


class _NoBar:
    def update(self, n=1): pass
    def set_postfix(self, *a, **k): pass
    def set_description(self, *a, **k): pass
    def write(self, s): pass
    def close(self): pass


def progress_bar(enabled: bool, total: int, initial: int):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
