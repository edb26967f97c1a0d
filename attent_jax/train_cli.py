"""`attent train`: flags generated from `TrainConfig`'s fields, then `train_and_evaluate`.

Every field ``some_name`` is a flag ``--some-name`` (booleans also take
``--no-some-name``); its help is the field's comment. ``--config FILE`` reads a
JSON object of fields first, and flags given on the command line override it.
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

from attent_jax.train_config import TrainConfig, check_workdir, field_help


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
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        text = f"{helps.get(field.name, '')} (default: {field.default!r})".replace("%", "%%")
        if field.type is bool or field.type == "bool":
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(flag, dest=field.name, type=_flag_type(field), default=None, metavar="V", help=text)


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
    for field in dataclasses.fields(TrainConfig):
        value = getattr(args, field.name, None)
        if value is not None:
            values[field.name] = value
    return TrainConfig.from_dict(values)


def cli(args: argparse.Namespace) -> int:
    check_workdir(args.workdir)  # before the training module (and with it the data) loads
    config = config_from_args(args)
    from attent_jax.checkpoint import CheckpointRestoreError
    from attent_jax.train import NonFiniteLossError, train_and_evaluate

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
