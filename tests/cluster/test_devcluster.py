"""`dynakv dev` in-process: what it does when interrupted while it starts its nodes."""

from __future__ import annotations

import argparse
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dynakv import devcluster

pytestmark = pytest.mark.timeout(60)


def test_an_interrupt_while_the_nodes_start_stops_those_started(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        if started:  # Ctrl-C arrives while the second node starts
            raise KeyboardInterrupt
        child = real_popen(["sleep", "60"], **kwargs)  # stands in for the first node
        started.append(child)
        return child

    monkeypatch.setattr("dynakv.devcluster.subprocess.Popen", popen)
    args = argparse.Namespace(nodes=3, base_port=20000, data=str(tmp_path / "dev"),
                              ring_size=64)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            assert devcluster.run_dev(args) == 0
        except KeyboardInterrupt:
            pytest.fail("Ctrl-C while the nodes start escaped dev, leaving them running")
        assert len(started) == 1
        assert started[0].poll() is not None, "the node started before Ctrl-C still runs"
    finally:
        for signum, handler in handlers.items():  # dev installed its own in this process
            signal.signal(signum, handler)
        for child in started:
            child.kill()
            child.wait()
