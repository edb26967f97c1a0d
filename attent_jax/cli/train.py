"""`attent train`: flags generated from the fields of `TrainConfig`'s sections, then `train_and_evaluate`.

Every field ``some_name`` of a section (data, model, selection, optim, run) is a
flag ``--some-name`` (booleans also take ``--no-some-name``); its help is the
field's comment, grouped by section in ``--help``. ``--config FILE`` reads a
JSON object first (nested by section, as a run folder's config.json, or flat),
and flags given on the command line override it.
Bad input (an unknown name, a value out of range, a missing file, a batch size
the device count does not divide, a run folder holding another config) is a
one-line error and exit code 2, raised before anything is written; so is a
``--workdir`` that is empty, a file, below a file or not writable, checked
before any data loads. A NaN/Inf loss or scoring-pass score stops the run with
exit code 1, keeping its last good checkpoint; so does a checkpoint that fails
to restore for a reason other than detected damage (an OS error, memory),
leaving the run folder as it was.

Example:
    attent train --task mnist1d --selection soft --ratio cosine --interval fixed --epochs 30 --workdir runs/x
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from attent_jax.training.config import SECTIONS, TrainConfig, field_help
from attent_jax.training.workdir import check_workdir


def _flag_type(field: dataclasses.Field):
    if field.type is int or field.type == "int":
        return int
    if field.type is float or field.type == "float":
        return float
    return str  # str, and "schedule name or number" fields (TrainConfig parses the number)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, metavar="DIR",
                        help="run folder: config.json, metrics.jsonl, checkpoints/ (an existing run resumes)")
    parser.add_argument("--config", metavar="FILE", help="JSON object of TrainConfig fields; flags override it")
    helps = field_help()
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} ({cls.__name__})")
        for field in dataclasses.fields(cls):
            flag = "--" + field.name.replace("_", "-")
            text = f"{helps.get(field.name, '')} (default: {field.default!r})".replace("%", "%%")
            if field.type is bool or field.type == "bool":
                group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None,
                                   help=text)
            else:
                group.add_argument(flag, dest=field.name, type=_flag_type(field), default=None, metavar="V",
                                   help=text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The `TrainConfig` of parsed arguments: the --config file's fields, overridden by the flags given."""
    values = {}
    if args.config:
        if not os.path.isfile(args.config):
            raise ValueError(f"config: got {args.config!r}, expected an existing JSON file")
        try:
            with open(args.config) as f:
                values = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"config: {args.config!r} is not valid JSON ({err})") from None
        if not isinstance(values, dict):
            raise ValueError(f"config: {args.config!r} holds a {type(values).__name__}, expected a JSON object")
    flags = {f.name: getattr(args, f.name) for cls in SECTIONS.values() for f in dataclasses.fields(cls)
             if getattr(args, f.name, None) is not None}
    if not flags:
        return TrainConfig.from_dict(values)
    return TrainConfig.from_dict(values).replace(**flags)


def cli(args: argparse.Namespace) -> int:
    check_workdir(args.workdir)  # before the training loop (and with it the data) loads
    config = config_from_args(args)
    from attent_jax.training.checkpoint import CheckpointRestoreError
    from attent_jax.training.loop import NonFiniteLossError, train_and_evaluate

    try:
        result = train_and_evaluate(config, args.workdir)
    except NonFiniteLossError as err:
        print(f"attent train: stopped: {err}", file=sys.stderr)
        return 1
    except CheckpointRestoreError as err:
        print(f"attent train: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    print(f"run folder: {os.path.abspath(args.workdir)}")
    return 0
