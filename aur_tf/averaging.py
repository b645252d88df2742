"""The mean of a run's newest checkpoints: the mask net that a run with
`--average_checkpoints=N` hands to its test scoring and to export.

Why: at a constant learning rate the adversarial game keeps moving the mask net's weights around
a good solution rather than letting them settle on it. The mean of snapshots taken thousands of
steps apart lies nearer the centre of that wandering (Izmailov et al. 2018, "Averaging weights
leads to wider optima and better generalization"; Yazici et al. 2019, "The unusual effectiveness
of averaging in GAN training"). The training itself is unchanged; docs/results.md has the gain
measured on validation mixtures.
"""

import logging

import numpy as np

from aur_tf import rundir
from aur_tf.errors import UserError

log = logging.getLogger("aur_tf")


def average_mask_net(workdir, config, count):
    """A mask net whose every weight is the mean of that weight over the run's newest `count`
    checkpoints.

    BatchNorm's moving statistics are averaged like the other weights (docs/method.md has why
    they are not re-estimated). A checkpoint that does not load is left out, with a warning.
    Nothing in the workdir is written.

    Args:
      workdir: the run's workdir.
      config: the run's `Config`.
      count: how many of the newest checkpoints to average (fewer if the run has fewer).

    Returns:
      `(mask_net, steps)`: a float32 Keras model `[batch, H, W, C] -> [batch, H, W, C]` masks in
      (0, 1), and the steps of the checkpoints averaged, oldest first.

    Raises:
      UserError: none of those checkpoints loads.
    """
    newest = rundir.list_checkpoints(workdir)[-count:]
    weights, steps = [], []
    mask_net = None
    for step, prefix in newest:
        try:
            mask_net, _ = rundir.restore_mask_net(workdir, config, prefix)
        except UserError as error:
            log.warning("left out of the average of checkpoints: %s", error)
            continue
        weights.append(mask_net.get_weights())
        steps.append(step)
    if not weights:
        directory = rundir.path(workdir, rundir.CHECKPOINTS_DIR)
        raise UserError(
            f"none of the newest {count} checkpoints in {directory} loads, so there is "
            "nothing to average: train the run first, or give --average_checkpoints=1 to use "
            "the newest checkpoint that loads"
        )
    mask_net.set_weights([np.mean(values, axis=0) for values in zip(*weights)])
    return mask_net, steps
