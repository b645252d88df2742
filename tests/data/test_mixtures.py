import numpy as np
import pytest

from aur_tf.data import mixtures
from aur_tf.data.sources import SourceImages
from aur_tf.errors import UserError


def _numbered(count, size=28, channels=1, offset=0):
    """Images whose every pixel holds the image's own id, so draws can be traced back."""
    ids = (np.arange(count, dtype=np.float32) + offset) / 1000
    return np.broadcast_to(ids[:, None, None, None], (count, size, size, channels)).copy()


def test_mixture_is_the_equal_weight_mean_of_its_sources():
    split = mixtures.mix_split(_numbered(5), _numbered(5, offset=500), 5, np.random.default_rng(0))
    np.testing.assert_array_equal(split.mixtures, (split.sources_a + split.sources_b) / 2)


def test_no_image_repeats_while_the_pool_allows():
    split = mixtures.mix_split(_numbered(10), _numbered(10), 10, np.random.default_rng(0))
    assert len(np.unique(split.sources_a[:, 0, 0, 0])) == 10


def test_a_small_pool_is_cycled_every_image_once_before_any_twice():
    split = mixtures.mix_split(_numbered(10), _numbered(4), 10, np.random.default_rng(0))
    _, counts = np.unique(split.sources_b[:, 0, 0, 0], return_counts=True)
    assert sorted(counts.tolist()) == [2, 2, 3, 3]


def _ids(split_sources):
    return np.rint(split_sources[:, 14, 14, 0] * 1000).astype(np.int64)


def test_labels_are_drawn_with_their_images_without_changing_the_draw():
    images_a, images_b = _numbered(10), _numbered(4, offset=500)
    labelled = mixtures.mix_split(
        images_a,
        images_b,
        10,
        np.random.default_rng(3),
        labels_a=np.arange(10) + 7000,
        labels_b=np.arange(4) + 9500,
    )
    unlabelled = mixtures.mix_split(images_a, images_b, 10, np.random.default_rng(3))
    np.testing.assert_array_equal(labelled.mixtures, unlabelled.mixtures)
    np.testing.assert_array_equal(labelled.labels_a, _ids(labelled.sources_a) + 7000)
    np.testing.assert_array_equal(labelled.labels_b, _ids(labelled.sources_b) + 9000)
    assert unlabelled.labels_a is None and unlabelled.labels_b is None


def _source(name, offset, labelled=False):
    """SourceImages of 40 train, 20 validation and 20 test numbered images, ids from `offset`."""
    splits = {"train": 40, "validation": 20, "test": 20}
    starts = dict(zip(splits, np.cumsum([0, *splits.values()]) + offset))
    fields = {split: _numbered(count, offset=starts[split]) for split, count in splits.items()}
    if labelled:
        fields.update(
            {f"{split}_labels": np.arange(count) + starts[split] for split, count in splits.items()}
        )
    return SourceImages(name=name, **fields)


def test_dataset_carries_each_splits_source_labels(make_config):
    dataset = mixtures.make_mixture_dataset(
        _source("a", 0, labelled=True),
        _source("b", 100),
        make_config(
            channels=1, train_mixtures=30, validation_mixtures=10, test_mixtures=10, batch_pairs=4
        ),
    )
    for split in (dataset.train, dataset.validation, dataset.test):
        np.testing.assert_array_equal(split.labels_a, _ids(split.sources_a))
        assert split.labels_b is None


def test_each_split_draws_from_its_own_pool(make_config):
    dataset = mixtures.make_mixture_dataset(
        _source("a", 0),
        _source("b", 100),
        make_config(
            channels=1, train_mixtures=30, validation_mixtures=10, test_mixtures=10, batch_pairs=4
        ),
    )
    for split, (low, high) in (("train", (0, 40)), ("validation", (40, 60)), ("test", (60, 80))):
        ids = _ids(getattr(dataset, split).sources_a)
        assert low <= ids.min() and ids.max() < high


def test_train_and_validation_mixtures_do_not_depend_on_the_test_count(make_config):
    def dataset(test_mixtures):
        return mixtures.make_mixture_dataset(
            _source("a", 0),
            _source("b", 100),
            make_config(
                channels=1,
                train_mixtures=30,
                validation_mixtures=10,
                test_mixtures=test_mixtures,
                batch_pairs=4,
            ),
        )

    few, many = dataset(5), dataset(20)
    for split in ("train", "validation"):
        np.testing.assert_array_equal(getattr(few, split).mixtures, getattr(many, split).mixtures)


@pytest.mark.parametrize("size, target", [(28, 32), (32, 32), (30, 64)])
def test_smaller_images_are_centre_padded(size, target):
    images = np.ones((2, size, size, 1), np.float32)
    fitted = mixtures.fit_images(images, target, 1, invert=False, name="s")
    assert fitted.shape == (2, target, target, 1)
    assert fitted.sum() == images.sum()
    pad = (target - size) // 2
    assert fitted[0, pad, pad, 0] == 1.0


def test_larger_images_are_resized_within_range():
    images = np.random.default_rng(0).random((2, 100, 80, 3)).astype(np.float32)
    fitted = mixtures.fit_images(images, 64, 3, invert=False, name="s")
    assert fitted.shape == (2, 64, 64, 3) and fitted.dtype == np.float32
    assert 0.0 <= fitted.min() and fitted.max() <= 1.0


def test_inversion_happens_before_padding_so_the_border_is_background():
    fitted = mixtures.fit_images(np.ones((1, 28, 28, 1), np.float32), 32, 1, invert=True, name="s")
    assert fitted.max() == 0.0


def test_channel_mismatch_names_the_source_and_the_fix():
    with pytest.raises(UserError, match="'rgb-source' has 3 channel.*--channels=3"):
        mixtures.fit_images(np.zeros((1, 32, 32, 3), np.float32), 32, 1, False, "rgb-source")


def test_dataset_is_deterministic_given_the_seed(make_config):
    def dataset(seed):
        return mixtures.make_mixture_dataset(
            _source("a", 0),
            _source("b", 100),
            make_config(
                f"seed{seed}",
                channels=1,
                train_mixtures=30,
                validation_mixtures=10,
                test_mixtures=10,
                batch_pairs=4,
                seed=seed,
            ),
        )

    first, again, other = dataset(0), dataset(0), dataset(1)
    assert first.train.mixtures.shape == (30, 32, 32, 1)
    assert first.test.mixtures.shape == (10, 32, 32, 1)
    np.testing.assert_array_equal(first.train.mixtures, again.train.mixtures)
    assert not np.array_equal(first.train.mixtures, other.train.mixtures)


def test_identical_source_specs_are_refused(make_config):
    with pytest.raises(UserError, match="must differ"):
        mixtures.load_mixture_dataset(make_config(source_a="mnist", source_b="mnist"))
