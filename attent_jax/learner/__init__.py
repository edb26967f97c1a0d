"""The math: the single-layer attention learner (eq. 2), its importance-adaptive gradient (§4.1) and its empirical NTK.

Imports nothing of attent_jax outside this folder.
"""
