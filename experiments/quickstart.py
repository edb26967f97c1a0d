"""A newcomer's first run, timed: ``attent train --task mnist1d --quick`` as the README gives it.

The target (trust issue): the first run shows learning, >= 60% test accuracy
(chance: 10%), in under 15 s of wall-clock time for the whole command on a quiet
machine (imports, MNIST-1D generation, compilation, training, evaluation,
checkpoints: everything a newcomer waits for). The command runs in a fresh
process each time, so nothing is warm except the operating system's file cache.

Variants, run interleaved (one of each per repetition, so drifting machine load
favours neither), each in a fresh run folder:

- ``readme``: the README's command, nothing overridden;
- ``batch64``: the quick defaults before this change (``--batch-size 64
  --checkpoint-epochs 1``: half the steps, a checkpoint at each of the 30 epoch
  ends), for the ratio measured in the same run.

Reported per variant, median over repetitions: the command's wall time, its
CPU time (user + system of the child process: on a loaded machine a rough
stand-in for the quiet wall time, which it overstates when JAX runs threads in
parallel), the in-run wall time from results.json, test accuracy; the 1-minute
load average before each command. The verdict reads the ``readme`` variant.

Outputs (``--out``, default experiments/results/quickstart): quickstart.json,
quickstart.md.

Run:
    python -m experiments.quickstart [--quick] [--repeats 3]
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from . import common
from .stats import markdown_table, verdict

NAME = "quickstart"
README_COMMAND = ["train", "--task", "mnist1d", "--quick"]
VARIANTS = {"readme": [], "batch64": ["--batch-size", "64", "--checkpoint-epochs", "1"]}
TARGET_ACCURACY, TARGET_SECONDS = 0.6, 15.0


@dataclasses.dataclass(frozen=True)
class Config:
    repeats: int = 3                          # repetitions of each variant (interleaved)
    variants: tuple = ("readme", "batch64")   # which variants to run (readme, batch64)
    extra_args: tuple = ()                    # flags appended to every command (the smoke test shortens the run)

    def __post_init__(self):
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats: got {self.repeats!r}, expected an int >= 1")
        common.check_choices("variants", self.variants, tuple(VARIANTS))


QUICK = Config(repeats=1, variants=("readme",), extra_args=("--epochs", "2"))


def _attent() -> list[str]:
    """The `attent` command of this interpreter's environment (the module, if the script is not on PATH)."""
    script = os.path.join(os.path.dirname(sys.executable), "attent")
    return [script] if os.path.isfile(script) else [sys.executable, "-m", "attent_jax.cli.main"]


def _one(variant: str, config: Config, scratch: str) -> dict:
    workdir = os.path.join(scratch, f"{variant}_{time.monotonic_ns()}")
    argv = _attent() + README_COMMAND + VARIANTS[variant] + list(config.extra_args) + [
        "--no-progress-bar", "--workdir", workdir]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    with open(os.path.join(workdir, "results.json")) as f:
        result = json.load(f)
    shutil.rmtree(workdir)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"variant": variant, "command_s": wall, "cpu_s": cpu, "in_run_s": result["wall_time"],
            "eval_accuracy": result["eval_accuracy"], "steps": result["step"], "load_1m_before": load}


def run(config: Config, out_dir: str) -> dict:
    env = common.environment()
    runs = []
    with tempfile.TemporaryDirectory(prefix="attent_quickstart_") as scratch:
        for rep in range(config.repeats):
            for variant in config.variants:
                runs.append(dict(_one(variant, config, scratch), repeat=rep))
                print(f"[{NAME}] {variant} #{rep}: {runs[-1]['command_s']:.1f} s, "
                      f"accuracy {runs[-1]['eval_accuracy']:.3f}, load {runs[-1]['load_1m_before']:.1f}", flush=True)
    summary = {}
    for variant in config.variants:
        mine = [r for r in runs if r["variant"] == variant]
        summary[variant] = {k: float(np.median([r[k] for r in mine]))
                            for k in ("command_s", "cpu_s", "in_run_s", "eval_accuracy", "load_1m_before")}
    readme = summary.get("readme")
    checks = {}
    if readme is not None and not config.extra_args:
        checks = {"accuracy": readme["eval_accuracy"] >= TARGET_ACCURACY,
                  "command_seconds": readme["command_s"] < TARGET_SECONDS}
    ratios = {}
    if "readme" in summary and "batch64" in summary:
        ratios = {k: summary["readme"][k] / summary["batch64"][k] for k in ("command_s", "cpu_s")}
    payload = {"config": dataclasses.asdict(config), "environment": env, "runs": runs, "summary": summary,
               "ratios_readme_over_batch64": ratios, "targets": {"accuracy": TARGET_ACCURACY,
                                                                 "command_seconds": TARGET_SECONDS},
               "checks": checks}
    rows = [[v, f"{s['command_s']:.1f}", f"{s['cpu_s']:.1f}", f"{s['in_run_s']:.1f}", f"{s['eval_accuracy']:.3f}",
             f"{s['load_1m_before']:.1f}"] for v, s in summary.items()]
    md = (f"# {NAME}: `attent {' '.join(README_COMMAND)}`, a newcomer's first run\n\n"
          f"{common.environment_line(dict(env, seeds=None))}; median of {config.repeats} interleaved "
          f"repetition(s).\n\n"
          + markdown_table(["variant", "command s", "CPU s", "in-run s", "test accuracy", "load before"], rows)
          + "\n")
    if checks:
        md += (f"\nTargets (readme variant): accuracy >= {TARGET_ACCURACY}: {verdict(checks['accuracy'])}; "
               f"command < {TARGET_SECONDS:.0f} s: {verdict(checks['command_seconds'])} (a wall time: it depends "
               f"on the load above).\n")
    if ratios:
        md += (f"\nreadme / batch64 (same run): command time × {ratios['command_s']:.2f}, "
               f"CPU time × {ratios['cpu_s']:.2f}.\n")
    paths = common.write_outputs(out_dir, NAME, payload, md)
    print(md)
    common.print_outputs(NAME, paths.values())
    return payload


def main(argv=None) -> int:
    return common.run_main(argv, NAME, Config, QUICK, __doc__, run)


if __name__ == "__main__":
    raise SystemExit(main())
