from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import ProcessCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    nodes = ProcessCluster(tmp_path, size=3)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()
