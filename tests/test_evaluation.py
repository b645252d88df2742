"""The quality marks recorded in eval.json: the first training time each metric reached a mark."""

from aur_tf import evaluation


def test_seconds_to_quality_marks_takes_the_first_crossing_and_none_when_not_reached():
    history = [
        {"psnr_db": 12.5, "ssim": 0.55, "train_seconds": 60.0},
        {"psnr_db": 18.0, "ssim": 0.80, "train_seconds": 120.0},  # exactly on a mark counts
        {"psnr_db": 17.2, "ssim": 0.90, "train_seconds": 180.0},
        {"psnr_db": 19.9, "ssim": 0.85, "train_seconds": 240.0},
    ]
    assert evaluation.QUALITY_MARKS == {"psnr_db": (18.0, 20.4), "ssim": (0.9,)}
    assert evaluation.seconds_to_quality_marks(history) == {
        "psnr_db": {"18": 120.0, "20.4": None},
        "ssim": {"0.9": 180.0},
    }
    assert evaluation.seconds_to_quality_marks(
        history + [{"psnr_db": 20.5, "ssim": 0.89, "train_seconds": 300.0}]
    ) == {"psnr_db": {"18": 120.0, "20.4": 300.0}, "ssim": {"0.9": 180.0}}
