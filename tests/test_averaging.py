import logging
import os

import numpy as np
import pytest

from aur_tf import averaging, rundir
from aur_tf.errors import UserError


def _save_checkpoints(config, values):
    """Checkpoints ckpt-1, ckpt-2, ... of the run's mask net with every weight set to a value of
    `values`, in order; returns their prefixes."""
    import tensorflow as tf

    from aur_tf import models

    net = models.build_mask_net(config.image_size, config.channels, config.mask_width)
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(mask_net=net),
        os.path.join(config.workdir, rundir.CHECKPOINTS_DIR),
        max_to_keep=None,
    )
    prefixes = []
    for step, value in enumerate(values, start=1):
        net.set_weights([np.full_like(w, value) for w in net.get_weights()])
        prefixes.append(manager.save(checkpoint_number=step))
    return prefixes


@pytest.mark.parametrize(
    "count, steps, mean", [(2, [2, 3], 5.0), (3, [1, 2, 3], 3.0), (9, [1, 2, 3], 3.0)]
)
def test_the_average_is_the_mean_of_every_weight_over_the_newest_checkpoints(
    make_config, count, steps, mean
):
    config = make_config()
    _save_checkpoints(config, [-1.0, 4.0, 6.0])
    net, averaged = averaging.average_mask_net(config.workdir, config, count)
    assert averaged == steps
    for weight in net.get_weights():
        np.testing.assert_allclose(weight, mean)


def test_a_checkpoint_that_does_not_load_is_left_out_with_a_warning(make_config, caplog):
    config = make_config()
    prefixes = _save_checkpoints(config, [1.0, 2.0, 4.0])
    with open(prefixes[1] + ".index", "wb") as f:
        f.write(b"damaged")
    with caplog.at_level(logging.WARNING, logger="aur_tf"):
        net, steps = averaging.average_mask_net(config.workdir, config, 3)
    assert steps == [1, 3]
    np.testing.assert_allclose(net.get_weights()[0], 2.5)
    assert "left out of the average" in caplog.text and "ckpt-2" in caplog.text


def test_nothing_to_average_is_a_user_error(make_config):
    config = make_config()
    with pytest.raises(UserError, match="nothing to average"):
        averaging.average_mask_net(config.workdir, config, 3)
