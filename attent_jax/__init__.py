"""attent-jax: Nonparametric Teaching of Attention Learners (AtteNT) in JAX/Flax."""

__version__ = "0.1.0"
