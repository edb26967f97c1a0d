"""The single-layer attention learner of eq. 2 as a trainable model (`attent_train --model attention`).

The learner itself lives with its math in `attent_jax.learner.model`; this file
only names it for `attent_jax.models.make_model`.
"""

from attent_jax.learner.model import AttentionLearner, LearnerConfig

# `attent_jax.models.make_model("attention", ...)` builds MODEL(CONFIG, rngs=...).
CONFIG, MODEL = LearnerConfig, AttentionLearner
