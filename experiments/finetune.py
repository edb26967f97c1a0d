"""Paper Table 1 at CPU scale: fine-tuning a causal decoder with and without AtteNT.

The paper (§5, Table 1; Appendix C) LoRA-fine-tunes 7B LLMs for five epochs
with the loss on responses only, and its AtteNT variant trains on all data in
the first epoch, then on the 70% of examples with the largest losses (recorded
during that epoch) for the remaining epochs. Here the learner is the small
`CausalDecoder` on the ``arith`` task (questions "Q:23+58=A:" with the loss on
the answer "81\\n"; exact match by greedy decoding on held-out questions), and
the two methods share data, model, seed, optimizer and epochs:

- ``all_data``: every question every epoch ("w/o AtteNT");
- ``attent``: the ``finetune`` regime (Hard selection of the top 70% by loss).

The paper fine-tunes *pre-trained* models, which "already perform well on
most instances", so its selection concentrates on the hard ones. This
miniature has no pre-trained model that knows arithmetic: by default
(``--pretrain none``) the decoder is fine-tuned from its random
initialization, so epoch 1's losses rank examples of a model far from the task
and the kept 70% then trains for fewer steps than the baseline. ``--pretrain
FILE`` first pre-trains both methods on a text file (e.g. tinyshakespeare) by
next-character prediction for ``--pretrain-epochs`` epochs (identical for both:
same seed); only the fine-tuning stage is timed and compared. ``--pretrain
arith3`` pre-trains on generated additions with a 3-digit operand (the same
format and carries, never a question of the 2-digit task: see
`arith3_text`), the closest stand-in we have for a model that has seen
arithmetic before. Both methods lay the learning-rate schedule out over
epochs, so they use the same learning rate at every epoch.

Reported per method, mean ± std over seeds: fine-tuning training time
(`experiments.timing`, "Timing": steps + scoring + selection, no compilation
or evaluation), final exact match and token accuracy on the held-out
questions, fraction of the baseline's examples seen, and AtteNT's time over
the baseline's next to its ideal: that fraction (≈ (1 + 0.7·(E − 1)) / E), the
ratio of a run whose cost is proportional to its examples.

Outputs (``--out``, default experiments/results/finetune): finetune.json,
finetune.md, curves.png (exact match and test loss against training time and
epoch), runs/METHOD_seedK/.

Run:
    python -m experiments.finetune             # full: 8000 questions, 5 epochs, seeds 0 1 2
    python -m experiments.finetune --quick     # smoke test
Run time on a 2-core CPU: ``--quick`` 40 s (measured standalone, compilation included, on a machine
shared with other jobs, load ≈ 5); full mode measured 6 min (6 runs: 2 methods × 3 seeds, machine load 3–5);
``--pretrain arith3 --pretrain-epochs 4`` 12.5 min with no other jobs (pre-training and decoding
take most of each run's ~2 min).
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np

from attent_jax.training.run_log import write_atomic
from . import common, stats, timing

NAME = "finetune"
METHODS = ("all_data", "attent")
LABELS = {"all_data": "w/o AtteNT", "attent": "AtteNT (top 70% after epoch 1)"}


# A stand-in for the paper's pre-trained LLM: a model that has seen arithmetic, but not the test questions.
# "arith3" pre-trains on generated lines "Q:a+b=A:c" with operands in [0, 1000) and at least one of them
# >= 100, so no line is a 2-digit question of the fine-tuning task (train or held-out), while the carries
# and the format are the same.
PRETRAIN_ARITH3 = "arith3"
PRETRAIN_SEED = 10**6 + 3           # the generated pre-training text is the same for every run


def arith3_text(num_lines: int, seed: int = PRETRAIN_SEED) -> str:
    """`num_lines` distinct additions with an operand >= 100 (operands < 1000), one per line, in the arith format."""
    a_P, b_P = np.divmod(np.arange(1000 * 1000), 1000)
    keep_P = (a_P >= 100) | (b_P >= 100)
    if not 1 <= num_lines <= int(keep_P.sum()):
        raise ValueError(f"pretrain_lines: got {num_lines!r}, expected 1..{int(keep_P.sum())}")
    pick = np.random.default_rng(seed).choice(np.flatnonzero(keep_P), size=num_lines, replace=False)
    return "".join(f"Q:{a}+{b}=A:{a + b}\n" for a, b in zip(a_P[pick].tolist(), b_P[pick].tolist()))


@dataclasses.dataclass(frozen=True)
class Config:
    num_train: int = 8000           # fine-tuning questions (2-digit additions: 10^4 in all, with the test set)
    num_test: int = 1000            # held-out questions for exact match
    epochs: int = 5                 # fine-tuning epochs (the paper: five)
    ratio: float = 0.7              # AtteNT: share of questions kept after the first epoch (the paper: 70%)
    batch_size: int = 64            # global batch size
    learning_rate: float = 3e-3     # peak AdamW learning rate (pre-training and fine-tuning)
    width: int = 0                  # decoder width; 0 = the library default (128)
    depth: int = 0                  # decoder blocks; 0 = the library default (2)
    num_heads: int = 0              # attention heads; 0 = the library default (4)
    pretrain: str = "none"          # none | arith3 (generated, see PRETRAIN_ARITH3) | a text file both methods
                                    # pre-train on first (next-character prediction)
    pretrain_epochs: int = 2        # pre-training epochs on that text (not timed)
    pretrain_lines: int = 40000     # arith3: generated pre-training lines
    context: int = 64               # pre-training window length in characters (≥ 14, a question and its answer)
    seeds: tuple = (0, 1, 2)        # training seeds (model init, teacher, data order)

    def __post_init__(self):
        for name in ("num_train", "num_test", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: got {getattr(self, name)!r}, expected an int >= 1")
        if self.epochs < 2:
            raise ValueError(f"epochs: got {self.epochs}, expected >= 2 (AtteNT selects after the first epoch)")
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio: got {self.ratio!r}, expected a number in (0, 1]")
        if self.pretrain not in ("none", PRETRAIN_ARITH3) and not os.path.isfile(self.pretrain):
            raise ValueError(f"pretrain: got {self.pretrain!r}, expected 'none', {PRETRAIN_ARITH3!r} "
                             f"or an existing text file")
        for name in ("pretrain_epochs", "context", "pretrain_lines"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: got {getattr(self, name)!r}, expected an int >= 1")
        common.check_seeds(self.seeds)


QUICK = Config(num_train=256, num_test=32, epochs=2, batch_size=32, width=32, depth=1, num_heads=2, seeds=(0,))


def train_config(config: Config, method: str, seed: int, text_file: str = ""):
    """The `TrainConfig` of one method and seed (pre-training on `text_file` if given)."""
    from attent_jax.training.config import TrainConfig

    base = dict(task="arith", num_train=config.num_train, num_test=config.num_test, epochs=config.epochs,
                batch_size=config.batch_size, learning_rate=config.learning_rate, width=config.width,
                depth=config.depth, num_heads=config.num_heads, context=config.context, text_file=text_file,
                pretrain_epochs=config.pretrain_epochs if text_file else 0, seed=seed,
                progress_bar=False, checkpoint_every=10**9, log_every=50, lr_schedule_by="epochs")
    if method == "all_data":
        return TrainConfig.from_flat(**base, selection="none")
    return TrainConfig.from_flat(**base, selection="hard", regime="finetune", ratio=config.ratio)


def run(config: Config, out_dir: str) -> dict:
    """Train both methods for every seed, write JSON/markdown/figure into `out_dir`; returns the payload."""
    env = common.environment(config.seeds)
    text = "" if config.pretrain == "none" else os.path.abspath(config.pretrain)
    if config.pretrain == PRETRAIN_ARITH3:
        os.makedirs(out_dir, exist_ok=True)
        text = os.path.join(os.path.abspath(out_dir), "pretrain_arith3.txt")
        write_atomic(text, arith3_text(config.pretrain_lines))
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    for seed in config.seeds:
        for method in METHODS:
            workdir = os.path.join(out_dir, "runs", f"{method}_seed{seed}")
            r = timing.timed_run(train_config(config, method, seed, text), workdir)
            runs[method].append(r)
            st = r["stages"]["finetune"]
            print(f"[{NAME}] {method:>8s} seed {seed}: fine-tune {st['train_time_s']:.1f}s, exact match "
                  f"{timing.final(r, 'exact_match', 'finetune'):.3f}, seen {st['fraction_seen']:.2f}, "
                  f"process {r['process_s']:.1f}s", flush=True)
    summary = {}
    for method, rs in runs.items():
        st = [r["stages"]["finetune"] for r in rs]
        summary[method] = {
            "train_time_s": [s["train_time_s"] for s in st],
            "exact_match_pct": [100.0 * timing.final(r, "exact_match", "finetune") for r in rs],
            "token_accuracy_pct": [100.0 * timing.final(r, "eval_accuracy", "finetune") for r in rs],
            "final_loss": [timing.final(r, "eval_loss", "finetune") for r in rs],
            "fraction_seen": [s["fraction_seen"] for s in st],
            "scoring_plus_selection_s": [s["scoring_s"] + s["selection_s"] for s in st],
            "seeds": list(config.seeds)}
    a, b = summary["attent"], summary["all_data"]
    checks = {
        "time_ratio_per_seed": [x / y for x, y in zip(a["train_time_s"], b["train_time_s"])],
        # A method whose cost is proportional to its examples would take this share of the baseline's time.
        "ideal_time_ratio": stats.mean_std(a["fraction_seen"])[0],
        "exact_match_gap_points": stats.mean_std(a["exact_match_pct"])[0] - stats.mean_std(b["exact_match_pct"])[0]}
    checks["time_ratio"] = float(np.mean(checks["time_ratio_per_seed"]))
    payload = {"experiment": NAME, "paper": "Table 1", "config": dataclasses.asdict(config), "environment": env,
               "timing": "fine-tuning stage: optimizer steps + scoring + selection; compilation, evaluation "
                         "(greedy decoding), checkpoints excluded (experiments/timing.py)",
               "summary": summary, "checks": checks,
               "runs": {m: [{k: r[k] for k in ("config", "result", "epochs", "stages", "compile_s", "process_s",
                                                "load_average", "workdir")} for r in rs] for m, rs in runs.items()}}
    figure = plot(runs, out_dir)
    paths = common.write_outputs(out_dir, NAME, payload, markdown(config, env, summary, checks))
    for line in _check_lines(checks):
        print(f"[{NAME}] {line}")
    common.print_outputs(NAME, [paths["json"], paths["markdown"], figure])
    return payload


def _check_lines(checks: dict) -> list[str]:
    return [f"AtteNT fine-tuning time / w/o AtteNT = {checks['time_ratio']:.3f} "
            f"(ideal for its share of examples: {checks['ideal_time_ratio']:.3f})",
            f"AtteNT exact match - w/o AtteNT = {checks['exact_match_gap_points']:+.2f} points"]


def markdown(config: Config, env: dict, summary: dict, checks: dict) -> str:
    headers = ["method", "fine-tuning time (s)", "exact match (%)", "token accuracy (%)", "test loss",
               "fraction of examples seen", "scoring + selection (s)"]
    rows = [[LABELS[m], stats.fmt_mean_std(s["train_time_s"], 1), stats.fmt_mean_std(s["exact_match_pct"], 2),
             stats.fmt_mean_std(s["token_accuracy_pct"], 2), stats.fmt_mean_std(s["final_loss"], 4),
             stats.fmt_mean_std(s["fraction_seen"], 3), stats.fmt_mean_std(s["scoring_plus_selection_s"], 2)]
            for m, s in summary.items()]
    start = ("from random initialization (no pre-training)" if config.pretrain == "none" else
             f"pre-trained for {config.pretrain_epochs} epochs on {os.path.basename(config.pretrain)}")
    lines = ["# Fine-tuning with and without AtteNT (paper Table 1, CPU scale)\n",
             f"arith (2-digit additions), {config.num_train} training / {config.num_test} held-out questions, "
             f"decoder (width {config.width or 'default'}, depth {config.depth or 'default'}) {start}; "
             f"{config.epochs} epochs, batch {config.batch_size}, lr {config.learning_rate}; "
             f"mean ± std over seeds {list(config.seeds)}.\n",
             f"Measured on: {common.environment_line(env)}.\n",
             "Fine-tuning time = optimizer steps + scoring + selection of the fine-tuning stage; compilation, "
             "evaluation (greedy decoding) and checkpoints excluded.\n",
             stats.markdown_table(headers, rows), ""]
    lines += [f"- {line}" for line in _check_lines(checks)]
    return "\n".join(lines) + "\n"


def plot(runs: dict, out_dir: str) -> str:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for method, rs in runs.items():
        rows = [[e for e in r["epochs"] if e["stage"] == "finetune"] for r in rs]
        t = np.mean([[e["stage_time_s"] for e in rr] for rr in rows], axis=0)
        ep = np.arange(1, len(rows[0]) + 1)
        em = 100.0 * np.mean([[e["exact_match"] for e in rr] for rr in rows], axis=0)
        loss = np.mean([[e["eval_loss"] for e in rr] for rr in rows], axis=0)
        axes[0].plot(t, em, marker="o", label=LABELS[method])
        axes[1].plot(ep, em, marker="o", label=LABELS[method])
        axes[2].plot(t, loss, marker="o", label=LABELS[method])
    for ax, xl, yl in ((axes[0], "fine-tuning time (s)", "exact match (%)"), (axes[1], "epoch", "exact match (%)"),
                       (axes[2], "fine-tuning time (s)", "test loss (answer tokens)")):
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("arith fine-tuning (mean over seeds)")
    return common.save_figure(fig, os.path.join(out_dir, "curves.png"))


def main(argv=None) -> int:
    return common.run_main(argv, NAME, Config, QUICK, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
