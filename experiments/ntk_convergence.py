"""Paper Appendix D.3 (Figures 5–6) at CPU scale: the empirical NTK of a Transformer encoder across training.

The paper's §4.2 / Theorem (eq. 13–15, Appendix B) says the dynamic attention
NTK converges as training proceeds; Appendix D.3 shows it for a ViT: the
distance between the empirical NTK at epoch t and its limit falls sharply in
the first 50 of 800 epochs (Figure 5), and heatmaps at checkpoints stop
changing from about epoch 219 on (Figure 6). Here the multi-layer
`EncoderClassifier` trains on MNIST-1D (by default with AtteNT's scratch
regime, Soft selection), a checkpoint is kept at every epoch end, and for the
initial parameters and every checkpoint the empirical NTK

    K_t[i, j] = (1/C) Σ_c ⟨∂f_c(x_i)/∂θ, ∂f_c(x_j)/∂θ⟩      (trace over the C logits)

is computed on 10 fixed training examples (the first one of each class) with
`attent_jax.learner.ntk.empirical_ntk_fn` ("jacobian") on the model's pure function
(`attent_jax.learner.model.functional`). Reported: the relative distance
‖K_t − K_T‖_F / ‖K_T‖_F to the final kernel K_T against the epoch, the
epoch-to-epoch change ‖K_t − K_{t−1}‖_F / ‖K_T‖_F, ‖K_t‖_F, and the first
epoch after which the relative distance stays below 0.1 and 0.25
(informational: the paper gives no threshold).

Outputs (``--out``, default experiments/results/ntk_convergence):
ntk_convergence.json (every kernel), ntk_convergence.md, ntk_distance.png
(Figure 5), ntk_heatmaps.png (Figure 6, first seed), runs/seedK/ (the
checkpoints are deleted once their kernels are computed).

Run:
    python -m experiments.ntk_convergence          # full: 5000 examples, 40 epochs
    python -m experiments.ntk_convergence --quick  # smoke test
Run time on a 2-core CPU: ``--quick`` 55 s (measured standalone, compilation included, on a machine
shared with other jobs, load ≈ 5); full mode measured 1.5 min (1 run + 41 kernels, machine load ≈ 4).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys

import numpy as np

from . import common, stats, timing

NAME = "ntk_convergence"
THRESHOLDS = (0.1, 0.25)


@dataclasses.dataclass(frozen=True)
class Config:
    num_train: int = 5000           # MNIST-1D training examples
    num_test: int = 1000            # held-out test examples
    epochs: int = 40                # training epochs (a checkpoint and a kernel after each)
    batch_size: int = 64            # global batch size
    learning_rate: float = 1e-3     # peak AdamW learning rate
    width: int = 0                  # encoder width; 0 = the library default (64)
    depth: int = 0                  # encoder blocks (multi-layer); 0 = the library default (2)
    num_heads: int = 0              # attention heads; 0 = the library default (4)
    selection: str = "soft"         # soft (AtteNT scratch regime, paper defaults) | none (all data)
    num_classes_shown: int = 10     # kernel examples: the first training example of each of this many classes
    heatmaps: int = 6               # checkpoints shown as heatmaps (evenly spread, first and last included)
    seeds: tuple = (0,)             # training seeds (one run and one set of kernels each)

    def __post_init__(self):
        for name in ("num_train", "num_test", "epochs", "batch_size", "heatmaps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: got {getattr(self, name)!r}, expected an int >= 1")
        if self.selection not in ("soft", "none"):
            raise ValueError(f"selection: got {self.selection!r}, expected 'soft' or 'none'")
        if not 2 <= self.num_classes_shown <= 10:
            raise ValueError(f"num_classes_shown: got {self.num_classes_shown}, expected 2..10 (MNIST-1D has 10)")
        common.check_seeds(self.seeds)


QUICK = Config(num_train=400, num_test=200, epochs=3, batch_size=32, width=32, depth=1, num_heads=2, heatmaps=4)


def train_config(config: Config, seed: int):
    selection = {"selection": "none"} if config.selection == "none" else {
        "selection": "soft", "regime": "scratch", "ratio": "incremental", "interval": "incremental"}
    # Every epoch's checkpoint is read back for its kernel: the experiments' end-only default would leave one.
    return timing.mnist1d_config(config, seed, keep_checkpoints=config.epochs + 1, checkpoint_epochs=1, **selection)


def kernel_examples(labels_N: np.ndarray, num_classes: int) -> np.ndarray:
    """Indices of the first training example of each class 0..num_classes−1 (fixed across training)."""
    idx = []
    for c in range(num_classes):
        hits = np.flatnonzero(labels_N == c)
        if hits.size == 0:
            raise ValueError(f"num_classes_shown: class {c} has no training example; lower it or add examples")
        idx.append(int(hits[0]))
    return np.asarray(idx)


def checkpoint_kernels(trainer, workdir: str, x_kernel) -> tuple[list[int], list[int], list[np.ndarray]]:
    """(epochs, steps, kernels): the NTK at initialization (epoch 0) and after each saved epoch.

    `trainer` is an `attent_jax.training.loop.Trainer` of the finished run in
    `workdir`. Parameters come from the run's own checkpoints (restored in the
    trainer's state layout); the kernel is `empirical_ntk_fn` of
    `model.functional`'s pure function, traced over the logits.
    """
    import jax
    from flax import nnx

    from attent_jax.learner.model import functional
    from attent_jax.learner.ntk import empirical_ntk_fn
    from attent_jax.training import loop as train_lib
    from attent_jax.training.checkpoint import Checkpointer, abstract_like
    from attent_jax.training.stages import model_builder

    module = model_builder(trainer.config.model, trainer.dataset, trainer.stages)(nnx.Rngs(0))
    f, _ = functional(module)
    ntk_fn = empirical_ntk_fn(f, trace_axes=(-1,), implementation="jacobian")
    step_to_epoch = {r["step"]: r["epoch"] + 1 for r in timing.read_metrics(workdir) if r.get("event") == "eval"}

    def kernel(params):
        return np.asarray(jax.device_get(ntk_fn(x_kernel, None, params)), np.float64)

    epochs, steps, kernels = [0], [0], [kernel(trainer.init_state()["params"])]
    ckpt = Checkpointer(os.path.join(workdir, train_lib.CHECKPOINT_DIR), keep=trainer.config.run.keep_checkpoints)
    try:
        abstract = abstract_like(trainer.abstract_state, trainer.shardings)
        for step in ckpt.all_steps():
            state, _ = ckpt.restore(step, abstract)
            epochs.append(step_to_epoch.get(step, -1))
            steps.append(step)
            kernels.append(kernel(state["params"]))
    finally:
        ckpt.close()
    return epochs, steps, kernels


def first_stable_below(dist: list[float], epochs: list[int], threshold: float):
    """The first epoch from which the distance stays below `threshold` to the end (None if never)."""
    for i in range(len(dist)):
        if all(d < threshold for d in dist[i:]):
            return epochs[i]
    return None


def one_seed(config: Config, seed: int, out_dir: str) -> dict:
    """Train one seed, compute its kernels at every checkpoint (then drop the checkpoints); its results."""
    import jax.numpy as jnp

    from attent_jax.training import loop as train_lib

    tc = train_config(config, seed)
    workdir = os.path.join(out_dir, "runs", f"seed{seed}")
    r = timing.timed_run(tc, workdir, keep_checkpoints=True)
    trainer = train_lib.Trainer(tc, workdir)   # the finished run's data, model and state layout
    ds = trainer.dataset
    idx = kernel_examples(ds.y_train, config.num_classes_shown)
    epochs, steps, kernels = checkpoint_kernels(trainer, workdir, jnp.asarray(ds.x_train[idx]))
    shutil.rmtree(os.path.join(workdir, train_lib.CHECKPOINT_DIR), ignore_errors=True)
    final = kernels[-1]
    norm_T = float(np.linalg.norm(final))
    dist = [float(np.linalg.norm(k - final)) / norm_T for k in kernels]
    change = [float("nan")] + [float(np.linalg.norm(b - a)) / norm_T for a, b in zip(kernels, kernels[1:])]
    stable = {str(t): first_stable_below(dist, epochs, t) for t in THRESHOLDS}
    print(f"[{NAME}] seed {seed}: relative distance to the final NTK: init {dist[0]:.3f}, "
          + ", ".join(f"epoch {e} {d:.3f}" for e, d in list(zip(epochs, dist))[1::max(1, len(dist) // 6)]))
    for t, e in stable.items():
        print(f"[{NAME}] seed {seed}: first epoch from which the distance stays below {t}: "
              f"{e if e is not None else 'never'} (of {epochs[-1]})")
    return {"seed": seed, "kernel_example_indices": idx.tolist(), "kernel_example_labels": ds.y_train[idx].tolist(),
            "epochs": epochs, "steps": steps, "relative_distance_to_final": dist, "relative_epoch_change": change,
            "frobenius_norm": [float(np.linalg.norm(k)) for k in kernels], "first_epoch_stably_below": stable,
            "kernels": [k.tolist() for k in kernels], "final_test_accuracy": timing.final(r, "eval_accuracy"),
            "training": {k: r[k] for k in ("config", "result", "stages", "compile_s", "workdir")}}


def run(config: Config, out_dir: str) -> dict:
    """Train every seed, compute the kernels at every checkpoint, write JSON/markdown/figures; returns the payload."""
    env = common.environment(config.seeds)
    per_seed = [one_seed(config, seed, out_dir) for seed in config.seeds]
    payload = {"experiment": NAME, "paper": "Appendix D.3, Figures 5-6", "config": dataclasses.asdict(config),
               "environment": env, "per_seed": per_seed}
    figures = plot(config, per_seed, out_dir)
    paths = common.write_outputs(out_dir, NAME, payload, markdown(config, env, per_seed))
    common.print_outputs(NAME, [paths["json"], paths["markdown"], *figures])
    return payload


def _shown(n: int, k: int) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, min(k, n)).round().astype(int).tolist()))


def markdown(config, env, per_seed) -> str:
    def stable(p, t):
        e = p["first_epoch_stably_below"][str(t)]
        return "never" if e is None else str(e)

    headers = ["epoch"] + [f"{name} (seed {p['seed']})" for p in per_seed
                           for name in ("‖K_t − K_T‖/‖K_T‖", "‖K_t − K_{t−1}‖/‖K_T‖")]
    rows = []
    for i, e in enumerate(per_seed[0]["epochs"]):
        row = [e]
        for p in per_seed:
            c = p["relative_epoch_change"][i] if i < len(p["relative_epoch_change"]) else float("nan")
            row += [f"{p['relative_distance_to_final'][i]:.4f}" if i < len(p["epochs"]) else "—",
                    f"{c:.4f}" if np.isfinite(c) else "—"]
        rows.append(row)
    lines = [
        "# Convergence of the empirical NTK of a Transformer encoder (paper Appendix D.3, CPU scale)\n",
        f"MNIST-1D, {config.num_train} training examples, encoder (width {config.width or 'default'}, depth "
        f"{config.depth or 'default'}), {config.epochs} epochs, selection {config.selection}, seeds "
        f"{list(config.seeds)}. Kernel on {config.num_classes_shown} fixed training examples (the first of each "
        "class), traced over the logits; epoch 0 = initialization, K_T = the kernel after the last epoch.\n",
        f"Measured on: {common.environment_line(env)}.\n"]
    for p in per_seed:
        lines.append(f"- seed {p['seed']}: final test accuracy {100 * p['final_test_accuracy']:.2f}%; first epoch "
                     "from which ‖K_t − K_T‖/‖K_T‖ stays below " + "; below ".join(
                         f"{t}: {stable(p, t)}" for t in THRESHOLDS) + f" (of {p['epochs'][-1]})")
    lines += ["", stats.markdown_table(headers, rows)]
    return "\n".join(lines) + "\n"


def plot(config, per_seed, out_dir) -> list[str]:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for p in per_seed:
        e, d, c = p["epochs"], p["relative_distance_to_final"], p["relative_epoch_change"]
        # The last distance is 0 by definition: left out of the log plot.
        line, = ax.plot(e[:-1], d[:-1], marker="o", ms=3, label=f"‖K_t − K_T‖/‖K_T‖, seed {p['seed']}")
        ax.plot(e[1:], c[1:], marker=".", ms=3, ls="--", alpha=0.7, color=line.get_color(),
                label=f"‖K_t − K_{{t−1}}‖/‖K_T‖, seed {p['seed']}")
    ax.set_xlabel("epoch (0 = initialization)")
    ax.set_ylabel("relative Frobenius distance")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("Empirical NTK of the encoder across training")
    p1 = common.save_figure(fig, os.path.join(out_dir, "ntk_distance.png"))

    p = per_seed[0]
    kernels, epochs = [np.asarray(k) for k in p["kernels"]], p["epochs"]
    shown = _shown(len(kernels), config.heatmaps)
    fig, axes = plt.subplots(1, len(shown), figsize=(2.8 * len(shown), 3.0))
    axes = np.atleast_1d(axes)
    for ax, i in zip(axes, shown):
        k = kernels[i]
        scale = np.abs(k).max() or 1.0
        ax.imshow(k / scale, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(f"epoch {epochs[i]}\nmax |K| = {scale:.3g}", fontsize=9)
        ax.set_xticks(range(len(k)))
        ax.set_yticks(range(len(k)))
        ax.tick_params(labelsize=6)
    fig.suptitle(f"NTK heatmaps, seed {p['seed']} (rows/cols: one example per class; each panel scaled to its "
                 "largest entry)", fontsize=10)
    p2 = common.save_figure(fig, os.path.join(out_dir, "ntk_heatmaps.png"))
    return [p1, p2]


def main(argv=None) -> int:
    return common.run_main(argv, NAME, Config, QUICK, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
