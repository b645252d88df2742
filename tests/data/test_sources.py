"""Tests for aur_tf.data.sources: spec parsing and the npz, folder, tfds and mnist loaders."""

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from aur_tf.data import mnist_offline, sources
from aur_tf.data.sources import SourceImages, SourceSpec, load_source
from aur_tf.errors import UserError

# --- spec parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, kind, location, labels",
    [
        ("mnist", "mnist", "", None),
        ("mnist:", "mnist", "", None),
        ("  mnist?labels=5-9 ", "mnist", "", frozenset(range(5, 10))),
        ("tfds:mnist?labels=0-4", "tfds", "mnist", frozenset(range(5))),
        ("tfds:mnist:3.*.*", "tfds", "mnist:3.*.*", None),
        ("npz:/data/x.npz", "npz", "/data/x.npz", None),
        ("npz:rel/x.npz?labels=1,3,5", "npz", "rel/x.npz", frozenset({1, 3, 5})),
        ("folder:~/imgs?labels=0-2,7", "folder", "~/imgs", frozenset({0, 1, 2, 7})),
        ("folder:imgs?labels= 4 , 06-7", "folder", "imgs", frozenset({4, 6, 7})),
        ("npz:x?labels=3-3", "npz", "x", frozenset({3})),
        ("fashion_mnist?labels=5,7,9", "fashion_mnist", "", frozenset({5, 7, 9})),
        ("fashion_mnist:/data/fm", "fashion_mnist", "/data/fm", None),
    ],
)
def test_parse_good_specs(text, kind, location, labels):
    spec = SourceSpec.parse(text)
    assert spec == SourceSpec(kind=kind, location=location, labels=labels)
    # str() is the canonical text and parses back to the same spec.
    assert SourceSpec.parse(str(spec)) == spec


def test_str_compresses_label_ranges():
    assert str(SourceSpec.parse("npz:a.npz?labels=7,0,1,2,9")) == "npz:a.npz?labels=0-2,7,9"
    assert str(SourceSpec.parse("mnist")) == "mnist"


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "foo:x",
            "unknown source kind 'foo' in 'foo:x': use tfds:NAME, npz:PATH, folder:PATH, "
            "mnist or fashion_mnist[:FOLDER]",
        ),
        ("", "empty source spec"),
        ("   ", "empty source spec"),
        ("MNIST", "unknown source kind 'MNIST'"),
        ("npz:", "has no location: write npz:PATH"),
        ("npz", "has no location: write npz:PATH"),
        ("folder:", "has no location: write folder:PATH"),
        ("tfds:?labels=1", "has no location: write tfds:NAME"),
        ("mnist:/some/path", "takes no location"),
        ("npz:x.npz?labels=a-b", "bad label 'a-b'"),
        ("npz:x.npz?labels=5-2", "is backwards: write 2-5"),
        ("npz:x.npz?labels=", "empty label list"),
        ("npz:x.npz?labels=  ", "empty label list"),
        ("npz:x.npz?labels=1,,2", "bad label ''"),
        ("npz:x.npz?labels=-1", "bad label '-1'"),
        ("npz:x.npz?labels=1-2-3", "bad label '1-2-3'"),
        ("npz:x.npz?labels=+3", "bad label '+3'"),
        ("npz:x.npz?labels=1_0", "bad label '1_0'"),
        ("npz:x.npz?labels=\u0663", "bad label"),  # Arabic-Indic digit three
        ("npz:x.npz?labels=100000", "too large"),
        ("npz:x.npz?labels=0-999999999999", "too large"),
        ("npz:x.npz?labels=" + "9" * 5000, "too large"),
        ("npz:x.npz?label=1", "unknown option 'label=1'"),
        ("npz:x.npz?labels", "unknown option 'labels'"),
        ("npz:x.npz?", "unknown option ''"),
        ("npz:a?b.npz", "unknown option 'b.npz'"),
        ("mnist?labels=1?labels=2", "bad label '1?labels=2'"),
    ],
)
def test_parse_bad_specs(text, expected):
    with pytest.raises(UserError) as caught:
        SourceSpec.parse(text)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_parse_never_raises_anything_but_user_error():
    hypothesis = pytest.importorskip("hypothesis")
    strategies = hypothesis.strategies

    # Arbitrary text, plus text shaped like a spec so the label parser is exercised too.
    spec_like = strategies.builds(
        lambda kind, location, query: f"{kind}{location}{query}",
        strategies.sampled_from(["mnist", "tfds:", "npz:", "folder:", "", "x:"]),
        strategies.text(max_size=8),
        strategies.one_of(
            strategies.just(""),
            strategies.builds(
                lambda labels: "?labels=" + labels,
                strategies.text(alphabet="0123456789-, ?=a\u0663", max_size=20),
            ),
        ),
    )

    @hypothesis.settings(max_examples=400, deadline=None)
    @hypothesis.given(strategies.one_of(strategies.text(), spec_like))
    def check(text):
        try:
            spec = SourceSpec.parse(text)
        except UserError as error:
            assert str(error) and "\n" not in str(error)
        else:
            assert spec.kind in ("tfds", "npz", "folder", "mnist", "fashion_mnist")
            assert SourceSpec.parse(str(spec)) == spec

    check()


# --- npz ------------------------------------------------------------------------------------


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_uint8_gray(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (6, 4, 5), dtype=np.uint8)
    x_test = rng.integers(0, 256, (2, 4, 5), dtype=np.uint8)
    spec = _write_npz(tmp_path / "d.npz", x_train=x_train, x_test=x_test)

    images = load_source(spec, cache_dir=str(tmp_path))

    assert isinstance(images, SourceImages) and images.name == spec
    # Validation is carved from train: indices 0 and 1 are the first that `_held_out` picks.
    assert images.train.shape == (4, 4, 5, 1) and images.validation.shape == (2, 4, 5, 1)
    assert images.test.shape == (2, 4, 5, 1)
    assert images.train.dtype == images.validation.dtype == images.test.dtype == np.float32
    np.testing.assert_array_equal(images.train[..., 0], x_train[2:].astype(np.float32) / 255)
    np.testing.assert_array_equal(images.validation[..., 0], x_train[:2].astype(np.float32) / 255)
    np.testing.assert_array_equal(images.test[..., 0], x_test.astype(np.float32) / 255)


def test_validation_is_carved_from_train_by_the_documented_rule(tmp_path):
    x_train = np.arange(60, dtype=np.uint8).reshape(60, 1, 1)
    spec = _write_npz(tmp_path / "d.npz", x_train=x_train, x_test=x_train[:3])
    images = load_source(spec, cache_dir=str(tmp_path))
    expected = [
        index
        for index in range(60)
        if int.from_bytes(hashlib.sha256(str(index).encode()).digest()[8:16], "big") % 5 == 0
    ]
    np.testing.assert_array_equal(np.rint(images.validation[:, 0, 0, 0] * 255), expected)
    np.testing.assert_array_equal(
        np.rint(images.train[:, 0, 0, 0] * 255), sorted(set(range(60)) - set(expected))
    )


def test_npz_float_colour_with_labels(tmp_path):
    rng = np.random.default_rng(1)
    x_train = rng.random((6, 3, 3, 3), dtype=np.float32)
    x_test = rng.random((4, 3, 3, 3), dtype=np.float32)
    y_train = np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8)
    y_test = np.array([[2], [0], [1], [2]], dtype=np.int64)  # [N, 1] as in keras CIFAR-10
    spec = _write_npz(
        tmp_path / "d.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test
    )

    images = load_source(spec + "?labels=0,2", cache_dir=str(tmp_path))

    np.testing.assert_array_equal(images.train, x_train[[2, 3, 5]])
    np.testing.assert_array_equal(images.validation, x_train[[0]])
    np.testing.assert_array_equal(images.test, x_test[[0, 1, 3]])
    np.testing.assert_array_equal(images.train_labels, [2, 0, 2])
    np.testing.assert_array_equal(images.validation_labels, [0])
    np.testing.assert_array_equal(images.test_labels, [2, 0, 2])
    assert images.train_labels.dtype == images.test_labels.dtype == np.int64
    unfiltered = load_source(spec, cache_dir=str(tmp_path))
    assert unfiltered.train_labels is None and unfiltered.test_labels is None


def test_npz_accepts_rounding_overshoot_and_clips(tmp_path):
    x = np.full((3, 2, 2), 1 + 1e-7, dtype=np.float32)
    images = load_source(
        _write_npz(tmp_path / "d.npz", x_train=x, x_test=-x + 1), cache_dir=str(tmp_path)
    )
    assert images.train.max() == 1.0 and images.test.min() >= 0.0


def test_spec_object_is_named_by_its_canonical_text(tmp_path):
    x = np.zeros((4, 3, 3), dtype=np.uint8)
    y = np.array([4, 5, 4, 5])
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    images = load_source(SourceSpec("npz", str(path), frozenset({5, 4})), cache_dir=str(tmp_path))
    assert images.name == f"npz:{path}?labels=4-5" and len(images.train) == 2


def _valid_npz_arrays():
    """Train images 0 and 1 (labels 0 and 1) become validation, image 2 (label 2) stays train."""
    x = np.zeros((3, 4, 4), dtype=np.uint8)
    return dict(x_train=x, y_train=np.array([0, 1, 2]), x_test=x, y_test=np.array([0, 1, 1]))


@pytest.mark.parametrize(
    "suffix, changes, expected",
    [
        ("?labels=7", {}, "?labels=7 selects no train images of source 'npz:"),
        ("?labels=2", {}, "selects no validation images"),
        ("?labels=0,2", {"y_test": np.array([1, 1, 1])}, "selects no test images"),
        ("?labels=1", {"y_train": None}, "has no train labels"),
        ("?labels=1", {"y_train": np.array([0.0, 1.0, 2.0])}, "expected integers of shape [3]"),
        ("?labels=1", {"y_train": np.array([0, 1])}, "expected integers of shape [3]"),
        ("?labels=0-2", {"y_test": np.array([0, 1])}, "expected integers of shape [3]"),
        ("", {"x_train": np.full((3, 4, 4), np.nan, np.float32)}, "contain NaN or Inf"),
        ("", {"x_test": np.full((3, 4, 4), np.inf, np.float32)}, "contain NaN or Inf"),
        ("", {"x_train": np.full((3, 4, 4), 255.0)}, "span [255, 255], not [0, 1]"),
        ("", {"x_train": np.full((3, 4, 4), -0.5)}, "span [-0.5, -0.5], not [0, 1]"),
        ("", {"x_train": np.zeros((3, 4, 4), np.int64)}, "are int64: store uint8"),
        ("", {"x_train": np.zeros((3, 16), np.uint8)}, "expected [N, H, W] or [N, H, W, C]"),
        ("", {"x_train": np.zeros((3, 1, 4, 4, 1), np.uint8)}, "expected [N, H, W] or"),
        ("", {"x_train": np.zeros((3, 1, 8, 8), np.uint8)}, "transpose channels-first"),
        ("", {"x_train": np.zeros((0, 4, 4), np.uint8)}, "has no train images"),
        ("", {"x_train": np.zeros((2, 4, 4), np.uint8)}, "has no train images"),
        ("", {"x_test": np.zeros((3, 5, 4), np.uint8)}, "train images are (4, 4, 1) but test"),
        ("", {"x_test": None}, "lacks x_test (it has x_train, y_train, y_test)"),
    ],
)
def test_npz_bad_content(tmp_path, suffix, changes, expected):
    arrays = _valid_npz_arrays()
    arrays.update(changes)
    spec = _write_npz(tmp_path / "d.npz", **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(UserError) as caught:
        load_source(spec + suffix, cache_dir=str(tmp_path))
    assert expected in str(caught.value)


def test_npz_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist: check the path"):
        load_source(f"npz:{tmp_path}/nope.npz", cache_dir=str(tmp_path))


@pytest.mark.parametrize(
    "content",
    [
        b"definitely not a zip archive",
        b"PK\x03\x04" + b"\x00" * 40,
    ],
)
def test_npz_corrupt_file(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(UserError, match=f"cannot read npz file '{path}'.*corrupt"):
        load_source(f"npz:{path}", cache_dir=str(tmp_path))


def test_npz_truncated_file(tmp_path):
    path = tmp_path / "cut.npz"
    np.savez_compressed(path, **_valid_npz_arrays())
    path.write_bytes(path.read_bytes()[:-60])
    with pytest.raises(UserError, match="cannot read npz file"):
        load_source(f"npz:{path}", cache_dir=str(tmp_path))


def test_npz_single_array_file_is_refused(tmp_path):
    path = tmp_path / "one.npy"
    np.save(path, np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(UserError, match="single array, not an .npz"):
        load_source(f"npz:{path}", cache_dir=str(tmp_path))


# --- folder ---------------------------------------------------------------------------------


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return array


def _gray(value, shape=(4, 5)):
    return np.full(shape, value, dtype=np.uint8)


def _save_in_every_split(root, relative, array, mode=None):
    """Saves `array` as `root/SPLIT/relative` for the train, validation and test splits."""
    for split in sources.SPLITS:
        _save(root / split / relative, array, mode)


def test_folder_with_train_test_subfolders(tmp_path):
    root = tmp_path / "imgs"
    b = _save(root / "train" / "b.png", _gray(20))
    a = _save(root / "train" / "a.png", _gray(10))
    c = _save(root / "test" / "c.png", _gray(30))
    (root / "train" / "README.txt").write_text("not an image")
    # Dot-files and dot-folders (e.g. .ipynb_checkpoints) are skipped, even when mis-sized.
    _save(root / "train" / ".hidden.png", _gray(99))
    _save(root / "train" / ".ipynb_checkpoints" / "a.png", _gray(99, (2, 2)))

    images = load_source(f"folder:{root}", cache_dir=str(tmp_path))

    # Without validation/, validation is carved from train/: _held_out picks 'train/a.png'.
    assert images.train.shape == images.validation.shape == images.test.shape == (1, 4, 5, 1)
    np.testing.assert_array_equal(images.train[..., 0], b[None] / np.float32(255))
    np.testing.assert_array_equal(images.validation[..., 0], a[None] / np.float32(255))
    np.testing.assert_array_equal(images.test[..., 0], c[None] / np.float32(255))


def test_folder_validation_subfolder_is_the_validation_split(tmp_path):
    root = tmp_path / "imgs"
    train = [
        _save(root / "train" / name, _gray(value)) for name, value in (("a.png", 10), ("b.png", 20))
    ]
    validation = _save(root / "validation" / "v.png", _gray(40))
    _save(root / "test" / "c.png", _gray(30))
    images = load_source(f"folder:{root}", cache_dir=str(tmp_path))
    np.testing.assert_array_equal(images.train[..., 0], np.stack(train) / np.float32(255))
    np.testing.assert_array_equal(images.validation[..., 0], validation[None] / np.float32(255))


def test_folder_label_subfolders(tmp_path):
    root = tmp_path / "imgs"
    for split, base in (("train", 0), ("validation", 50), ("test", 100)):
        for label in (3, 4, 12):
            _save(root / split / str(label) / "x.png", _gray(base + label))

    images = load_source(f"folder:{root}?labels=4,12", cache_dir=str(tmp_path))
    np.testing.assert_array_equal(np.unique(images.train * 255), [4, 12])
    np.testing.assert_array_equal(np.unique(images.validation * 255), [54, 62])
    np.testing.assert_array_equal(np.unique(images.test * 255), [104, 112])
    np.testing.assert_array_equal(images.train_labels, np.rint(images.train[:, 0, 0, 0] * 255))
    np.testing.assert_array_equal(
        images.validation_labels + 50, np.rint(images.validation[:, 0, 0, 0] * 255)
    )
    np.testing.assert_array_equal(images.test_labels + 100, np.rint(images.test[:, 0, 0, 0] * 255))

    with pytest.raises(UserError, match="selects no train images.*labels are 3-4,12"):
        load_source(f"folder:{root}?labels=5", cache_dir=str(tmp_path))


def test_folder_without_label_subfolders_has_no_labels(tmp_path):
    root = tmp_path / "imgs"
    _save(root / "train" / "cats" / "x.png", _gray(1))
    _save(root / "validation" / "x.png", _gray(2))
    _save(root / "test" / "x.png", _gray(2))
    assert len(load_source(f"folder:{root}", cache_dir=str(tmp_path)).train) == 1
    with pytest.raises(UserError, match="has no train labels"):
        load_source(f"folder:{root}?labels=1", cache_dir=str(tmp_path))


def test_folder_reads_nested_folders_in_sorted_order(tmp_path):
    root = tmp_path / "imgs"
    # Created in reverse so creation order cannot stand in for sorting.
    for index, relative in reversed(list(enumerate(["a/z.png", "b/a.png", "b/c/a.png", "c.png"]))):
        _save(root / "train" / relative, _gray(index))
    _save(root / "validation" / "x.png", _gray(0))
    _save(root / "test" / "x.png", _gray(0))
    images = load_source(f"folder:{root}", cache_dir=str(tmp_path))
    # os.walk order: a folder's files come before its subfolders' files.
    np.testing.assert_array_equal(np.round(images.train[:, 0, 0, 0] * 255), [3, 0, 1, 2])


def test_folder_hash_split_is_the_documented_rule(tmp_path):
    root = tmp_path / "flat"
    for index in range(40):
        _save(root / f"f{index:02d}.png", _gray(index))

    first = load_source(f"folder:{root}", cache_dir=str(tmp_path))
    second = load_source(f"folder:{root}", cache_dir=str(tmp_path))

    # Each image is identified by its constant pixel value = its index.
    ids = {
        split: sorted(np.round(getattr(first, split)[:, 0, 0, 0] * 255).astype(int))
        for split in sources.SPLITS
    }

    def hashed(index, part):
        digest = hashlib.sha256(f"f{index:02d}.png".encode()).digest()
        return int.from_bytes(digest[8 * part : 8 * part + 8], "big") % 5 == 0

    expected_test = [index for index in range(40) if hashed(index, 0)]
    expected_validation = [
        index for index in range(40) if not hashed(index, 0) and hashed(index, 1)
    ]
    assert ids["test"] == expected_test and 0 < len(expected_test) < 20
    assert ids["validation"] == expected_validation and expected_validation
    assert sorted(ids["train"] + ids["validation"] + ids["test"]) == list(range(40))
    for split in sources.SPLITS:
        np.testing.assert_array_equal(getattr(first, split), getattr(second, split))


def test_folder_hash_split_keeps_labels(tmp_path):
    root = tmp_path / "flat"
    for label in (0, 1):
        for index in range(15):
            _save(root / str(label) / f"{index}.png", _gray(label * 100 + index))
    images = load_source(f"folder:{root}?labels=1", cache_dir=str(tmp_path))
    assert len(images.train) + len(images.validation) + len(images.test) == 15
    for split in sources.SPLITS:
        assert getattr(images, split).min() * 255 >= 100 - 1e-4


def test_folder_rgba_drops_alpha(tmp_path):
    root = tmp_path / "imgs"
    rgba = np.random.default_rng(2).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    rgba[..., 3] = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    _save_in_every_split(root, "a.png", rgba, "RGBA")
    images = load_source(f"folder:{root}", cache_dir=str(tmp_path))
    assert images.train.shape == (1, 3, 4, 3)
    np.testing.assert_array_equal(images.train[0], rgba[..., :3] / np.float32(255))


def test_folder_16_bit_png(tmp_path):
    root = tmp_path / "imgs"
    deep = np.array([[0, 1, 1000], [30000, 65534, 65535]], dtype=np.uint16)
    _save_in_every_split(root, "a.png", deep)
    assert Image.open(root / "train" / "a.png").mode == "I;16"
    images = load_source(f"folder:{root}", cache_dir=str(tmp_path))
    assert images.train.shape == (1, 2, 3, 1) and images.train.dtype == np.float32
    np.testing.assert_allclose(images.train[0, ..., 0], deep / 65535.0, rtol=1e-7, atol=0)


def test_folder_palette_and_jpeg_become_rgb(tmp_path):
    root = tmp_path / "imgs"
    palette = Image.fromarray(np.array([[0, 1], [2, 1]], dtype=np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    (root / "train").mkdir(parents=True)
    palette.save(root / "train" / "p.png")
    for split in ("validation", "test"):
        _save(root / split / "j.jpg", np.full((2, 2, 3), 200, dtype=np.uint8))
    images = load_source(f"folder:{root}", cache_dir=str(tmp_path))
    np.testing.assert_array_equal(
        images.train[0] * 255, [[[0, 0, 0], [255, 0, 0]], [[0, 0, 255], [255, 0, 0]]]
    )
    assert images.test.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(images.test * 255, 200, atol=3)  # JPEG is lossy


@pytest.mark.parametrize(
    "content",
    [
        b"\x89PNG\r\n\x1a\n" + b"garbage" * 10,
        b"not an image at all",
    ],
)
def test_folder_corrupt_png(tmp_path, content):
    root = tmp_path / "imgs"
    _save(root / "train" / "good.png", _gray(1))
    _save(root / "test" / "good.png", _gray(1))
    (root / "train" / "bad.png").write_bytes(content)
    with pytest.raises(UserError, match="cannot decode image .*bad.png.*replace or delete"):
        load_source(f"folder:{root}", cache_dir=str(tmp_path))


def test_folder_truncated_png(tmp_path):
    root = tmp_path / "imgs"
    _save(
        root / "train" / "cut.png",
        np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8),
    )
    _save(root / "test" / "good.png", _gray(1, (64, 64)))
    cut = root / "train" / "cut.png"
    cut.write_bytes(cut.read_bytes()[:200])
    with pytest.raises(UserError, match="cannot decode image .*cut.png"):
        load_source(f"folder:{root}", cache_dir=str(tmp_path))


def test_folder_refuses_symlink_to_file_outside(tmp_path):
    root = tmp_path / "imgs"
    _save(root / "train" / "a.png", _gray(1))
    _save(root / "test" / "a.png", _gray(1))
    _save(tmp_path / "outside" / "secret.png", _gray(7))
    os.symlink(tmp_path / "outside" / "secret.png", root / "train" / "b.png")
    with pytest.raises(UserError, match="b.png.*links to .*secret.png.*outside the folder"):
        load_source(f"folder:{root}", cache_dir=str(tmp_path))


@pytest.mark.parametrize("link", ["train/ext", "train"])
def test_folder_refuses_symlinked_folder_outside(tmp_path, link):
    root = tmp_path / "imgs"
    _save(tmp_path / "outside" / "secret.png", _gray(7))
    _save(root / "test" / "a.png", _gray(1))
    if link == "train/ext":
        _save(root / "train" / "a.png", _gray(1))
    os.symlink(tmp_path / "outside", root / link)
    with pytest.raises(UserError, match="outside the folder"):
        load_source(f"folder:{root}", cache_dir=str(tmp_path))


def test_folder_follows_symlink_inside(tmp_path):
    root = tmp_path / "imgs"
    _save(root / "train" / "a.png", _gray(5))
    for split in ("validation", "test"):
        _save(root / split / "a.png", _gray(1))
    os.symlink(root / "train" / "a.png", root / "train" / "b.png")
    images = load_source(f"folder:{root}", cache_dir=str(tmp_path))
    np.testing.assert_array_equal(images.train * 255, np.full((2, 4, 5, 1), 5))


@pytest.mark.parametrize(
    "layout, expected",
    [
        ({"train/a.png": (4, 5)}, "has train/ but not both train/ and test/"),
        ({"validation/a.png": (4, 5), "test/a.png": (4, 5)}, "has validation/, test/ but not both"),
        ({"train/b.png": (4, 5), "train/p.png": (5, 4), "test/a.png": (4, 5)}, "differ in size"),
        (
            {"train/b.png": (4, 5), "validation/a.png": (5, 4), "test/a.png": (4, 5)},
            r"train images are \(4, 5, 1\) but validation images are \(5, 4, 1\)",
        ),
        ({"train/a.txt": (4, 5), "test/a.png": (4, 5)}, "has no train images"),
    ],
)
def test_folder_bad_layouts(tmp_path, layout, expected):
    root = tmp_path / "imgs"
    for relative, shape in layout.items():
        if relative.endswith(".png"):
            _save(root / relative, _gray(1, shape))
        else:
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text("x")
    with pytest.raises(UserError, match=expected):
        load_source(f"folder:{root}", cache_dir=str(tmp_path))


def test_folder_hash_split_with_too_few_files(tmp_path):
    root = tmp_path / "imgs"
    _save(root / "only.png", _gray(1))
    # 'only.png' is neither a test nor a validation image, so validation is the empty split.
    assert not any(
        sources._held_out("only.png", part) for part in (sources.TEST, sources.VALIDATION)
    )
    with pytest.raises(UserError, match="has no validation images.*train/ and test/"):
        load_source(f"folder:{root}", cache_dir=str(tmp_path))


def test_folder_missing(tmp_path):
    with pytest.raises(UserError, match="does not exist or is not a directory"):
        load_source(f"folder:{tmp_path}/nothing", cache_dir=str(tmp_path))


# --- tfds -----------------------------------------------------------------------------------


def test_tfds_source_with_mocked_mnist(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    carved = np.array([sources._held_out(str(i), sources.VALIDATION) for i in range(12)])
    with tfds.testing.mock_data(num_examples=12):
        images = load_source("tfds:mnist", cache_dir=str(tmp_path))
        raw_labels, raw_test_labels = (
            np.array(
                [
                    label
                    for _, label in tfds.as_numpy(
                        tfds.load("mnist", split=split, as_supervised=True, data_dir=str(tmp_path))
                    )
                ]
            )
            for split in ("train", "test")
        )
        split_labels = {
            "train": raw_labels[~carved],
            "validation": raw_labels[carved],
            "test": raw_test_labels,
        }
        chosen = sorted(
            set.intersection(*(set(labels.tolist()) for labels in split_labels.values()))
        )
        filtered = load_source(
            f"tfds:mnist?labels={','.join(map(str, chosen))}", cache_dir=str(tmp_path)
        )
        absent = min(set(range(10)) - set(raw_labels.tolist()) or {10})
        with pytest.raises(UserError, match="selects no train images"):
            load_source(f"tfds:mnist?labels={absent}", cache_dir=str(tmp_path))

    assert chosen, "the mocked data has no label in every split"
    assert len(images.train) == 12 - carved.sum() and len(images.validation) == carved.sum()
    assert images.test.shape == (12, 28, 28, 1) and images.train.dtype == np.float32
    assert 0 <= images.train.min() and images.train.max() <= 1
    for split, labels in split_labels.items():
        np.testing.assert_array_equal(
            getattr(filtered, split), getattr(images, split)[np.isin(labels, chosen)]
        )


def test_tfds_unknown_dataset(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(UserError, match="cannot load TFDS dataset 'no_such_dataset_xyz'"):
        load_source("tfds:no_such_dataset_xyz", cache_dir=str(tmp_path))


# --- built-in mnist -------------------------------------------------------------------------


def test_mnist_source_filters_labels(tmp_path, monkeypatch):
    x_train = np.arange(6, dtype=np.float32).reshape(6, 1, 1) / 256
    y_train = np.array([0, 5, 6, 4, 9, 1])
    calls = []

    def fake_load_mnist(cache_dir):
        calls.append(cache_dir)
        return x_train, y_train, x_train[:3], y_train[:3], x_train[3:], y_train[3:]

    monkeypatch.setattr(mnist_offline, "load_mnist", fake_load_mnist)
    images = load_source("mnist?labels=5-9", cache_dir=str(tmp_path))
    assert calls == [str(tmp_path)]
    # MNIST's own validation part is the validation split: nothing is carved from train.
    np.testing.assert_array_equal(images.train[:, 0, 0, 0], x_train[[1, 2, 4], 0, 0])
    np.testing.assert_array_equal(images.validation[:, 0, 0, 0], x_train[[1, 2], 0, 0])
    np.testing.assert_array_equal(images.test[:, 0, 0, 0], x_train[[4], 0, 0])
    np.testing.assert_array_equal(images.train_labels, [5, 6, 9])
    np.testing.assert_array_equal(images.validation_labels, [5, 6])
    np.testing.assert_array_equal(images.test_labels, [9])
