"""Tests for bench/export_speed.py's figures (its runs are in tests/export/test_deploy.py)."""

import numpy as np
import pytest


def test_flops_of_the_papers_net(export_speed):
    # Width 64 on 32x32x1: six layers doing 2 * 16 * 64 * 128 * 8 * 8 operations each (every
    # layer between 64 and 512 channels does the same work) and two of 2 * 16 * 64 * 16 * 16
    # (the 1-channel ends).
    assert export_speed.mask_net_flops(32, 1, 64) == (
        6 * 2 * 16 * 64 * 128 * 64 + 2 * 2 * 16 * 64 * 256
    )
    # Twice the width, four times the work inside; 64x64 images, four times the pixels.
    assert export_speed.mask_net_flops(64, 1, 64) == 4 * export_speed.mask_net_flops(32, 1, 64)


@pytest.mark.parametrize("image_size, channels, width", [(32, 3, 8), (64, 1, 4)])
def test_flops_match_the_keras_layers(export_speed, train_speed, image_size, channels, width):
    """export_speed counts without TensorFlow what train_speed counts from the built layers."""
    from aur_tf import models

    mask_net = models.build_mask_net(image_size, channels, width)
    assert export_speed.mask_net_flops(image_size, channels, width) == (
        train_speed.forward_flops(mask_net)
    )


def test_cpu_description_names_model_and_vector_flags(export_speed, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512f\n\n"
        "processor\t: 1\nmodel name\t: Other\n"
    )
    assert export_speed.cpu_description(str(cpuinfo)) == "Some CPU (avx2, avx512f)"


def test_matmul_rate_is_positive(export_speed):
    assert export_speed.matmul_gflops(repetitions=1, size=64) > 0


@pytest.mark.parametrize("batch", [1, 3])
def test_median_rates_time_every_runtime(export_speed, batch):
    class Fake:
        calls = 0

        def separate(self, mixtures, batch_size):
            Fake.calls += 1

    rates = export_speed.median_rates(
        {"a": Fake(), "b": Fake()},
        np.zeros((batch, 2)),
        batch,
        repetitions=3,
        images_per_repetition=3,
    )
    assert set(rates) == {"a", "b"} and min(rates.values()) > 0
    assert Fake.calls == 2 * (1 + 3 * max(1, 3 // batch))
