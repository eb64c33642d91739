"""A node's data directory: its identity, format version, ring and storage.

    DIR/identity.json   {"format_version", "name", "cluster_name", "incarnation"}
    DIR/ring.json       {"ring_size", "owners", "members"} (written at creation)
    DIR/data.lmdb/      the LMDB environment (storage/lmdb_engine.py)
    DIR/node.pid        the running node's process id

The incarnation is drawn when the directory is created: the node's server id in
version vectors is "name@incarnation", so a node whose disk was wiped never
reuses the dots of its former self (Riak's kv679 data loss).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynakv.core.claim import Member
from dynakv.core.ring import Ring
from dynakv.core.storage import FORMAT_VERSION, FORMAT_VERSIONS_READ


class DataDirError(Exception):
    """The data directory cannot be used (another node's, another format)."""


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    cluster_name: str
    incarnation: str

    @property
    def server_id(self) -> str:
        return f"{self.name}@{self.incarnation}"


def write_json_atomically(path: Path, data: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def open_identity(directory: Path, name: str, cluster_name: str) -> Identity:
    """The directory's identity, created (with a fresh incarnation) if missing."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "identity.json"
    if not path.exists():
        identity = Identity(name, cluster_name, secrets.token_hex(4))
        write_json_atomically(path, {"format_version": FORMAT_VERSION, "name": name,
                                     "cluster_name": cluster_name,
                                     "incarnation": identity.incarnation})
        return identity
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DataDirError(f"{path}: unreadable identity: {error}") from error
    if data.get("format_version") not in FORMAT_VERSIONS_READ:
        raise DataDirError(
            f"{directory}: data format {data.get('format_version')}, this dynakv reads "
            f"format{'s' if len(FORMAT_VERSIONS_READ) > 1 else ''} "
            f"{', '.join(map(str, FORMAT_VERSIONS_READ))}")
    if data.get("name") != name:
        raise DataDirError(f"{directory} belongs to node {data.get('name')!r}, not {name!r}")
    if data.get("cluster_name") != cluster_name:
        raise DataDirError(
            f"{directory} belongs to cluster {data.get('cluster_name')!r}, not {cluster_name!r}")
    if data["format_version"] != FORMAT_VERSION:  # read as it is, written as the current
        write_json_atomically(path, {**data, "format_version": FORMAT_VERSION})
    return Identity(name, cluster_name, str(data["incarnation"]))


def load_ring(directory: Path) -> tuple[Ring, list[Member]] | None:
    path = directory / "ring.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    members = [Member(m["name"], int(m["weight"]), str(m.get("zone", "")))
               for m in data["members"]]
    return Ring(tuple(data["owners"])), members


def save_ring(directory: Path, ring: Ring, members: list[Member]) -> None:
    write_json_atomically(directory / "ring.json", {
        "ring_size": ring.size,
        "owners": list(ring.owners),
        "members": [{"name": m.name, "weight": m.weight, "zone": m.zone} for m in members],
    })
