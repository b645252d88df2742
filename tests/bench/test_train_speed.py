"""bench/train_speed.py: FLOPs counted from the layers' shapes, and its argument checks."""

import os
import subprocess
import sys

import keras
import pytest

from aur_tf import models

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bench", "train_speed.py")


def test_forward_flops_count_two_per_multiply_add_of_every_convolution(train_speed):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 4, strides=2, padding="same"),
            keras.layers.ReLU(),
            keras.layers.Conv2DTranspose(2, 4, strides=2, padding="same"),
        ]
    )
    gathered = (4 * 4 * 4) * (4 * 4 * 3)  # each of the 4x4x4 outputs gathers a 4x4x3 patch
    spread = (4 * 4 * 4) * (4 * 4 * 2)  # each of the 4x4x4 inputs spreads over 4x4x2 outputs
    assert train_speed.forward_flops(model) == 2 * (gathered + spread)


@pytest.mark.parametrize("image_size, channels", [(32, 1), (64, 3)])
def test_layers_by_phases_count_as_the_convolutions_they_compute(train_speed, image_size, channels):
    flops = {
        phases: train_speed.forward_flops(
            models.build_mask_net(image_size, channels, 4, phase_convolutions=phases)
        )
        for phases in (False, True)
    }
    assert flops[True] == flops[False] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps=7"], "--steps=7 must be a multiple of --mask_steps_per_disc_step=4"),
        (["--steps=8", "--jit_compile=maybe"], "--jit_compile=maybe: give true, false or both"),
    ],
)
def test_bad_arguments_stop_before_anything_is_timed(args, message):
    result = subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2
    assert message in result.stderr
