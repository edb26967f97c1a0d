"""One command for an accelerator: all-data throughput, AtteNT's scoring + selection share and peak memory.

For the MNIST-1D `EncoderClassifier` at two sizes (the quick encoder and a
~10M-parameter one) this runs, on the first local device:

- ``all_data``: `attent train --selection none`; its steady-state throughput
  (examples/s of the optimizer steps, compilation excluded);
- ``attent``: Soft selection with the paper's scratch schedule (ratio 20% → 80%,
  incremental interval, full rescoring); the share of its training time spent on
  scoring + selection (`experiments.timing`: optimizer steps + scoring +
  selection, compilation and evaluation excluded; target ≤ 5%) and its
  throughput; with ``--bf16-scoring`` its scoring passes run in bfloat16
  (``score_dtype``; the paper trains with mixed precision);
- memory: ``device.memory_stats()["peak_bytes_in_use"]`` after each size's runs
  where the device reports it (GPU, TPU: the process's peak so far, so the
  bigger size, run second, shows its own); on a CPU, which reports none, the
  bytes of the run's resident state and data (params, optimizer and teacher
  state, the device-resident dataset; from their shapes), labelled as such.

The device is named in the output. Full mode is sized for a few minutes on one
GPU (≤ 8 min, compilation included); ``--quick`` is a CPU smoke test (CI).

Outputs (``--out``, default experiments/results/bench_device): bench_device.json, .md, .png.

Run:
    python -m experiments.bench_device                   # on the accelerator at hand
    python -m experiments.bench_device --bf16-scoring true   # bfloat16 scoring passes
    python -m experiments.bench_device --quick           # smoke test (CPU, CI)
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types

import numpy as np

from . import common, stats, timing

NAME = "bench_device"
METHODS = ("all_data", "attent")


@dataclasses.dataclass(frozen=True)
class Config:
    num_train: int = 10000          # MNIST-1D training examples
    num_test: int = 1000            # held-out test examples (evaluation is not timed)
    epochs: int = 10                # training epochs per run
    batch_size: int = 256           # global batch size
    learning_rate: float = 1e-3     # peak AdamW learning rate
    widths: tuple = (32, 384)       # encoder widths, one per size (the quick encoder, ~10M parameters)
    depths: tuple = (1, 6)          # encoder blocks per size
    heads: tuple = (2, 6)           # attention heads per size
    bf16_scoring: bool = False      # run AtteNT's scoring passes in bfloat16 (score_dtype) instead of float32
    seed: int = 0                   # training seed
    target_share: float = 0.05      # PASS if scoring + selection take at most this share of AtteNT's training time

    def __post_init__(self):
        for name in ("num_train", "num_test", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: got {getattr(self, name)!r}, expected an int >= 1")
        if not self.widths or not len(self.widths) == len(self.depths) == len(self.heads):
            raise ValueError(f"widths/depths/heads: got {self.widths!r}/{self.depths!r}/{self.heads!r}, expected "
                             "non-empty tuples of one length (one encoder size each)")
        if any(w < 1 or h < 1 or w % h for w, h in zip(self.widths, self.heads)):
            raise ValueError(f"heads: got {self.heads!r}, expected positive divisors of the widths {self.widths!r}")
        if not 0.0 < self.target_share < 1.0:
            raise ValueError(f"target_share: got {self.target_share!r}, expected a number in (0, 1)")


QUICK = Config(num_train=320, num_test=64, epochs=3, batch_size=32, widths=(16, 32), depths=(1, 1), heads=(2, 2))


def size_config(config: Config, k: int):
    """The fields `timing.mnist1d_config` reads, for size k."""
    return types.SimpleNamespace(num_train=config.num_train, num_test=config.num_test, epochs=config.epochs,
                                 batch_size=config.batch_size, learning_rate=config.learning_rate,
                                 width=config.widths[k], depth=config.depths[k], num_heads=config.heads[k])


def train_config(config: Config, k: int, method: str):
    """The `TrainConfig` of one run: all data, or Soft in the paper's scratch schedule (full rescoring)."""
    if method == "all_data":
        return timing.mnist1d_config(size_config(config, k), config.seed, selection="none")
    return timing.mnist1d_config(size_config(config, k), config.seed, selection="soft", regime="scratch",
                                 ratio="incremental", interval="incremental", rescore="all",
                                 score_dtype="bfloat16" if config.bf16_scoring else "float32")


def memory(train_cfg) -> dict:
    """The device's peak bytes in use if it reports them, else the run's resident state + data bytes (labelled)."""
    import jax

    from attent_jax.training.loop import Trainer

    stats_ = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats_:
        return {"bytes": int(stats_["peak_bytes_in_use"]), "kind": "peak_bytes_in_use (device.memory_stats)"}
    # No allocator statistics (CPU): what the run keeps resident, from shapes, not a measured peak.
    trainer = Trainer(train_cfg, os.path.join("/tmp", f"{NAME}_probe_{os.getpid()}"))
    state = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(trainer.abstract_state))
    data = sum(v.nbytes for s in trainer.stages for part in (s.train, s.test) for v in part.values())
    return {"bytes": state + data, "kind": "resident state + data bytes from shapes (the device reports no "
                                           "memory_stats; not a measured peak)"}


def _params(train_cfg) -> int:
    import jax

    from attent_jax.training.loop import Trainer

    trainer = Trainer(train_cfg, os.path.join("/tmp", f"{NAME}_probe_{os.getpid()}"))
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(trainer.abstract_state["params"])))


def measure(config: Config, out_dir: str) -> list[dict]:
    """Per size: an all-data run and an AtteNT run, then the memory figure; one row per size."""
    rows = []
    for k in range(len(config.widths)):
        row = {"width": config.widths[k], "depth": config.depths[k], "num_heads": config.heads[k],
               "params": _params(train_config(config, k, "all_data")), "load_average": list(os.getloadavg())}
        for method in METHODS:
            r = timing.timed_run(train_config(config, k, method), os.path.join(out_dir, "runs", f"size{k}_{method}"))
            st = r["stages"]["train"]
            row[method] = {"examples_per_s": st["examples_seen"] / st["steps_s"] if st["steps_s"] > 0 else float("nan"),
                           "library_examples_per_s": r["result"].get("examples_per_s"),
                           "train_time_s": st["train_time_s"], "scoring_s": st["scoring_s"],
                           "selection_s": st["selection_s"], "compile_s": r["compile_s"],
                           "share": (st["scoring_s"] + st["selection_s"]) / st["train_time_s"],
                           "fraction_seen": st["fraction_seen"],
                           "final_accuracy_pct": 100.0 * timing.final(r, "eval_accuracy")}
            print(f"[{NAME}] size {k} ({row['params']:,} params) {method}: {row[method]['examples_per_s']:.0f} ex/s, "
                  f"scoring+selection {100 * row[method]['share']:.2f}%", flush=True)
        row["memory"] = memory(train_config(config, k, "attent"))
        row["share_pass"] = bool(row["attent"]["share"] <= config.target_share)
        rows.append(row)
    return rows


def run(config: Config, out_dir: str) -> dict:
    """Measure, write JSON / markdown / figure; returns the payload."""
    env = common.environment(seeds=[config.seed])
    rows = measure(config, out_dir)
    payload = {"experiment": NAME, "config": dataclasses.asdict(config), "environment": env,
               "device": f"{env['device_kind']} ({env['platform']})", "rows": rows,
               "load_average_end": list(os.getloadavg())}
    paths = common.write_outputs(out_dir, NAME, payload, markdown(config, env, rows))
    figure = plot(rows, out_dir)
    for r in rows:
        print(f"[{NAME}] on {payload['device']}: {r['width']} x {r['depth']} ({r['params']:,} params): all data "
              f"{r['all_data']['examples_per_s']:.0f} ex/s; AtteNT scoring+selection {100 * r['attent']['share']:.2f}% "
              f"(target <= {100 * config.target_share:.0f}%: {stats.verdict(r['share_pass'])}); memory "
              f"{r['memory']['bytes'] / 2**20:.1f} MiB ({r['memory']['kind']})")
    common.print_outputs(NAME, [paths["json"], paths["markdown"], figure])
    return payload


def markdown(config: Config, env: dict, rows: list[dict]) -> str:
    headers = ["encoder (width × depth, heads)", "params", "all data (ex/s)", "AtteNT (ex/s)",
               "scoring + selection (%)", f"≤ {100 * config.target_share:.0f}%", "AtteNT test acc. (%)",
               "memory (MiB)", "memory measure"]
    table = [[f"{r['width']} × {r['depth']}, {r['num_heads']}", f"{r['params']:,}",
              f"{r['all_data']['examples_per_s']:.0f}", f"{r['attent']['examples_per_s']:.0f}",
              f"{100 * r['attent']['share']:.2f}", stats.verdict(r["share_pass"]),
              f"{r['attent']['final_accuracy_pct']:.1f}", f"{r['memory']['bytes'] / 2**20:.1f}", r["memory"]["kind"]]
             for r in rows]
    return "\n".join([
        "# Device benchmark: throughput, AtteNT's scoring + selection share, memory\n",
        f"MNIST-1D, {config.num_train} training examples, {config.epochs} epochs, batch {config.batch_size}; "
        f"AtteNT = Soft, scratch schedule, full rescoring, scoring in "
        f"{'bfloat16' if config.bf16_scoring else 'float32'}; seed {config.seed}; one device.\n",
        f"Measured on: {common.environment_line(env)}.\n",
        stats.markdown_table(headers, table)]) + "\n"


def plot(rows: list[dict], out_dir: str) -> str:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    labels = [f"{r['params']:,}" for r in rows]
    x = np.arange(len(rows))
    for j, method in enumerate(METHODS):
        axes[0].bar(x + 0.4 * j - 0.2, [r[method]["examples_per_s"] for r in rows], 0.4, label=method)
    axes[0].set_ylabel("examples / s")
    axes[0].legend()
    axes[1].bar(x, [100 * r["attent"]["share"] for r in rows], 0.5, color="C1")
    axes[1].axhline(5, color="k", ls="--", lw=1)
    axes[1].set_ylabel("AtteNT scoring + selection (%)")
    for ax in axes:
        ax.set_xticks(x, labels)
        ax.set_xlabel("encoder params")
        ax.grid(alpha=0.3, axis="y")
    return common.save_figure(fig, os.path.join(out_dir, f"{NAME}.png"))


def main(argv=None) -> int:
    return common.run_main(argv, NAME, Config, QUICK, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
