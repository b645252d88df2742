import pytest
import tensorflow as tf

from aur_tf import schedules


@pytest.mark.parametrize(
    "step, fade_start, fade_steps, expected",
    [
        (500, 0, 0, 5.0),  # no fading: the full value at every step
        (3, 10, 20, 5.0),  # before the fade
        (10, 10, 20, 5.0),  # at its start
        (15, 10, 20, 3.75),  # a quarter of the way down
        (29, 10, 20, 0.25),
        (30, 10, 20, 0.0),  # at its end
        (10**9, 10, 20, 0.0),  # long after
        (0, 0, 4, 5.0),  # fading from the first step
        (1, 0, 4, 3.75),
    ],
)
def test_linear_fade_hand_computed(step, fade_start, fade_steps, expected):
    weight = schedules.linear_fade(5.0, step, fade_start, fade_steps)
    assert weight.dtype == tf.float32 and weight.shape == []
    assert float(weight) == pytest.approx(expected, abs=1e-6)


def test_linear_fade_follows_a_step_variable_without_retracing():
    step = tf.Variable(0, dtype=tf.int64)
    weight = tf.function(lambda: schedules.linear_fade(2.0, step, 2, 4))
    values = []
    for t in range(8):
        step.assign(t)
        values.append(float(weight()))
    assert values == pytest.approx([2.0, 2.0, 2.0, 1.5, 1.0, 0.5, 0.0, 0.0])
    assert weight.experimental_get_tracing_count() == 1
