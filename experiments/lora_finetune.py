"""Paper Table 1's regime at CPU scale: LoRA fine-tuning of a pre-trained decoder, with and without AtteNT.

The paper (§5, Table 1; Appendix C) fine-tunes pre-trained 7B models with LoRA
adapters on all linear layers (lora_alpha = r, loss on responses only, AdamW,
cosine schedule with 3% warm-up) for five epochs; AtteNT trains on all data in
the first epoch, recording the losses, then on the 70% of examples with the
largest losses, because "pretrained models already perform well on most
instances". Here, per seed, one run of `attent train --task arith --lora-rank R`:

1. pre-training (not timed, identical for every method of a seed: same seed,
   same data, the pre-training stage's teacher takes all data): all parameters
   of the `CausalDecoder` learn next-character prediction on generated
   additions with an operand of 3 digits (`experiments.finetune.arith3_text`)
   and the 2-digit additions whose sum stays below 100 (`pretrain_text`: never
   a held-out question, never a 2-digit sum of 100 or more), so the base
   already solves part of the 2-digit task (its exact match is measured on the
   held-out questions at the stage boundary);
2. LoRA fine-tuning on 2-digit additions ("Q:23+58=A:" → "81\\n", loss on the
   answer): base weights frozen, rank-r adapters on every linear layer trained
   (`attent_jax.models.lora`), a fresh AdamW over the adapters only.

The pre-training runs once per seed, in the ``all_data`` run; the other methods of that seed resume
from its checkpoint at the stage boundary (`start_at_boundary`: the same state they would reach
themselves, checked bitwise by the quick test).

Methods (fine-tuning stage), interleaved per seed:

- ``all_data``: every question every epoch for `epochs` epochs ("w/o AtteNT");
- ``attent``: the ``finetune`` regime: epoch 1 on all data with the losses
  recorded, then the top `ratio` by loss (Hard selection) each later epoch;
- ``all_data_matched``: the compute-matched baseline: all data for
  round(b · epochs) epochs, b = AtteNT's measured share of examples seen (the
  same seed's run), its learning-rate schedule laid out over those epochs, so
  fully decayed at its end (as the all-data budget runs of `experiments.frontier`).

Reported, mean ± std over seeds: the base's exact match before fine-tuning,
final exact match, fine-tuning time (`experiments.timing`: steps + scoring +
selection; compilation, evaluation, checkpoints excluded), and the share of
the all-data run's examples each method trains on.

Outputs (``--out``, default experiments/results/lora_finetune): lora_finetune.json,
lora_finetune.md, curves.png, runs/METHOD_seedK/.

Run:
    python -m experiments.lora_finetune            # full: 8000 questions, 5 epochs, 3 methods, seeds 0 1 2
    python -m experiments.lora_finetune --quick    # smoke test

Cost: ``--quick`` took 44 s wall here (2 cores, 1-min load 5.5). The full mode took 22.5 min
(2026-12-05, with 48 pre-training epochs: ~4.5 min per seed when alone on the machine, ~11 min while
other jobs shared the cores; each fine-tuning run 14-19 s of timed work, ~21 s with its evaluations).
With 24 pre-training epochs the base reached 21.6, 5.8 and 4.9% exact match (seeds 0-2), below the
30-70% aim, and fine-tuning then either learned the three-digit sums or stalled
(experiments/results/lora_finetune_short_base); with 48 it reaches 46.7, 43.3 and 41.4%.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys

import numpy as np

from attent_jax.training.run_log import write_atomic
from . import common, stats, timing
from .finetune import PRETRAIN_SEED, arith3_text

NAME = "lora_finetune"
METHODS = ("all_data", "attent", "all_data_matched")
LABELS = {"all_data": "w/o AtteNT (all data)", "attent": "AtteNT (epoch 1 all, then top 70%)",
          "all_data_matched": "all data, compute-matched epochs"}


# The longest pre-training line is "Q:999+999=A:1998\n" (17 characters): lines are padded to 18.
LINE_CHARS = 18


@dataclasses.dataclass(frozen=True)
class Config:
    num_train: int = 8000           # fine-tuning questions (2-digit additions)
    num_test: int = 1000            # held-out questions for exact match
    epochs: int = 5                 # fine-tuning epochs (the paper: five)
    ratio: float = 0.7              # AtteNT: share of questions kept after the first epoch (the paper: 70%)
    lora_rank: int = 8              # LoRA rank r on every linear layer (alpha = r, as the paper)
    batch_size: int = 64            # global batch size
    learning_rate: float = 3e-3     # peak AdamW learning rate (pre-training, and fine-tuning of the adapters)
    warmup_ratio: float = 0.03      # share of each stage's schedule in linear warm-up (the paper: 3%)
    width: int = 0                  # decoder width; 0 = the library default (128)
    depth: int = 0                  # decoder blocks; 0 = the library default (2)
    num_heads: int = 0              # attention heads; 0 = the library default (4)
    pretrain_lines: int = 2000      # generated 3-digit-operand additions the base pre-trains on, beside the 2-digit
                                    # ones with a sum < 100 (few lines, many epochs: 40000 x 4 left the base near 0%)
    pretrain_epochs: int = 48       # pre-training epochs (all parameters; not timed; 24 left seeds 1-2 near 5%)
    context: int = 71               # pre-training window length; context + 1 a multiple of 18 (whole padded lines)
    seeds: tuple = (0, 1, 2)        # training seeds (model init, adapters, teacher, data order)

    def __post_init__(self):
        for name in ("num_train", "num_test", "epochs", "batch_size", "lora_rank", "pretrain_lines",
                     "pretrain_epochs", "context"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: got {getattr(self, name)!r}, expected an int >= 1")
        if (self.context + 1) % LINE_CHARS:
            raise ValueError(f"context: got {self.context}, expected context + 1 a multiple of {LINE_CHARS} (windows "
                             "of whole pre-training lines)")
        if self.epochs < 2:
            raise ValueError(f"epochs: got {self.epochs}, expected >= 2 (AtteNT selects after the first epoch)")
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio: got {self.ratio!r}, expected a number in (0, 1]")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio: got {self.warmup_ratio!r}, expected a number in [0, 1)")
        common.check_seeds(self.seeds)


QUICK = Config(num_train=256, num_test=32, epochs=3, batch_size=32, width=32, depth=1, num_heads=2, lora_rank=4,
               pretrain_lines=1500, pretrain_epochs=1, context=35, seeds=(0,))


def short_sum_additions(exclude=()) -> list[str]:
    """Every 2-digit addition "Q:a+b=A:c" (a, b < 100) whose sum has two digits or fewer, minus `exclude` (questions)."""
    skip = set(exclude)
    return [f"Q:{a}+{b}=A:{a + b}\n" for a in range(100) for b in range(100)
            if a + b < 100 and f"Q:{a}+{b}=A:" not in skip]


def pretrain_text(config: Config) -> str:
    """The base's pre-training text: `pretrain_lines` 3-digit-operand additions and the 2-digit ones with a sum < 100.

    A related but different distribution: the format, carries, 3-digit sums of 3-digit operands, and
    the half of the 2-digit additions whose sum stays below 100, but never a held-out question of the
    fine-tuning task (those of its test split are left out) and never a 2-digit addition that reaches
    100: the three-digit answers are what fine-tuning must teach. (The carry-free 2-digit additions
    alone, 30% of the task, left the base at 25% exact match, below the 30-70% aim.) Lines shuffled
    with the fixed `PRETRAIN_SEED`: every run the same text.
    """
    from attent_jax.tasks.generators import make_arith_questions

    questions, _ = make_arith_questions(config.num_train + config.num_test, 2, "+", 0)  # the arith task's draw
    lines = arith3_text(config.pretrain_lines).splitlines(keepends=True)
    lines += short_sum_additions(exclude=questions[config.num_train:])
    order = np.random.default_rng(PRETRAIN_SEED).permutation(len(lines))
    # Every line padded with newlines to LINE_CHARS, and windows of a whole number of lines: each window
    # starts at a question, as a fine-tuning prompt does (at position 0, with nothing before it).
    return "".join(lines[i].ljust(LINE_CHARS, "\n") for i in order)


def train_config(config: Config, method: str, seed: int, text_file: str, epochs: int | None = None):
    """The `TrainConfig` of one method and seed: pre-training on `text_file`, then LoRA fine-tuning."""
    from attent_jax.training.config import TrainConfig

    base = dict(task="arith", num_train=config.num_train, num_test=config.num_test,
                epochs=config.epochs if epochs is None else epochs, batch_size=config.batch_size,
                learning_rate=config.learning_rate, warmup_ratio=config.warmup_ratio, width=config.width,
                depth=config.depth, num_heads=config.num_heads, context=config.context, text_file=text_file,
                pretrain_epochs=config.pretrain_epochs, lora_rank=config.lora_rank, seed=seed,
                progress_bar=False, checkpoint_every=10**9, keep_checkpoints=config.pretrain_epochs + config.epochs + 1,
                log_every=50, lr_schedule_by="epochs")
    if method == "attent":
        return TrainConfig.from_flat(**base, selection="hard", regime="finetune", ratio=config.ratio)
    return TrainConfig.from_flat(**base, selection="none")


def base_exact_match(train_cfg, run: dict) -> float:
    """Exact match on the held-out questions of the run's model at the start of fine-tuning (its base).

    Read from the checkpoint saved at the stage boundary (after the last pre-training epoch): the
    adapters there are untouched (B = 0), so this is the pre-trained base's own exact match.
    """
    import jax
    from flax import nnx, traverse_util

    from attent_jax.models.decoder import greedy_decode
    from attent_jax.tasks.generators import answers_match
    from attent_jax.training.checkpoint import Checkpointer, abstract_like
    from attent_jax.training.loop import Trainer

    boundary = _boundary(run)
    trainer = Trainer(train_cfg, run["workdir"])
    ckpt = Checkpointer(os.path.join(run["workdir"], "checkpoints"))
    try:
        state, _ = ckpt.restore(boundary, abstract_like(trainer.abstract_states[-1], trainer.stage_shardings[-1]))
    finally:
        ckpt.close()
    b = [v for path, v in traverse_util.flatten_dict(jax.device_get(state["params"])).items() if path[-1] == "lora_b"]
    if not b or any(np.any(v) for v in b):
        raise ValueError(f"checkpoint {boundary} of {run['workdir']}: expected the base with untouched adapters "
                         "(B = 0) at the stage boundary")
    stage = trainer.stages[-1]
    tokens = greedy_decode(nnx.merge(trainer.graphdef, state["params"]), stage.decode["prompts"],
                           stage.decode["prompt_lens"])
    hits = answers_match(jax.device_get(tokens), stage.decode["prompt_lens"], stage.decode["answers"],
                         stage.decode["vocab"])
    return float(np.mean(hits))


def _boundary(run: dict) -> int:
    return [e["step"] for e in run["epochs"] if e["stage"] == "pretrain"][-1]


def start_at_boundary(base: dict, train_cfg):
    """``prepare(workdir)`` for `timing.timed_run`: the folder resumes at the base run's stage boundary.

    It gets the base run's checkpoint at the end of pre-training, its metrics records up to there and
    this run's own config.json, so the run resumes there, at the start of fine-tuning. The
    pre-training stage of a seed is the same for every method (same seed, data, model and its
    teacher takes all data; the fine-tuning stage's teacher state is still fresh there, and the
    same for every selection), so this is the state this run would reach itself:
    tests/test_lora_finetune.py checks that it ends exactly as a run from scratch does.
    """
    from attent_jax.training.workdir import CHECKPOINT_DIR, CONFIG_FILE, METRICS_FILE

    step, source = _boundary(base), base["workdir"]

    def prepare(workdir: str) -> None:
        shutil.copytree(os.path.join(source, CHECKPOINT_DIR, str(step)), os.path.join(workdir, CHECKPOINT_DIR, str(step)))
        kept = []
        with open(os.path.join(source, METRICS_FILE)) as f:
            for line in f:
                if json.loads(line).get("step", 0) > step:
                    break
                kept.append(line)
        write_atomic(os.path.join(workdir, METRICS_FILE), "".join(kept))
        write_atomic(os.path.join(workdir, CONFIG_FILE), train_cfg.resolve().to_json() + "\n")
    return prepare


def _share(run: dict, config: Config) -> float:
    """Fine-tuning examples seen over the all-data run's (`epochs` full epochs, partial batches dropped)."""
    B = config.batch_size
    return run["stages"]["finetune"]["examples_seen"] / (config.epochs * (config.num_train // B) * B)


def matched_epochs(config: Config, share: float) -> int:
    """All-data epochs of the compute-matched baseline: AtteNT's measured share of the examples, rounded."""
    return max(1, min(config.epochs, round(share * config.epochs)))


def run(config: Config, out_dir: str) -> dict:
    """Train every method for every seed, write JSON/markdown/figure into `out_dir`; returns the payload."""
    env = common.environment(config.seeds)
    os.makedirs(out_dir, exist_ok=True)
    text = os.path.join(os.path.abspath(out_dir), "pretrain_arith3.txt")
    write_atomic(text, pretrain_text(config))
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    base_em, matched = [], []
    for seed in config.seeds:
        for method in METHODS:
            epochs = None
            if method == "all_data_matched":
                epochs = matched_epochs(config, _share(runs["attent"][-1], config))
                matched.append(epochs)
            cfg = train_config(config, method, seed, text, epochs)
            workdir = os.path.join(out_dir, "runs", f"{method}_seed{seed}")
            if method == "all_data":
                r = base = timing.timed_run(cfg, workdir, keep_checkpoints=True)
                base_em.append(base_exact_match(cfg, r))
            else:
                r = timing.timed_run(cfg, workdir, prepare=start_at_boundary(base, cfg))
            r["share_seen"] = _share(r, config)
            runs[method].append(r)
            if method == METHODS[-1]:
                shutil.rmtree(os.path.join(base["workdir"], "checkpoints"), ignore_errors=True)
            st = r["stages"]["finetune"]
            print(f"[{NAME}] {method:>16s} seed {seed}: fine-tune {st['train_time_s']:.1f}s, exact match "
                  f"{timing.final(r, 'exact_match', 'finetune'):.3f} (base {base_em[-1]:.3f}), share seen "
                  f"{r['share_seen']:.3f}, process {r['process_s']:.1f}s", flush=True)
    summary = {}
    for method, rs in runs.items():
        summary[method] = {
            "train_time_s": [r["stages"]["finetune"]["train_time_s"] for r in rs],
            "exact_match_pct": [100.0 * timing.final(r, "exact_match", "finetune") for r in rs],
            "token_accuracy_pct": [100.0 * timing.final(r, "eval_accuracy", "finetune") for r in rs],
            "final_loss": [timing.final(r, "eval_loss", "finetune") for r in rs],
            "share_seen": [r["share_seen"] for r in rs],
            "epochs": [r["stages"]["finetune"]["epochs"] for r in rs],
            "seeds": list(config.seeds)}
    base_pct = [100.0 * b for b in base_em]
    checks = {"base_exact_match_pct": base_pct, "matched_epochs": matched}
    for m in ("attent", "all_data_matched"):
        checks[f"{m}_time_ratio"] = float(np.mean([a / b for a, b in zip(summary[m]["train_time_s"],
                                                                          summary["all_data"]["train_time_s"])]))
        checks[f"{m}_exact_match_gap_points"] = [a - b for a, b in zip(summary[m]["exact_match_pct"],
                                                                        summary["all_data"]["exact_match_pct"])]
    checks["attent_vs_matched_gap_points"] = [a - b for a, b in zip(summary["attent"]["exact_match_pct"],
                                                                     summary["all_data_matched"]["exact_match_pct"])]
    payload = {"experiment": NAME, "paper": "Table 1 (LoRA regime)", "config": dataclasses.asdict(config),
               "environment": env,
               "timing": "fine-tuning stage: optimizer steps + scoring + selection; pre-training, compilation, "
                         "evaluation (greedy decoding), checkpoints excluded (experiments/timing.py)",
               "summary": summary, "checks": checks,
               "runs": {m: [{k: r[k] for k in ("config", "result", "epochs", "stages", "compile_s", "process_s",
                                                "load_average", "workdir", "share_seen")} for r in rs]
                        for m, rs in runs.items()}}
    figure = plot(runs, out_dir)
    paths = common.write_outputs(out_dir, NAME, payload, markdown(config, env, summary, checks))
    for line in _check_lines(checks):
        print(f"[{NAME}] {line}")
    common.print_outputs(NAME, [paths["json"], paths["markdown"], figure])
    return payload


def _check_lines(checks: dict) -> list[str]:
    return [f"base exact match before fine-tuning: {stats.fmt_mean_std(checks['base_exact_match_pct'], 1)} %",
            f"AtteNT fine-tuning time / w/o AtteNT = {checks['attent_time_ratio']:.3f}; compute-matched all data "
            f"({checks['matched_epochs']} epochs) / w/o AtteNT = {checks['all_data_matched_time_ratio']:.3f}",
            f"AtteNT exact match - w/o AtteNT = {stats.fmt_mean_std(checks['attent_exact_match_gap_points'], 2)} "
            f"points; - compute-matched = {stats.fmt_mean_std(checks['attent_vs_matched_gap_points'], 2)} points"]


def markdown(config: Config, env: dict, summary: dict, checks: dict) -> str:
    headers = ["method", "fine-tuning epochs", "fine-tuning time (s)", "exact match (%)", "token accuracy (%)",
               "test loss", "share of examples seen"]
    rows = [[LABELS[m], "/".join(str(e) for e in s["epochs"]), stats.fmt_mean_std(s["train_time_s"], 1),
             stats.fmt_mean_std(s["exact_match_pct"], 2), stats.fmt_mean_std(s["token_accuracy_pct"], 2),
             stats.fmt_mean_std(s["final_loss"], 4), stats.fmt_mean_std(s["share_seen"], 3)]
            for m, s in summary.items()]
    lines = ["# LoRA fine-tuning of a pre-trained decoder with and without AtteNT (paper Table 1 regime, CPU scale)\n",
             f"arith (2-digit additions), {config.num_train} training / {config.num_test} held-out questions; "
             f"decoder (width {config.width or 'default'}, depth {config.depth or 'default'}) pre-trained with all "
             f"parameters for {config.pretrain_epochs} epochs on {config.pretrain_lines} generated additions with a "
             f"3-digit operand and the 2-digit additions with a sum below 100, no held-out question "
             f"(base exact match before fine-tuning: "
             f"{stats.fmt_mean_std(checks['base_exact_match_pct'], 1)} %), then LoRA rank {config.lora_rank} "
             f"(alpha = r) on every linear layer, base frozen; {config.epochs} epochs, batch {config.batch_size}, "
             f"lr {config.learning_rate}, warm-up {config.warmup_ratio}; mean ± std over seeds {list(config.seeds)}.\n",
             f"Measured on: {common.environment_line(env)}.\n",
             "Fine-tuning time = optimizer steps + scoring + selection of the fine-tuning stage; pre-training, "
             "compilation, evaluation (greedy decoding) and checkpoints excluded.\n",
             stats.markdown_table(headers, rows), ""]
    lines += [f"- {line}" for line in _check_lines(checks)]
    return "\n".join(lines) + "\n"


def plot(runs: dict, out_dir: str) -> str:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method, rs in runs.items():
        rows = [[e for e in r["epochs"] if e["stage"] == "finetune"] for r in rs]
        rows = [rr[:min(map(len, rows))] for rr in rows]   # seeds whose matched epochs differ: the common part
        t = np.mean([[e["stage_time_s"] for e in rr] for rr in rows], axis=0)
        em = 100.0 * np.mean([[e["exact_match"] for e in rr] for rr in rows], axis=0)
        axes[0].plot(t, em, marker="o", label=LABELS[method])
        axes[1].plot(np.arange(1, len(em) + 1), em, marker="o", label=LABELS[method])
    for ax, xl in ((axes[0], "fine-tuning time (s)"), (axes[1], "fine-tuning epoch")):
        ax.set_xlabel(xl)
        ax.set_ylabel("exact match (%)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("arith LoRA fine-tuning of a pre-trained decoder (mean over seeds)")
    return common.save_figure(fig, os.path.join(out_dir, "curves.png"))


def main(argv=None) -> int:
    return common.run_main(argv, NAME, Config, QUICK, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
