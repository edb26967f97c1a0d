"""Numerical checks of the paper's theory, one claim per file (run them all with `attent verify`).

Each script exposes ``Config`` (a frozen dataclass with ``Config.quick()``),
``run(config) -> Report``, ``plot(report, out_dir) -> list[str]`` and ``main()``.
"""

# Script name -> the claim it checks, in the order `attent verify` runs them.
SCRIPTS = (
    "gradient_form",
    "permutation",
    "length",
    "reduction",
    "antk",
    "functional_consistency",
    "loss_reduction",
    "greedy",
    "kernel_convergence",
)
