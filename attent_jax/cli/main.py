"""The `attent` command: a thin layer over library functions.

Each subcommand lives in a module that defines ``add_arguments(parser)`` and
``cli(args) -> int``; this file only wires them up and turns a `ValueError`
(bad input, named by the library) into a one-line message and exit code 2.

Subcommands of the library itself are listed in `COMMANDS`; other installed
packages add theirs through the ``attent_jax.commands`` entry-point group. That
is how `attent verify` reaches the theory checks (`attent_theory.verify`)
without the library importing the script folders.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

# Subcommand -> (module, one-line help). Modules are imported lazily so that
# `attent --help` does not start JAX.
COMMANDS = {
    "train": ("attent_jax.cli.train", "train a model with AtteNT data selection"),
    "plot": ("attent_jax.cli.plot", "plot loss and accuracy of one or more runs"),
}
ENTRY_POINT_GROUP = "attent_jax.commands"
# One-line help of the subcommands known to come from entry points (others show their module's docstring).
_PLUGIN_HELP = {"verify": "run every theory check: identities (PASS/FAIL), paper claims (HOLDS or not), controls"}


def commands() -> dict[str, tuple[str, str]]:
    """Built-in subcommands plus those registered by installed packages."""
    found = dict(COMMANDS)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, (ep.value, _PLUGIN_HELP.get(ep.name, f"(from {ep.value})")))
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="attent", description="Nonparametric Teaching of Attention Learners (AtteNT) in JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    wanted = argv[0] if argv else None
    for name, (module_name, help_text) in commands().items():
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
