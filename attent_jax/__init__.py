"""attent-jax: Nonparametric Teaching of Attention Learners (AtteNT) in JAX/Flax.

The public API is importable from here, whatever file a name lives in, so that
internal moves break nobody (as ``nt.empirical_ntk_fn`` in neural-tangents):

    >>> import attent_jax as aj
    >>> aj.LearnerConfig(d_in=4).d_qk, aj.TeacherConfig().regime
    (16, 'scratch')

Subpackages, with dependencies pointing one way (cli -> training -> teaching,
tasks, models -> learner):

- ``learner``: the single-layer attention learner, its importance-adaptive
  gradient and its empirical NTK (the math; no training loop).
- ``teaching``: scores, selectors, schedules and the AtteNT teacher (any loop).
- ``models`` / ``tasks``: the Transformers of the experiments; datasets and the
  generators behind them.
- ``training``: configs, the sharded loop, mesh, checkpoints, the run log.
- ``cli``: the ``attent`` command.

Names resolve lazily (PEP 562), so ``import attent_jax`` does not start JAX.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    # learner: the math
    "LearnerConfig": "attent_jax.learner.model",
    "AttentionLearner": "attent_jax.learner.model",
    "functional": "attent_jax.learner.model",
    "learner_fn": "attent_jax.learner.model",
    "init_params": "attent_jax.learner.model",
    "attention_weights": "attent_jax.learner.model",
    "ImportanceGrad": "attent_jax.learner.importance",
    "importance_grad": "attent_jax.learner.importance",
    "loss_grad": "attent_jax.learner.importance",
    "grads_from_importance": "attent_jax.learner.importance",
    "unit_importance_grad": "attent_jax.learner.importance",
    "empirical_ntk_fn": "attent_jax.learner.ntk",
    "Implementation": "attent_jax.learner.ntk",
    # teaching
    "Teacher": "attent_jax.teaching.teacher",
    "TeacherConfig": "attent_jax.teaching.teacher",
    "TeacherState": "attent_jax.teaching.teacher",
    "selection": "attent_jax.teaching.selection",
    "schedules": "attent_jax.teaching.schedules",
    # models and tasks
    "EncoderConfig": "attent_jax.models.encoder",
    "EncoderClassifier": "attent_jax.models.encoder",
    "DecoderConfig": "attent_jax.models.decoder",
    "CausalDecoder": "attent_jax.models.decoder",
    "make_model": "attent_jax.models",
    "Dataset": "attent_jax.tasks.datasets",
    "load_task": "attent_jax.tasks.datasets",
    "TargetMapping": "attent_jax.tasks.generators",
    "make_target_mapping": "attent_jax.tasks.generators",
    # training
    "TrainConfig": "attent_jax.training.config",
    "Trainer": "attent_jax.training.loop",
    "train_and_evaluate": "attent_jax.training.loop",
    "fit": "attent_jax.training.user_run",
    "restore_params": "attent_jax.training.user_run",
    "NonFiniteLossError": "attent_jax.training.run_log",
    "RecordSource": "attent_jax.training.host_data",
    "open_npy_dir": "attent_jax.training.host_data",
    "save_npy_dir": "attent_jax.training.host_data",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'attent_jax' has no attribute {name!r}")
    module = importlib.import_module(_API[name])
    value = module if module.__name__.rsplit(".", 1)[-1] == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
