"""Scoring separations from mixtures alone: `scores` (the candidate scores), `runs` (every
checkpoint of a training run), `python -m aur_tf.unsupervised --workdir=W` (the command)."""
