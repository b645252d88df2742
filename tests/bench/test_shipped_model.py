"""bench/shipped_model.py: which reruns agree with a shipped separator's recorded figures."""

import pytest


@pytest.mark.parametrize(
    "change_db, int8, expected",
    [
        (0.0, False, True),
        (-0.009, False, True),
        (0.011, False, False),
        (-0.09, False, False),  # a float32 file must reproduce its figures
        (-0.09, True, True),  # int8 may lose up to 0.2 dB
        (-0.21, True, False),
        (0.05, True, False),  # but not gain: that would be another run's figures
    ],
)
def test_reruns_agree_within_their_bound(shipped_model, change_db, int8, expected):
    assert shipped_model.agrees(change_db, int8) is expected
