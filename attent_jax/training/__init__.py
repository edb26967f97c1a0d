"""Training: the run's configs, the sharded loop, the mesh, Orbax checkpoints and the run log.

Imports teaching, models, tasks and learner; nothing imports training but the command line.
"""
