"""Reading input files and writing output files on a filesystem that others may control.

Inputs:
  * `open_regular` opens a file for reading only if it is a regular file, so a FIFO, socket or
    device given (or planted) under an input's name is refused instead of blocking the reader.
  * `load_npy` / `load_npz` read NumPy arrays with their sizes checked against the file and a
    byte budget before anything is allocated, never unpickle, and refuse archive members that
    are not .npy arrays.

Outputs:
  * `OutputDirectory` writes files into one directory under plain names only, atomically, never
    through a symbolic link and never over a protected file (an input, say).
  * `write_durably` writes one file that way and flushes it and its directory to disk.
  * `safe_name` turns any text (a file stem, an archive member name) into such a plain name.

Messages:
  * `printable` makes any text, file names with undecodable bytes or newlines included, one
    printable line.

Problems with the file itself raise `FileRefused` with a one-line reason; operating-system
failures (missing, unreadable) stay `OSError`.
"""

import math
import os
import re
import secrets
import stat
import zipfile

import numpy as np

# What a file name made by `safe_name` may hold besides letters and digits.
_NAME_PUNCTUATION = "-_.+"
_MAX_NAME_BYTES = 255  # of one path component on Linux, macOS and Windows filesystems
_FILE_TYPES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
_NPY_SUFFIX = ".npy"
# The .npy format versions read, with their header parsers; 3.0 (UTF-8 headers) is refused.
NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
_READ_CHUNK = 1 << 24  # bytes per read of array data: large, yet short reads are detected early


class FileRefused(Exception):
    """A file cannot be read or written safely, or is not what it claims to be; the message says
    why in one line (an input's own name is left to the caller, which knows it)."""


def printable(text):
    """`text` as one printable line.

    Undecodable bytes of file names (Python's surrogate escapes) become `\\xNN`; newlines and
    other control or non-printable characters become their Python escapes (`\\n`, `\\x00`,
    `\\u202e`); everything else, non-ASCII letters included, is kept.
    """
    pieces = []
    for character in str(text):
        if "\udc80" <= character <= "\udcff":
            pieces.append(f"\\x{ord(character) - 0xDC00:02x}")
        elif character.isprintable():
            pieces.append(character)
        else:
            pieces.append(character.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(pieces)


def safe_name(text, max_bytes=150):
    """`text` made into a plain file name: letters, digits and `-_.+` only, not hidden.

    Every other character (path separators, spaces, control characters, undecodable bytes)
    becomes `_`, as does a leading `.`, so the result never names another directory, `.` or `..`
    or a hidden file. It is cut to at most `max_bytes` UTF-8 bytes and is never empty. Different
    texts can give the same name: callers that need distinct names must check.
    """
    name = "".join(c if c.isalnum() or c in _NAME_PUNCTUATION else "_" for c in str(text))
    name = re.sub(r"^\.", "_", name) or "_"
    while len(name.encode("utf-8")) > max_bytes:
        name = name[:-1]
    return name


def file_type(mode):
    """What a non-regular `st_mode` is, for messages ("a FIFO", ...); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _FILE_TYPES if test(mode)), "not a file")


def _require_regular(mode):
    kind = file_type(mode)
    if kind:
        raise FileRefused(f"is {kind}, not a regular file")


def open_regular(path):
    """Opens `path` (following symbolic links) for binary reading if it is a regular file.

    The type is checked with `os.stat` before opening, so a device is never opened, and again on
    the opened descriptor, which is opened non-blocking: a FIFO put in place between the two
    checks is refused too instead of waiting for a writer.

    Returns:
      A binary file object (blocking again), positioned at the start.

    Raises:
      FileRefused: not a regular file (a directory, FIFO, socket or device).
      OSError: missing or unreadable.
    """
    _require_regular(os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        _require_regular(os.fstat(fd).st_mode)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_npy(stream, size, max_bytes):
    """The array of a .npy stream of `size` bytes, its header checked before the data is read.

    Raises:
      FileRefused: bad header, an object (pickled) dtype, a negative dimension, more data
        declared than the stream holds, or more than `max_bytes`.
      ValueError: a header NumPy cannot parse.
    """
    version = np.lib.format.read_magic(stream)
    if version not in NPY_HEADER_READERS:
        raise FileRefused(
            f".npy format version {version[0]}.{version[1]} is not supported: save "
            "it with numpy.save"
        )
    shape, fortran_order, dtype = NPY_HEADER_READERS[version](stream)
    if dtype.hasobject:
        raise FileRefused("it holds Python objects, which are never unpickled: store numbers")
    if any(n < 0 for n in shape):
        raise FileRefused(f"its header declares the negative shape {list(shape)}: it is corrupt")
    nbytes = math.prod(shape) * dtype.itemsize
    available = size - stream.tell()
    if nbytes > available:
        raise FileRefused(
            f"its header declares {dtype} {list(shape)} ({nbytes} bytes) but only "
            f"{available} bytes follow: it is truncated or corrupt"
        )
    if nbytes > max_bytes:
        raise FileRefused(
            f"its {dtype} {list(shape)} ({nbytes} bytes) exceed the {max_bytes} "
            "bytes allowed: split it into smaller files"
        )
    data = bytearray(nbytes)
    view = memoryview(data)
    filled = 0
    while filled < nbytes:
        count = stream.readinto(view[filled : filled + _READ_CHUNK])
        if not count:
            raise FileRefused(f"its data ends after {filled} of {nbytes} bytes: it is truncated")
        filled += count
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape, order="F" if fortran_order else "C")


def load_npy(path, max_bytes):
    """Reads a .npy file (never unpickling) with at most `max_bytes` of array data.

    Raises:
      FileRefused: see `open_regular` and `_read_npy`.
      ValueError: an unparsable header. OSError: unreadable.
    """
    with open_regular(path) as f:
        return _read_npy(f, os.fstat(f.fileno()).st_size, max_bytes)


def npz_key(member):
    """The key NumPy gives an .npz member: its name without `.npy`."""
    return member[: -len(_NPY_SUFFIX)] if member.endswith(_NPY_SUFFIX) else member


def load_npz(path, max_bytes, select=sorted):
    """Reads the arrays `select(keys)` of an .npz archive, at most `max_bytes` of data in all.

    Args:
      path: the archive.
      max_bytes: budget for the selected arrays' data together (a member's uncompressed size is
        only declared, so a small archive can claim terabytes; nothing is allocated beyond it).
      select: called with the archive's keys (member names without `.npy`), returns the keys
        to read, in order; the default reads all of them.

    Returns:
      `[(key, array), ...]` in the order `select` gave.

    Raises:
      FileRefused: see `open_regular`; also a selected member that is not a .npy array, or one
        whose header lies or exceeds the budget (the message then names the array).
      zipfile.BadZipFile, ValueError, OSError, zlib.error, EOFError: a corrupt archive.
    """
    with open_regular(path) as f, zipfile.ZipFile(f) as archive:
        members = {npz_key(info.filename): info for info in archive.infolist()}
        arrays, budget = [], max_bytes
        for key in select(list(members)):
            info = members[key]
            if not info.filename.endswith(_NPY_SUFFIX):
                raise FileRefused(f"member {info.filename} is not a .npy array")
            with archive.open(info) as stream:
                try:
                    array = _read_npy(stream, info.file_size, budget)
                except FileRefused as e:
                    raise FileRefused(f"array {key}: {e}") from None
            budget -= array.nbytes
            arrays.append((key, array))
        return arrays


def file_identity(path):
    """`(device, inode)` of `path` (links followed), or None if it cannot be stat'ed."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


class OutputDirectory:
    """An existing directory that files are written into atomically and only by plain name.

    The directory is opened once and every name is resolved relative to that descriptor, so
    renaming or replacing the directory's path later cannot redirect writes. Each file is written
    to a fresh temporary name beside its final one, created with O_CREAT | O_EXCL | O_NOFOLLOW (a
    file or link planted there is never written through or reused), then renamed over the final
    name, so no half-written file ever carries a final name. A final name that is a symbolic link,
    not a regular file, or one of the `protected` files is refused, so writing never changes a
    file outside the directory or an input. (A link planted at the final name after that check
    is replaced by the rename, which never follows links, so even that race writes nothing
    outside.)

    Use as a context manager, or call `close`.
    """

    def __init__(self, path, protected=None):
        """Opens `path`.

        Args:
          path: an existing directory.
          protected: `{file_identity(path): path}` of files that must never be replaced
            (inputs, say); None keys (files that could not be stat'ed) are ignored.

        Raises:
          OSError: `path` is missing, not a directory or not accessible.
        """
        self.path = path
        self._protected = {
            identity: protected_path
            for identity, protected_path in (protected or {}).items()
            if identity
        }
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self):
        """Closes the directory's descriptor; writing afterwards fails with OSError."""
        os.close(self._fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def check(self, name):
        """Raises FileRefused if writing `name` would replace a link, non-file or protected file.

        Raises:
          ValueError: `name` is not a plain file name (a programming error: see `safe_name`).
        """
        if (
            not name
            or name in (".", "..")
            or "/" in name
            or "\0" in name
            or len(os.fsencode(name)) > _MAX_NAME_BYTES
        ):
            raise ValueError(f"{printable(name)!r} is not a plain file name")
        try:
            info = os.stat(name, dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(info.st_mode):
            raise FileRefused(f"output {name} in {self.path} is a symbolic link: remove it")
        kind = file_type(info.st_mode)
        if kind:
            raise FileRefused(f"output {name} in {self.path} is {kind}: remove it")
        protected = self._protected.get((info.st_dev, info.st_ino))
        if protected:
            raise FileRefused(
                f"output {name} would replace the input {protected}: choose "
                "another output directory"
            )

    def write(self, name, data, fsync=False):
        """Writes the bytes `data` as `name`, atomically (see the class docstring).

        Args:
          name: a plain file name (`safe_name` makes one).
          data: the whole content.
          fsync: flush the file to disk before renaming it, and the directory after, so that
            even a power cut leaves the old or the new content under `name`.

        Raises:
          FileRefused: see `check`. OSError: the write or rename failed (the final name is then
            untouched and the temporary file removed).
        """
        self.check(name)
        temporary, fd = self._create_temporary(name)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(temporary, name, src_dir_fd=self._fd, dst_dir_fd=self._fd)
            if fsync:  # the rename itself is only durable once the directory is flushed
                os.fsync(self._fd)
        except BaseException:
            try:
                os.unlink(temporary, dir_fd=self._fd)
            except OSError:
                pass  # already renamed, or the directory is gone: nothing left to clean
            raise

    def _create_temporary(self, name):
        """`(name, descriptor)` of a new, empty, hidden file beside `name`."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        while True:
            # Random, so that nobody can plant anything at the name in advance; O_EXCL still
            # guards against a collision.
            # Cut by bytes, so that the name stays within a path component's limit.
            short = os.fsdecode(os.fsencode(name)[: _MAX_NAME_BYTES - 32])
            temporary = f".{short}.{secrets.token_hex(8)}.tmp"
            try:
                return temporary, os.open(temporary, flags, 0o666, dir_fd=self._fd)
            except FileExistsError:
                continue


def write_durably(path, data):
    """Writes the bytes `data` as `path` atomically, flushed to disk with its directory.

    A crash or power cut at any moment leaves the old or the new content under `path`, never a
    torn file (see `OutputDirectory.write`).

    Raises:
      FileRefused: `path` is a symbolic link or not a regular file.
      OSError: the write failed (e.g. a full disk); the old file is left as it was.
    """
    with OutputDirectory(os.path.dirname(path) or ".") as directory:
        directory.write(os.path.basename(path), data, fsync=True)
