"""The one atomic writer: a failed write (a full disk) leaves the old file as it was and no temporary file."""

from __future__ import annotations

import errno
import json
import math
import os

import pytest
import torch

from policysearch import atomic
from policysearch.atomic import save_torch_atomic, write_atomic, write_json_atomic, write_text_atomic
from policysearch.augment.policy import Policy


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_json_is_written_without_nan_which_strict_readers_refuse(tmp_path):
    """Regression (a trial): a benchmark's results.json held "std": NaN for a method of one seed, which
    JavaScript's and jq's parsers refuse."""
    path = tmp_path / "a.json"
    write_json_atomic(path, {"std": math.nan, "rows": [math.inf, 1.5, (-math.inf, "x")], "n": 1})

    def refuse(constant):
        raise ValueError(constant)

    assert json.loads(path.read_text(), parse_constant=refuse) == {"std": None, "rows": [None, 1.5, [None, "x"]], "n": 1}


def test_writes_replace_the_file_whole(tmp_path):
    path = tmp_path / "sub" / "a.json"
    write_json_atomic(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    write_text_atomic(path, "text")
    assert path.read_text() == "text"
    save_torch_atomic(tmp_path / "t.pt", {"x": torch.arange(3)})
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["x"], torch.arange(3))
    assert path.stat().st_mode & 0o777 == 0o666 & ~atomic._UMASK  # as open() would make it, not the temp's 0600
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "sub", "t.pt"]


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, where):
    path = tmp_path / "policy.json"
    old = Policy([[("Rotate", 0.5, 0.5)]])
    old.save(path)
    before = path.read_bytes()
    if where == "fsync":  # the data was written, the flush to disk fails
        monkeypatch.setattr(atomic.os, "fsync", _disk_full)
        with pytest.raises(OSError) as caught:
            Policy([[("Invert", 1.0, 0.0)]]).save(path)
    else:  # half the bytes went out, then the disk was full

        def half_then_full(handle):
            handle.write(b'{"format_version": 1, "sub_pol')
            _disk_full()

        with pytest.raises(OSError) as caught:
            write_atomic(path, half_then_full)
    assert caught.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert Policy.load(path) == old
    assert [p.name for p in tmp_path.iterdir()] == ["policy.json"]


@pytest.mark.parametrize("write", [
    lambda path: write_json_atomic(path, {"a": 1}),
    lambda path: save_torch_atomic(path, {"x": 1}),
    lambda path: Policy([[("Rotate", 0.5, 0.5)]]).save(path),
])
def test_a_folder_as_the_target_is_refused_by_its_own_name(tmp_path, write):
    target = tmp_path / "out.json"
    target.mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        write(target)
    assert caught.value.filename == str(target)  # the user's path, not the temporary file's
    assert caught.value.strerror == "is a directory"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"] and not list(target.iterdir())


def test_a_link_is_written_through_and_a_device_written_to(tmp_path):
    """Regression: the rename replaced a symbolic link, and (as root) /dev/null or /dev/full, with a plain file."""
    (tmp_path / "real.json").write_text("old")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    write_text_atomic(tmp_path / "link.json", "new")
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "real.json").read_text() == "new"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert write_text_atomic(fifo, "through the pipe") == fifo
        assert os.read(reader, 100) == b"through the pipe"
    finally:
        os.close(reader)
    assert fifo.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "pipe", "real.json"]
    write_text_atomic(os.devnull, "nothing")
    assert not os.path.isfile(os.devnull)


def test_an_error_names_the_path_given_not_the_temporary_file(tmp_path, monkeypatch):
    """Regression: a read-only folder's error named `.x.json.76r96aj4.tmp`, a file the user never named."""
    def read_only(prefix, suffix, dir):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.path.join(dir, f"{prefix}abc{suffix}"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as caught:
        write_text_atomic(tmp_path / "x.json", "text")
    assert caught.value.errno == errno.EROFS and caught.value.filename == str(tmp_path / "x.json")


def test_errors_about_other_files_keep_their_names(tmp_path):
    """A review found the first fix named the output for every error: a file in place of its folder, or a
    file the write itself read, became "OUT: File exists" or "OUT: No such file"."""
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError) as caught:
        write_text_atomic(tmp_path / "afile" / "out.json", "text")
    assert caught.value.filename == str(tmp_path / "afile")

    def reads_another(handle):
        handle.write((tmp_path / "missing.txt").read_bytes())

    with pytest.raises(FileNotFoundError) as caught:
        write_atomic(tmp_path / "out.bin", reads_another)
    assert caught.value.filename == str(tmp_path / "missing.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_device_that_fails_is_named(tmp_path):
    """/dev/full's error names no file; the message must say which output failed."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(OSError) as caught:
            write_atomic(fifo, lambda handle: _disk_full())
    finally:
        os.close(reader)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(fifo)
