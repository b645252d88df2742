"""Tests for aur_tf/safe_io.py: regular-file-only reads, bounded arrays, link-proof writes."""

import errno
import io
import os
import zipfile

import numpy as np
import pytest

from aur_tf import safe_io


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_printable_escapes_what_would_break_a_line_or_an_encoder():
    assert safe_io.printable("a\nb\udcff\x00\u202e é") == "a\\nb\\xff\\x00\\u202e é"
    assert safe_io.printable("\ud800") == "\\ud800"  # any lone surrogate, which no encoder takes


@pytest.mark.parametrize(
    "text, name",
    [
        ("../../x", "_._.._x"),
        (".hidden", "_hidden"),
        ("", "_"),
        ("a b\udcffé", "a_b_é"),
        ("line\nbreak/", "line_break_"),
        ("..", "_."),
        ("ok-1.2+3", "ok-1.2+3"),
    ],
)
def test_safe_name_keeps_a_plain_visible_name(text, name):
    assert safe_io.safe_name(text) == name


def test_safe_name_is_cut_by_bytes():
    assert len(safe_io.safe_name("é" * 200, max_bytes=9).encode("utf-8")) == 8


def test_open_regular_refuses_what_could_block(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(safe_io.FileRefused, match="^is a FIFO, not a regular file$"):
        safe_io.open_regular(tmp_path / "fifo")
    with pytest.raises(safe_io.FileRefused, match="is a character device"):
        safe_io.open_regular("/dev/zero")
    with pytest.raises(safe_io.FileRefused, match="is a directory"):
        safe_io.open_regular(tmp_path)
    (tmp_path / "file").write_bytes(b"data")
    os.symlink(tmp_path / "file", tmp_path / "link")
    with safe_io.open_regular(tmp_path / "link") as f:
        assert f.read() == b"data"


def test_load_npy_reads_good_files_and_checks_the_budget(tmp_path):
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    for order in ("C", "F"):
        (tmp_path / "a.npy").write_bytes(_npy(np.asarray(array, order=order)))
        np.testing.assert_array_equal(safe_io.load_npy(tmp_path / "a.npy", 96), array)
    with pytest.raises(safe_io.FileRefused, match=r"\(96 bytes\) exceed the 95 bytes allowed"):
        safe_io.load_npy(tmp_path / "a.npy", 95)


def test_load_npz_reads_selected_members_within_one_budget(tmp_path):
    path = tmp_path / "a.npz"
    np.savez_compressed(path, b=np.zeros(10, np.uint8), a=np.ones(10, np.uint8))
    arrays = safe_io.load_npz(path, 20)
    assert [key for key, _ in arrays] == ["a", "b"]
    assert [key for key, _ in safe_io.load_npz(path, 10, select=lambda keys: ["b"])] == ["b"]
    with pytest.raises(safe_io.FileRefused, match=r"^array b: .*exceed the 0 bytes allowed"):
        safe_io.load_npz(path, 10)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("c.txt", b"text")
    with pytest.raises(safe_io.FileRefused, match=r"^member c\.txt is not a \.npy array$"):
        safe_io.load_npz(path, 100)


def test_output_directory_writes_atomically_and_refuses_links_and_protected(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "outside").write_bytes(b"keep")
    os.symlink(tmp_path / "outside", out / "link")
    (out / "input").write_bytes(b"input")
    protected = {safe_io.file_identity(out / "input"): str(out / "input")}
    with safe_io.OutputDirectory(str(out), protected) as outputs:
        outputs.write("new", b"1")
        outputs.write("new", b"2", fsync=True)
        with pytest.raises(safe_io.FileRefused, match="is a symbolic link"):
            outputs.write("link", b"x")
        with pytest.raises(safe_io.FileRefused, match="would replace the input"):
            outputs.write("input", b"x")
        for bad in ("", ".", "..", "a/b", "../x", "a\0b", "x" * 256):
            with pytest.raises(ValueError, match="is not a plain file name"):
                outputs.write(bad, b"x")
    assert (out / "new").read_bytes() == b"2"
    assert (tmp_path / "outside").read_bytes() == b"keep"
    assert (out / "input").read_bytes() == b"input"
    assert sorted(os.listdir(out)) == ["input", "link", "new"]  # no temporary left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    (tmp_path / "old").write_bytes(b"old")
    with safe_io.OutputDirectory(str(tmp_path)) as outputs:
        with pytest.raises(OSError, match="No space left"):
            outputs.write("old", b"new", fsync=True)
    assert os.listdir(tmp_path) == ["old"]
    assert (tmp_path / "old").read_bytes() == b"old"
