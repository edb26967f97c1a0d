"""The `attent` command: a thin layer over library functions.

Each subcommand lives in a library module that defines ``add_arguments(parser)``
and ``cli(args) -> int``; this file only wires them up and turns a `ValueError`
(bad input, named by the library) into a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand -> (module, one-line help). Modules are imported lazily so that
# `attent --help` does not start JAX.
COMMANDS = {
    "verify": ("attent_jax.verify", "run every theory check and print the PASS/FAIL table"),
    "train": ("attent_jax.train_cli", "train a model with AtteNT data selection"),
    "plot": ("attent_jax.plots", "plot loss and accuracy of one or more runs"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="attent", description="Nonparametric Teaching of Attention Learners (AtteNT) in JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    wanted = argv[0] if argv else None
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        if name == wanted:
            importlib.import_module(module_name).add_arguments(p)
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        return int(module.cli(args) or 0)
    except ValueError as err:
        print(f"attent {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
