"""Comparison methods of the paper's Table 1, run on the same mixtures and scored the same way.

`identity` (M = 1) and `half_mask` (M = 1/2) are the trivial reference rows, `rpca` is robust
PCA per mixture (`rpca.py`), `glo` two generators with learned latent codes (`glo.py`);
`runner.run_baseline` runs any of them; `python -m aur_tf.baselines` is its command line.
"""

METHODS = ("identity", "half_mask", "rpca", "glo")
