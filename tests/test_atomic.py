"""The one atomic writer: a failed write (a full disk) leaves the old file as it was and no temporary file."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from policysearch import atomic
from policysearch.atomic import save_torch_atomic, write_atomic, write_json_atomic, write_text_atomic
from policysearch.augment.policy import Policy


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


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
