"""The run folder: its file names, and the checks made at the boundary before anything loads or is written."""

from __future__ import annotations

import json
import os

from attent_jax.training.config import RESUME_MAY_CHANGE, TrainConfig

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
CHECKPOINT_DIR = "checkpoints"


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


def check_run_folder(workdir: str, config: TrainConfig) -> None:
    """A run folder may hold this run (same config but for `RESUME_MAY_CHANGE`) or nothing of attent train's."""
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.isfile(path):
        try:
            with open(path) as f:
                saved = TrainConfig.from_dict(json.load(f)).resolve().to_flat()
        except (ValueError, TypeError) as err:
            raise ValueError(f"workdir: {path} is not a TrainConfig ({err}); use another workdir") from None
        new = config.to_flat()
        for key in new:
            if key not in RESUME_MAY_CHANGE and saved.get(key) != new[key]:
                raise ValueError(f"{key}: got {new[key]!r}, but workdir {workdir} holds a run with "
                                 f"{key}={saved.get(key)!r}; resume with the same config or use another workdir")
    else:
        for name in (METRICS_FILE, CHECKPOINT_DIR, RESULTS_FILE):
            if os.path.exists(os.path.join(workdir, name)):
                raise ValueError(f"workdir: {workdir!r} holds {name} but no {CONFIG_FILE}, expected an "
                                 f"empty or new folder, or a run folder of attent train")
