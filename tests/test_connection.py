"""Connection files: private on disk, found by id or path, and refused clearly when broken."""

from __future__ import annotations

import os
import stat

import pytest

from ipcluster import connection
from ipcluster.errors import ConnectionFileError


def info(cid="c1"):
    return connection.ConnectionInfo(cid, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2",
                                     "tcp://127.0.0.1:3", connection.new_key(), 123)


def test_written_file_is_0600_in_a_0700_directory(tmp_path):
    path = tmp_path / "cluster" / "connection.json"
    connection.write(path, info())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


def test_round_trip_and_key_strength(tmp_path):
    original = info()
    connection.write(tmp_path / "c.json", original)
    assert connection.read(tmp_path / "c.json") == original
    assert len(original.key_bytes) == 32
    assert connection.new_key() != connection.new_key()


def test_a_key_that_is_not_hex_is_refused(tmp_path):
    path = tmp_path / "c.json"
    connection.write(path, info())
    path.write_text(path.read_text().replace('"key": "', '"key": "zz'))
    with pytest.raises(ConnectionFileError, match="not hex"):
        connection.read(path)


def test_find_resolves_ids_and_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("IPCLUSTER_DIR", str(tmp_path))
    assert connection.find("alpha") == tmp_path / "alpha" / "connection.json"
    assert connection.find(str(tmp_path / "x.json")) == tmp_path / "x.json"


def test_a_file_or_folder_others_could_replace_is_refused_like_openssh_strictmodes(tmp_path):
    path = tmp_path / "shared" / "connection.json"
    connection.write(path, info())
    folder = path.parent
    os.chmod(folder, 0o777)
    with pytest.raises(ConnectionFileError, match="writable by everyone.*chmod go-w"):
        connection.read(path)
    os.chmod(folder, 0o770)
    with pytest.raises(ConnectionFileError, match="writable by its group"):
        connection.read(path)
    os.chmod(folder, 0o770 | stat.S_ISVTX)  # a group-shared folder with the sticky bit
    assert connection.read(path).cluster_id == "c1"
    os.chmod(folder, 0o700)
    nobody = 65534
    os.chown(folder, nobody, -1)
    with pytest.raises(ConnectionFileError, match=f"owned by uid {nobody}, not by you"):
        connection.read(path)
    os.chown(folder, os.getuid(), -1)
    os.chown(path, nobody, -1)
    with pytest.raises(ConnectionFileError, match=f"owned by uid {nobody}, not by you"):
        connection.read(path)
