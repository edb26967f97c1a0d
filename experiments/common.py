"""Shared plumbing of the experiment scripts: flags, output folder, environment, figures.

Every script in `experiments/` reproduces one table or figure of the paper at
CPU scale. They share:

- `parse_args(argv, Config, quick, doc)`: one ``--flag`` per field of the
  script's frozen config dataclass (``--num-train`` ↔ ``num_train``, help = the
  field's comment), ``--quick`` to start from the smoke-test preset, ``--out``
  and ``--compile-cache``; `run_main`, the body of every script's ``main``.
- `output_dir`, `environment` (device, JAX version, seeds, machine load),
  `write_outputs` (JSON + markdown), `save_figure`.
- `experiments.stats`: `mean_std` / `fmt_mean_std`, `verdict` (PASS/MISS),
  `markdown_table`.
- `experiments.timing`: `timed_run(train_config, workdir)`, one training run
  with its training time measured per epoch, what "training time" means in
  every table ("Timing" there), and `compile_cache`.

Example (what every script does):
    >>> # def main(argv=None): return common.run_main(argv, NAME, Config, QUICK, __doc__, run)
    >>> # in run(config, out_dir): runs = [timing.timed_run(...) ...]; rows with stats.fmt_mean_std;
    >>> # common.write_outputs(out_dir, NAME, payload, markdown), common.save_figure(fig, path)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from typing import Sequence

import numpy as np

from .timing import compile_cache

# Relative to the current folder, never to this file: an installed package is no place for results.
# From the repository root this is where the committed results live.
RESULTS_ROOT = os.path.join("experiments", "results")


# =========================================================================== flags and configs

def field_help(config_cls) -> dict[str, str]:
    """Each dataclass field's trailing comment (the flag's help text)."""
    source = inspect.getsource(config_cls)
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s+(\w+):[^#\n]*#\s*(.*)$", source, re.M)}


def _flag_parser(kind):
    """argparse `type` for a field whose default is `kind` (bool flags take true/false)."""
    if kind is bool:
        def parse(text: str) -> bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"got {text!r}, expected true or false")
        return parse
    return kind


_EMPTY = "<none>"   # what a tuple flag's "none" parses to before it becomes ()


def parse_args(argv: Sequence[str] | None, config_cls, quick_config, description: str):
    """``(config, args)`` from command-line flags: one flag per field of the frozen `config_cls`.

    The base is ``config_cls()`` or, with ``--quick``, `quick_config`; each flag
    given replaces that field. Tuple fields take several values
    (``--seeds 0 1 2``). Also parses ``--out DIR`` and ``--compile-cache DIR``.
    Raises `ValueError` (via the config's own checks) for bad values.
    """
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test sizes (under 2 minutes on 2 cores)")
    parser.add_argument("--out", default=None, help="output folder (default: ./experiments/results/NAME, under the current folder)")
    parser.add_argument("--compile-cache", default=None,
                        help="JAX persistent compilation cache folder to reuse across invocations "
                             "(default: a temporary one per invocation)")
    # argparse %-formats help text, so a literal % in a field's comment ("ratio 20% → 80%") must be doubled.
    helps = {name: text.replace("%", "%%") for name, text in field_help(config_cls).items()}
    for f in dataclasses.fields(config_cls):
        default = f.default
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, tuple):
            kind = _flag_parser(type(default[0]) if default else str)
            # "none" alone stands for the empty tuple (nargs="+" cannot take zero values).
            parser.add_argument(flag, type=lambda text, kind=kind: _EMPTY if text.lower() == "none" else kind(text),
                                nargs="+", default=None, help=helps.get(f.name))
        else:
            parser.add_argument(flag, type=_flag_parser(type(default)), default=None, help=helps.get(f.name))
    args = parser.parse_args(argv)
    base = quick_config if args.quick else config_cls()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls) if getattr(args, f.name) is not None}
    for name, v in given.items():
        if isinstance(v, list) and _EMPTY in v and len(v) > 1:
            raise ValueError(f"{name}: got {v!r}, expected 'none' alone or values without it")
    given = {k: (() if v == [_EMPTY] else tuple(v)) if isinstance(v, list) else v for k, v in given.items()}
    return dataclasses.replace(base, **given), args


def run_main(argv, name: str, config_cls, quick_config, doc: str, run_fn, report_only=None) -> int:
    """The body of every script's ``main``: flags → config → ``run_fn(config, out_dir)`` under `compile_cache`.

    Bad values end with a one-line error and exit code 2, as `attent` does. A script that can rebuild its
    tables and figures from its saved JSON passes ``report_only(out_dir)``: ``--report-only`` then calls it
    instead of running (a ValueError it raises before writing is the same one-line error).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if report_only is not None and "--report-only" in argv:
        argv.remove("--report-only")
        try:
            _, args = parse_args(argv, config_cls, quick_config, doc)
            report_only(os.path.abspath(args.out or os.path.join(RESULTS_ROOT, name)))
        except ValueError as err:
            print(f"{name}: error: {err}", file=sys.stderr)
            return 2
        return 0
    try:
        config, args = parse_args(argv, config_cls, quick_config, doc)
        out_dir = output_dir(name, args.out)
    except ValueError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    with compile_cache(args.compile_cache):
        run_fn(config, out_dir)
    return 0


def check_seeds(seeds) -> None:
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ValueError(f"seeds: got {seeds!r}, expected one or more ints >= 0")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: got {seeds!r}, expected distinct seeds")


def check_choices(name: str, values, allowed) -> None:
    if not values or any(v not in allowed for v in values) or len(set(values)) != len(values):
        raise ValueError(f"{name}: got {values!r}, expected distinct values from {tuple(allowed)}")


# =========================================================================== output and environment

def output_dir(name: str, out: str | None = None) -> str:
    """The script's output folder (created): `out`, or ./experiments/results/NAME under the current folder."""
    path = os.path.abspath(out or os.path.join(RESULTS_ROOT, name))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"out: got {path!r}, expected a folder (it is a file)")
    os.makedirs(path, exist_ok=True)
    return path


def environment(seeds=None) -> dict:
    """What the numbers were measured on: devices, versions, CPU, load, seeds, command."""
    import flax
    import jax
    import jaxlib
    import optax

    devices = jax.devices()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count()
    commit = dirty = None
    here = os.path.dirname(os.path.abspath(__file__))
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=here).stdout.strip() or None
        # Uncommitted changes to tracked files: the numbers then come from code that git_commit does not hold.
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, timeout=5, cwd=here)
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    env = {
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "num_devices": len(devices),
        "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__, "optax": optax.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_cores_usable": cores,
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "git_commit": commit,
        "git_dirty": dirty,
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if seeds is not None:
        env["seeds"] = list(seeds)
    return env


def environment_line(env: dict) -> str:
    return (f"{env['num_devices']}× {env['device_kind']} ({env['platform']}), {env['cpu_cores_usable']} usable CPU "
            f"cores, 1-min load {env['load_average_1m']:.1f} at start; JAX {env['jax']}, Flax {env['flax']}; "
            f"seeds {env.get('seeds')}")


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None   # JSON has no NaN/inf: unmeasured or unreached is null
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    return x


def write_outputs(out_dir: str, name: str, payload: dict, markdown: str) -> dict:
    """Write NAME.json (payload; NaN/inf as null) and NAME.md; returns their paths."""
    json_path = os.path.join(out_dir, f"{name}.json")
    md_path = os.path.join(out_dir, f"{name}.md")
    for path, text in ((json_path, json.dumps(_jsonable(payload), indent=2) + "\n"), (md_path, markdown)):
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return {"json": json_path, "markdown": md_path}


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def print_outputs(name: str, paths: Sequence[str]) -> None:
    print(f"[{name}] wrote:")
    for p in paths:
        print(f"  {p}")
