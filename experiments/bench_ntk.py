"""Benchmark of the attention NTK implementations (paper §4.2: the closed form's O(N²n²(d + d')) cost).

For each number of sequences N (default 64, 256, 1024) of n = 16 elements with
d = d' = 64, o = 1 (float32, the paper's single-head learner, c = 1), it times
`attent_jax.learner.ntk.empirical_ntk_fn` with ``x2 = None`` and the default
``trace_axes=(-1,)`` — output (N, N, n, n) — for each implementation:

- time: the best of several calls after one warm-up call (which compiles), each
  ended with ``block_until_ready``: at least ``repeats``, then more (up to
  ``max_repeats``) while their total stays under ``time_budget`` seconds.
  Implementations are interleaved within each round so that they share the
  machine's load; ratios from one run are what count. When the warm-up took
  longer than ``slow_seconds`` it is the only call, and the time reported is
  its duration less its compilation (JAX's compile events). An implementation
  is skipped at a size where its time predicted from the previous size
  (× (N/N_prev)²) exceeds ``max_seconds``.
- memory, two figures: *XLA* = temp + argument + output bytes from the compiled
  program's ``memory_analysis()`` (for a chunked run: the program of one
  ``batch_size`` × ``batch_size`` block plus the full output buffer, which is
  what the chunked loop holds); *ΔRSS* = the process's peak resident memory
  during a timed call above its resident memory just before (sampled every 2 ms
  by a thread, so a brief peak can be missed; for a warm-up-only run it also
  holds the compiler's memory).
- agreement: max-abs relative error of each kernel against "jacobian".

Sizes above ``chunk_above`` use ``batch_size`` chunking for every
implementation (the Jacobian of 1024 sequences would not fit comfortably).
Writes bench_ntk.json, bench_ntk.md and bench_ntk_time.png to ``--out``
(default experiments/results/bench_ntk), with device and versions.

    python -m experiments.bench_ntk                      # full (a few minutes on 2 cores)
    python -m experiments.bench_ntk --sizes 64 256       # a subset
    python -m experiments.bench_ntk --quick              # smoke test (seconds)
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import numpy as np

from . import common, stats, timing

NAME = "bench_ntk"
IMPLEMENTATIONS = ("jacobian", "ntvp", "analytic")
TARGET_SPEEDUP = 12.0   # analytic vs jacobian at TARGET_N (the project's goal, not a paper figure)
TARGET_N = 256


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    sizes: tuple = (64, 256, 1024)            # numbers of sequences N (kernel N×N×n×n)
    seq_len: int = 16                         # n: elements per sequence
    d_in: int = 64                            # d: element feature size
    d_qk: int = 64                            # d': query/key width
    implementations: tuple = IMPLEMENTATIONS  # which implementations to time ("jacobian" first: the reference)
    repeats: int = 3                          # at least this many timed calls per implementation and size (best reported)
    max_repeats: int = 12                     # at most this many, while their total stays within time_budget
    time_budget: float = 4.0                  # seconds of timed calls after which no more are added beyond `repeats`
    chunk_above: int = 256                    # sizes N above this are computed in blocks of batch_size
    batch_size: int = 256                     # block size (examples) of chunked runs
    slow_seconds: float = 20.0                # a warm-up slower than this is the only call: time = warm-up − compile
    max_seconds: float = 120.0                # skip a run whose predicted time exceeds this
    seed: int = 0                             # inputs and weights

    def __post_init__(self):
        if not self.sizes or any(not isinstance(n, int) or n < 1 for n in self.sizes):
            raise ValueError(f"sizes: got {self.sizes!r}, expected positive integers")
        common.check_choices("implementations", self.implementations, IMPLEMENTATIONS)
        for name in ("seq_len", "d_in", "d_qk", "repeats", "max_repeats", "chunk_above", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: got {getattr(self, name)!r}, expected a positive integer")
        if self.max_repeats < self.repeats:
            raise ValueError(f"max_repeats: got {self.max_repeats}, expected >= repeats ({self.repeats})")


QUICK = BenchConfig(sizes=(8, 20), seq_len=4, d_in=8, d_qk=8, repeats=2, max_repeats=2, chunk_above=8,
                    batch_size=8)


class _PeakRSS:
    """Peak resident memory above the level at entry, sampled by a thread."""

    def __init__(self, interval: float = 2e-3):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.delta = self.peak - self.base


def _xla_bytes(compiled) -> int:
    m = compiled.memory_analysis()
    return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)


def _xla_memory(ntk, x, params, chunk):
    """XLA's memory figure for the program a call runs (see the module docstring)."""
    import jax
    if chunk is None:
        return _xla_bytes(jax.jit(lambda a, p: ntk(a, None, p)).lower(x, params).compile())
    n = x.shape[0]
    block = jax.jit(lambda a, b, p: ntk(a, b, p)).lower(x[:chunk], x[n - chunk:], params).compile()
    out_bytes = n * n * x.shape[1] ** 2 * x.dtype.itemsize
    return _xla_bytes(block) + out_bytes


def _timed(ntk, x, params):
    with _PeakRSS() as rss:
        t0 = time.perf_counter()
        kernel = ntk(x, None, params).block_until_ready()
        seconds = time.perf_counter() - t0
    return kernel, seconds, rss.delta


def run(config: BenchConfig, out_dir: str) -> dict:
    import jax
    import jax.numpy as jnp
    from attent_jax.learner.model import LearnerConfig, init_params, learner_fn
    from attent_jax.learner.ntk import empirical_ntk_fn

    learner = LearnerConfig(d_in=config.d_in, d_qk=config.d_qk)
    params = init_params(learner, jax.random.key(config.seed))
    f = learner_fn(learner)
    env = common.environment(seeds=[config.seed])
    rows, last_time = [], {}
    for n in config.sizes:
        x = np.random.default_rng(config.seed).standard_normal((n, config.seq_len, config.d_in)).astype(np.float32)
        chunk = config.batch_size if n > config.chunk_above else None
        runs = {}
        for impl in config.implementations:
            prev = last_time.get(impl)
            predicted = prev[1] * (n / prev[0]) ** 2 if prev else None
            if predicted is not None and predicted > config.max_seconds:
                print(f"N={n} {impl}: skipped (predicted {predicted:.0f} s > max_seconds {config.max_seconds:.0f})")
                runs[impl] = {"skipped": True, "predicted_s": predicted}
                continue
            ntk = empirical_ntk_fn(f, implementation=impl, learner_config=learner, batch_size=chunk)
            with timing.CompileLog() as log:
                kernel, cold, rss = _timed(ntk, x, params)
            r = runs[impl] = {"ntk": ntk, "cold_s": cold, "compile_s": log.total(), "kernel": kernel,
                              "times": [], "rss": []}
            if cold > config.slow_seconds:
                # One call is all a slow run gets: its time is the warm-up's less its compilation.
                r.update(times=[cold - r["compile_s"]], rss=[rss], method="warm-up − compile")
            else:
                r["method"] = "best of timed calls"
            print(f"N={n} {impl}: warm-up {cold:.2f} s (compile {r['compile_s']:.2f} s)", flush=True)
        reference = runs.get("jacobian", {}).get("kernel")
        for r in runs.values():
            if "kernel" in r:
                k = r.pop("kernel")
                r["rel_err"] = None if reference is None else float(jnp.max(jnp.abs(k - reference)) / jnp.max(jnp.abs(reference)))
                del k
        del reference
        # Interleaved rounds: every implementation sees the same spells of load.
        # At least `repeats` calls each, more (up to max_repeats) while within time_budget.
        for round_ in range(config.max_repeats):
            for r in runs.values():
                if r.get("skipped") or r["method"] != "best of timed calls":
                    continue
                if round_ >= config.repeats and sum(r["times"]) >= config.time_budget:
                    continue
                kernel, seconds, rss = _timed(r["ntk"], x, params)
                del kernel
                r["times"].append(seconds)
                r["rss"].append(rss)
        for impl, r in runs.items():
            row = {"N": n, "implementation": impl, "chunk": chunk}
            if r.get("skipped"):
                row.update(skipped=True, predicted_s=r["predicted_s"])
            else:
                row.update(time_s=min(r["times"]), median_s=float(np.median(r["times"])), times_s=r["times"],
                           method=r["method"], cold_s=r["cold_s"], compile_s=r["compile_s"],
                           rss_bytes=max(r["rss"]), xla_bytes=_xla_memory(r["ntk"], x, params, chunk),
                           rel_err_vs_jacobian=r["rel_err"])
                last_time[impl] = (n, row["time_s"])
            rows.append(row)
        jac = next((r for r in rows if r["N"] == n and r["implementation"] == "jacobian" and "time_s" in r), None)
        for r in rows:
            if r["N"] == n and "time_s" in r and jac is not None:
                r["speedup_vs_jacobian"] = jac["time_s"] / r["time_s"]
                r["median_speedup_vs_jacobian"] = jac["median_s"] / r["median_s"]
                r["xla_memory_ratio_vs_jacobian"] = r["xla_bytes"] / jac["xla_bytes"]
        for r in rows:
            if r["N"] == n:
                print(_row_text(r), flush=True)

    target = next((r.get("speedup_vs_jacobian") for r in rows
                   if r["N"] == TARGET_N and r["implementation"] == "analytic"), None)
    payload = {"config": dataclasses.asdict(config), "environment": env, "rows": rows,
               "target": {"N": TARGET_N, "speedup_needed": TARGET_SPEEDUP, "speedup": target,
                          "met": None if target is None else target >= TARGET_SPEEDUP}}
    markdown = _markdown(config, env, rows, payload["target"])
    paths = common.write_outputs(out_dir, NAME, payload, markdown)
    figure = _figure(rows, os.path.join(out_dir, f"{NAME}_time.png"))
    print()
    print(markdown)
    common.print_outputs(NAME, [paths["json"], paths["markdown"], figure])
    return payload


HEADERS = ("N", "implementation", "chunk", "time (s)", "calls", "warm-up (s)", "× vs jacobian", "× (medians)",
           "XLA mem",
           "XLA mem ratio", "ΔRSS peak", "rel. err vs jacobian")


def _size(nbytes):
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def _cells(r):
    if r.get("skipped"):
        return (r["N"], r["implementation"], r["chunk"] or "—", f"skipped (predicted {r['predicted_s']:.0f} s)",
                "", "", "", "", "", "", "", "")
    fmt = lambda v, spec: "—" if v is None else format(v, spec)
    calls = len(r["times_s"]) if r["method"] == "best of timed calls" else "1*"
    return (r["N"], r["implementation"], r["chunk"] or "—", f"{r['time_s']:.3f}", calls, f"{r['cold_s']:.2f}",
            fmt(r.get("speedup_vs_jacobian"), ".1f"), fmt(r.get("median_speedup_vs_jacobian"), ".1f"),
            _size(r["xla_bytes"]),
            fmt(r.get("xla_memory_ratio_vs_jacobian"), ".2f"), _size(r["rss_bytes"]),
            fmt(r["rel_err_vs_jacobian"], ".1e"))


def _row_text(r):
    return "  ".join(f"{h}={c}" for h, c in zip(HEADERS, _cells(r)))


def _markdown(config, env, rows, target):
    met = stats.verdict(target["met"])
    speed = "not measured" if target["speedup"] is None else f"{target['speedup']:.1f}× (best times)"
    return (f"# Attention NTK: implementation benchmark\n\n"
            f"n = {config.seq_len}, d = {config.d_in}, d' = {config.d_qk}, o = 1, H = 1, float32, x2 = None, "
            f"trace_axes=(-1,); time = best of {config.repeats}–{config.max_repeats} calls after a warm-up (calls "
            f"column), or, when the warm-up took > {config.slow_seconds:.0f} s, that one call less its compile time "
            f"(calls = 1*); sizes N > {config.chunk_above} chunked in blocks of "
            f"{config.batch_size}. × vs jacobian: ratio of best times; × (medians): of median times.\n"
            f"XLA mem = temp + arguments + output of the compiled program (chunked: one block's program + the full "
            f"output); ΔRSS = sampled peak resident memory above the level before the call.\n\n"
            f"{common.environment_line(env)}\n\n"
            + stats.markdown_table(HEADERS, [_cells(r) for r in rows])
            + f"\nanalytic vs jacobian at N = {TARGET_N}: {speed} (target ≥ {TARGET_SPEEDUP:.0f}×: {met})\n")


def _figure(rows, path):
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for impl in IMPLEMENTATIONS:
        pts = [(r["N"], r["time_s"]) for r in rows if r["implementation"] == impl and "time_s" in r]
        if pts:
            ax.loglog(*zip(*pts), marker="o", label=impl)
    ax.set_xlabel("N (sequences)")
    ax.set_ylabel("time per kernel (s)")
    ax.set_title("Empirical attention NTK")
    ax.legend()
    return common.save_figure(fig, path)


def main(argv=None) -> int:
    return common.run_main(argv, NAME, BenchConfig, QUICK, __doc__, run)


if __name__ == "__main__":
    raise SystemExit(main())
