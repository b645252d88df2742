"""GLO: generator shapes, training lowers the reconstruction loss, test codes fit frozen
generators."""

import keras
import numpy as np
import pytest

from aur_tf.baselines import glo
from aur_tf.errors import UserError

TINY = glo.GloSettings(
    glo_latent_dim=8,
    glo_width=4,
    glo_batch_size=16,
    glo_train_steps=80,
    glo_test_steps=30,
    glo_learning_rate=1e-2,
    glo_code_learning_rate=3e-2,
)


@pytest.mark.parametrize("image_size, channels", [(32, 1), (64, 3)])
def test_generator_maps_codes_to_images_in_unit_range(image_size, channels):
    generator = glo.build_generator(8, image_size, channels, 4, "g")
    images = np.asarray(generator(np.ones((2, 8), np.float32)))
    assert images.shape == (2, image_size, image_size, channels)
    assert ((images > 0) & (images < 1)).all()


def test_training_lowers_the_loss_and_test_codes_leave_generators_alone(stroke_data):
    keras.utils.set_random_seed(0)
    model = glo.Glo(TINY, image_size=32, channels=3)
    train_losses = model.fit(stroke_data.train.mixtures[:128], seed=0, log_every=20)
    assert len(train_losses) == 4
    assert train_losses[-1] < 0.7 * train_losses[0]

    weights = [g.get_weights() for g in model.generators]
    test = stroke_data.validation.mixtures[:24]
    estimate_a, estimate_b, test_losses = model.separate(test, seed=1, log_every=10, batch_size=10)
    for before, generator in zip(weights, model.generators):
        for w0, w1 in zip(before, generator.get_weights()):
            np.testing.assert_array_equal(w0, w1)
    assert estimate_a.shape == estimate_b.shape == test.shape
    assert test_losses[-1] <= test_losses[0]
    # The returned estimates are what the codes were fitted for: their mean is the mixture.
    l1 = np.mean(np.abs((estimate_a + estimate_b) / 2 - test))
    assert l1 == pytest.approx(test_losses[-1], abs=0.05)


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="glo_train_steps"):
        glo.GloSettings(glo_train_steps=0)
    with pytest.raises(UserError, match="glo_code_learning_rate"):
        glo.GloSettings(glo_code_learning_rate=-1.0)
