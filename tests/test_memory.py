"""The memory estimate that refuses, before TensorFlow starts, runs that cannot fit."""

import pytest

from aur_tf import memory, models
from aur_tf.config import Config
from aur_tf.errors import UserError


@pytest.mark.parametrize("image_size, channels, width", [(32, 1, 4), (64, 3, 6)])
def test_memory_estimate_counts_no_more_weights_than_the_nets_have(image_size, channels, width):
    """aur_tf.memory repeats the nets' architecture: its weight count must stay a lower bound of
    models.py's (it refuses only runs that cannot fit)."""
    mask_net = models.build_mask_net(image_size, channels, width)
    discriminator = models.build_discriminator(image_size, channels, width)
    estimated = memory._mask_net_weights(channels, width) + memory._discriminator_weights(
        image_size, channels, width
    )
    actual = mask_net.count_params() + discriminator.count_params()
    assert 0.95 * actual <= estimated <= actual


def test_memory_check_refuses_only_what_exceeds_the_available_memory():
    config = Config(train_mixtures=1000, validation_mixtures=10, test_mixtures=10)
    needed = memory.mixture_bytes(config) + memory.training_bytes(config)
    memory.check_training(config, available=needed)
    with pytest.raises(UserError, match=r"--train_mixtures=1000 .* need at least .* GB but"):
        memory.check_training(config, available=needed - 1)
