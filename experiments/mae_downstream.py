"""What `experiments.mae_pretrain` measures after a pre-training run: downstream accuracy and the MAE's NTK.

Downstream (no selection, the same for every pre-training method): the
pre-trained trunk moves into an `EncoderClassifier` with a fresh head
(`attent_jax.models.mae.classifier_from_mae`), then

- linear probe: the trunk frozen, its pooled features (every patch visible)
  standardized with the training set's mean and std (MAE's probe puts a
  parameter-free BatchNorm before the head, which is the same), and a linear
  softmax head trained by full-batch Adam for `probe_steps` steps;
- full fine-tune: every parameter trained, AdamW with warm-up and cosine
  decay over `finetune_epochs` epochs of minibatches.

Both report test accuracy on MNIST-1D. Each is one jitted function whose
shapes do not change between runs, so a script compiles it once.

NTK: the empirical NTK of the MAE's reconstruction f(θ, x_i) (each example's
masked patches under its own fixed mask) on fixed training examples, traced
over the masked patches and their values, from the run's checkpoints.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attent_jax.learner.ntk import empirical_ntk_fn
from attent_jax.models.mae import classifier_from_mae
from attent_jax.training import loop
from attent_jax.training.checkpoint import Checkpointer, abstract_like
from attent_jax.training.stages import model_builder

from . import timing


# =========================================================================== restoring a run

def restore_mae(train_config, workdir: str, dataset):
    """The finished run's `MaskedAutoencoder` (from its newest checkpoint), and its Trainer."""
    trainer = loop.Trainer(train_config, workdir)
    module = model_builder(trainer.config.model, dataset, trainer.stages)(nnx.Rngs(0))
    ckpt = Checkpointer(os.path.join(workdir, loop.CHECKPOINT_DIR), keep=trainer.config.run.keep_checkpoints)
    try:
        state, _ = ckpt.restore_latest(abstract_like(trainer.abstract_state, trainer.shardings))
    finally:
        ckpt.close()
    return with_params(module, state["params"]), trainer


def with_params(module, params):
    """`module` with its Params replaced by the pure dict `params`."""
    state = nnx.state(module, nnx.Param)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, jax.device_get(params)))
    nnx.update(module, state)
    return module


# =========================================================================== downstream

@functools.partial(jax.jit, static_argnums=(0, 3))
def _features(graphdef, params, x, chunk):
    model = nnx.merge(graphdef, params)
    return jax.lax.map(model.features, x.reshape(-1, chunk, *x.shape[1:])).reshape(x.shape[0], -1)


def _all_features(clf, x: np.ndarray, chunk: int = 500) -> np.ndarray:
    graphdef, params = nnx.split(clf)
    n = len(x)
    pad = -n % chunk
    xp = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
    return np.asarray(_features(graphdef, params, xp, chunk))[:n]


@functools.partial(jax.jit, static_argnums=(3, 4))
def _probe_fit(f_NxD, y_N, key, steps: int, lr: float):
    D, C = f_NxD.shape[1], 10
    params = {"w": jax.random.normal(key, (D, C)) * 0.01, "b": jnp.zeros((C,))}
    tx = optax.adam(lr)

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(f_NxD @ p["w"] + p["b"], y_N).mean()

    def body(_, carry):
        p, opt = carry
        updates, opt = tx.update(jax.grad(loss)(p), opt, p)
        return optax.apply_updates(p, updates), opt
    return jax.lax.fori_loop(0, steps, body, (params, tx.init(params)))[0]


def linear_probe(clf, ds, seed: int, steps: int, lr: float) -> float:
    """Test accuracy (%) of a linear head on the frozen trunk's standardized pooled features."""
    f_train, f_test = _all_features(clf, ds.x_train), _all_features(clf, ds.x_test)
    mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
    p = _probe_fit((f_train - mu) / sd, ds.y_train, jax.random.key(seed), steps, lr)
    pred = np.argmax(((f_test - mu) / sd) @ np.asarray(p["w"]) + np.asarray(p["b"]), axis=1)
    return 100.0 * float(np.mean(pred == ds.y_test))


@functools.partial(jax.jit, static_argnums=(0, 5), donate_argnums=(1, 2))
def _finetune_step(graphdef, params, opt, x, y, tx_spec):
    tx = _optimizer(*tx_spec)

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graphdef, p)(x), y).mean()
    updates, opt = tx.update(jax.grad(loss)(params), opt, params)
    return optax.apply_updates(params, updates), opt


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, params, x):
    return nnx.merge(graphdef, params)(x)


def _optimizer(lr: float, total_steps: int):
    warmup = max(1, total_steps // 20)
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1))
    return optax.adamw(schedule, b1=0.9, b2=0.999, weight_decay=0.05)


def finetune(clf, ds, seed: int, epochs: int, batch_size: int, lr: float) -> float:
    """Test accuracy (%) after training every parameter for `epochs` epochs (AdamW, warm-up + cosine)."""
    graphdef, params = nnx.split(clf)
    params = jax.tree.map(jnp.array, params)   # own copies: the step donates them
    n, B = len(ds.x_train), batch_size
    steps_per_epoch = n // B
    spec = (float(lr), epochs * steps_per_epoch)
    opt = _optimizer(*spec).init(params)
    rng = np.random.default_rng(seed)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    for _ in range(epochs):
        order = rng.permutation(n)[:steps_per_epoch * B].reshape(steps_per_epoch, B)
        for idx in order:
            params, opt = _finetune_step(graphdef, params, opt, x[idx], y[idx], spec)
    logits = np.asarray(_logits(graphdef, params, jnp.asarray(ds.x_test)))
    return 100.0 * float(np.mean(np.argmax(logits, 1) == ds.y_test))


def downstream(mae_model, ds, config, seed: int) -> dict:
    """Linear-probe and fine-tune test accuracy (%) of a pre-trained MAE's trunk (module docstring)."""
    clf = classifier_from_mae(mae_model, ds.num_classes, rngs=nnx.Rngs(1000 + seed))
    return {"probe_acc_pct": linear_probe(clf, ds, seed, config.probe_steps, config.probe_lr),
            "finetune_acc_pct": finetune(clf, ds, seed, config.finetune_epochs, config.batch_size,
                                         config.finetune_lr)}


# =========================================================================== NTK of the reconstruction

def mae_ntk_fn(mae_model, ids_K):
    """``kernel(params, x_K) -> (K, K)``: the empirical NTK of the masked-patch reconstruction of K examples.

    f(θ, x) is the (K, M, P) reconstruction under each example's own fixed mask
    (from `ids_K`), traced over M and P (`empirical_ntk_fn` divides by M·P).
    The examples' masks tie f to the batch, so the kernel takes whole-batch
    Jacobians (``vmap_axes=None``).
    """
    graphdef = nnx.split(mae_model)[0]
    ids = jnp.asarray(ids_K, jnp.int32)

    def f(params, x):
        return nnx.merge(graphdef, params)((x, ids))[0]
    ntk = jax.jit(empirical_ntk_fn(f, trace_axes=(-2, -1), vmap_axes=None, implementation="jacobian"))
    return lambda params, x: np.asarray(jax.device_get(ntk(x, None, params)), np.float64)


def checkpoint_kernels(trainer, workdir: str, dataset, idx: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
    """(epochs, kernels): the reconstruction NTK at initialization (epoch 0) and after each saved epoch."""
    module = model_builder(trainer.config.model, dataset, trainer.stages)(nnx.Rngs(0))
    kernel = mae_ntk_fn(module, idx)
    x = jnp.asarray(dataset.x_train[idx])
    step_to_epoch = {r["step"]: r["epoch"] + 1 for r in timing.read_metrics(workdir) if r.get("event") == "eval"}
    epochs, kernels = [0], [kernel(trainer.init_state()["params"], x)]
    ckpt = Checkpointer(os.path.join(workdir, loop.CHECKPOINT_DIR), keep=trainer.config.run.keep_checkpoints)
    try:
        abstract = abstract_like(trainer.abstract_state, trainer.shardings)
        for step in ckpt.all_steps():
            state, _ = ckpt.restore(step, abstract)
            epochs.append(step_to_epoch.get(step, -1))
            kernels.append(kernel(state["params"], x))
    finally:
        ckpt.close()
    return epochs, kernels
