"""The data directory's identity and format version: an older format this dynakv reads
is opened and marked current; others, and another node's directory, are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dynakv.core.storage import FORMAT_VERSION
from dynakv.storage.datadir import DataDirError, open_identity


def test_a_new_directory_gets_an_identity_that_opens_again(tmp_path: Path) -> None:
    first = open_identity(tmp_path, "n1", "c")
    assert open_identity(tmp_path, "n1", "c") == first
    assert json.loads((tmp_path / "identity.json").read_text())["format_version"] == FORMAT_VERSION
    with pytest.raises(DataDirError, match="belongs to node 'n1'"):
        open_identity(tmp_path, "n2", "c")


def test_format_1_is_read_and_marked_current(tmp_path: Path) -> None:
    (tmp_path / "identity.json").write_text(json.dumps(
        {"format_version": 1, "name": "n1", "cluster_name": "c", "incarnation": "ab12"}))
    assert open_identity(tmp_path, "n1", "c").incarnation == "ab12"
    data = json.loads((tmp_path / "identity.json").read_text())
    assert data == {"format_version": FORMAT_VERSION, "name": "n1", "cluster_name": "c",
                    "incarnation": "ab12"}


def test_an_unknown_format_is_refused_and_left_alone(tmp_path: Path) -> None:
    text = json.dumps({"format_version": 99, "name": "n1", "cluster_name": "c",
                       "incarnation": "ab12"})
    (tmp_path / "identity.json").write_text(text)
    with pytest.raises(DataDirError, match="data format 99, this dynakv reads formats 1, 2"):
        open_identity(tmp_path, "n1", "c")
    assert (tmp_path / "identity.json").read_text() == text
