"""Teaching: per-example scores, selectors, ratio/interval schedules and the AtteNT teacher.

Usable in any training loop; imports nothing of ours beyond the learner's input checks
(`attent_jax.learner.validate`).
"""
