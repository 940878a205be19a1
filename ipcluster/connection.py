"""Messages layer: the connection file, which tells clients and engines where a cluster is.

A JSON file, mode 0600 inside a 0700 cluster directory, holding full URLs (``tcp://host:port``)
and the cluster key (hex, field ``key``). Anyone who can read it can run code on the cluster;
anyone who can replace it can run code in the client, so it is read only from a safe folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from ipcluster.config import cluster_dir
from ipcluster.errors import ConnectionFileError

CONNECTION_VARIABLE = "IPCLUSTER_CONNECTION"  # the connection info itself, for engines in batch jobs
FILENAME = "connection.json"


@dataclass
class ConnectionInfo:
    cluster_id: str
    client_url: str  # ROUTER that clients connect to
    engine_url: str  # ROUTER that engines connect to
    pub_url: str  # PUB for events
    key: str  # hex HMAC key; whoever holds it can run code
    controller_pid: int = 0
    curve_public_key: str = ""  # Z85 CurveZMQ key of the controller; "" when not encrypted
    curve_secret_key: str = ""  # its secret half, for a restarted controller to reuse
    max_message_size: int = -1  # bytes in one frame the controller accepts; -1: no limit

    @property
    def key_bytes(self) -> bytes:
        return bytes.fromhex(self.key)


def new_key() -> str:
    return secrets.token_hex(32)


def make_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write(path: Path, info: ConnectionInfo) -> None:
    """Write atomically with mode 0600, so a reader never sees a partial file."""
    make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(dataclasses.asdict(info), f, indent=1)
    os.replace(tmp, path)


def check_private(path: Path) -> None:
    """Refuse a connection file that someone else could have read, written or replaced.

    Checked as OpenSSH's StrictModes checks ``~/.ssh``: the file is yours and private; its
    folder is yours (or root's) and nobody else may write it, since whoever can write the
    folder can replace the file with one naming their own controller and key, whose results
    your client would unpickle. A group-writable folder is accepted only with the sticky bit
    (``chmod g+w,+t``), which stops the group renaming or deleting a file it does not own.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return  # reported as missing by the reader
    uid, mode = os.getuid(), stat.S_IMODE(st.st_mode)
    if st.st_uid != uid:
        raise ConnectionFileError(
            f"connection file {path} is owned by uid {st.st_uid}, not by you (uid {uid}); "
            "a cluster's files must belong to the user who uses it. Start your own cluster, or "
            "ask its owner to share it through a copy you own (`cp` it, then `chmod 600`)")
    if mode & 0o077:
        raise ConnectionFileError(
            f"connection file {path} is readable by others (mode {mode:o}); anyone who can read "
            f"it can run code on the cluster. Treat the key as leaked: stop the cluster and start "
            f"a new one (its files are made private), or at least `chmod 600 {path}`")
    folder = path.absolute().parent
    fst = folder.stat()
    fmode = stat.S_IMODE(fst.st_mode)
    if fst.st_uid not in (uid, 0):
        raise ConnectionFileError(
            f"the folder {folder} of connection file {path} is owned by uid {fst.st_uid}, not by "
            f"you (uid {uid}) or root, so its owner could replace the file; keep connection files "
            "in a folder of your own (the default, ~/.ipcluster/<cluster-id>, is made 0700)")
    if fmode & 0o002 or (fmode & 0o020 and not fmode & stat.S_ISVTX):
        who = "everyone" if fmode & 0o002 else "its group"
        raise ConnectionFileError(
            f"the folder {folder} of connection file {path} is writable by {who} (mode "
            f"{fmode:o}), so they could replace the file with one naming their own controller; "
            f"`chmod go-w {folder}`, or for a group-shared folder `chmod o-w,+t {folder}` (the "
            "sticky bit stops others replacing a file they do not own)")


def read(path: str | os.PathLike) -> ConnectionInfo:
    path = Path(path)
    check_private(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConnectionFileError(
            f"no connection file at {path}; is the cluster running? "
            "Start one with `ipcluster start -n 4` or `ipcluster.Cluster(n=4)`"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConnectionFileError(
            f"connection file {path} is unreadable or not JSON ({exc}); "
            "restart the cluster to write a new one"
        ) from None
    fields = {f.name for f in dataclasses.fields(ConnectionInfo)}
    required = {f.name for f in dataclasses.fields(ConnectionInfo) if f.default is dataclasses.MISSING}
    if not isinstance(data, dict) or not required <= set(data):
        seen = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ConnectionFileError(
            f"connection file {path} is corrupt: expected the fields {sorted(required)}, "
            f"found {seen}; restart the cluster to write a new one"
        )
    info = ConnectionInfo(**{k: v for k, v in data.items() if k in fields})
    try:
        info.key_bytes
    except ValueError:
        raise ConnectionFileError(f"connection file {path} is corrupt: 'key' is not hex") from None
    return info


def find(url_file_or_cluster_id: str | os.PathLike) -> Path:
    """The connection file for a path or a cluster id (`ipcluster.state.choose` says which
    cluster is meant when none is named)."""
    candidate = Path(url_file_or_cluster_id)
    if candidate.suffix == ".json" or candidate.is_file() or os.sep in str(candidate):
        return candidate
    return cluster_dir(str(url_file_or_cluster_id)) / FILENAME
