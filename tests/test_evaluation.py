"""The quality marks recorded in eval.json: the first training time each PSNR mark was reached."""
from aur_tf import evaluation


def test_seconds_to_quality_marks_takes_the_first_crossing_and_none_when_not_reached():
    history = [{"psnr_db": 12.5, "train_seconds": 60.0},
               {"psnr_db": 18.0, "train_seconds": 120.0},   # exactly on the mark counts
               {"psnr_db": 17.2, "train_seconds": 180.0},
               {"psnr_db": 19.9, "train_seconds": 240.0}]
    assert evaluation.QUALITY_MARKS_DB == (18.0, 20.4)
    assert evaluation.seconds_to_quality_marks(history) == {"18": 120.0, "20.4": None}
    assert evaluation.seconds_to_quality_marks(history + [
        {"psnr_db": 20.5, "train_seconds": 300.0}]) == {"18": 120.0, "20.4": 300.0}
