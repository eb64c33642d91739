"""The bare ceiling (bench/ceiling.py) as the benchmark starts it (bench/services.py):
three processes serve Riak's PB and HTTP subsets, `dynakv bench` drives them without
errors over both, and the PB replies are the ones the client expects, in order."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dynakv.client import Client
from dynakv.client.model import BadRequest
from dynakv.client.pb_protocol import error_of
from dynakv.client.pb_transport import pb_address
from dynakv.proto import riak_pb2 as pb
from dynakv.proto.frames import Code, FrameDecoder, encode_frame
from tests.cluster.harness import free_port

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.timeout(90)


def start(root: Path, protocol: str) -> Any:
    """bench/services.py's ceiling_cluster, on ports never handed out twice."""
    spec = importlib.util.spec_from_file_location("bench_services", BENCH / "services.py")
    assert spec is not None and spec.loader is not None
    services = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = services  # dataclasses look their module up
    spec.loader.exec_module(services)
    return services.ceiling_cluster(root, protocol, port=free_port)


@pytest.fixture(params=["pb", "http"])
def ceiling(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with start(tmp_path, request.param) as service:
        yield service
    assert all(process.poll() is not None for process in service.processes)


@pytest.fixture
def ceiling_pb(tmp_path: Path) -> Iterator[list[str]]:
    with start(tmp_path, "pb") as service:
        yield service.urls
    assert all(process.poll() is not None for process in service.processes)


def test_bench_drives_the_ceiling(ceiling: Any) -> None:
    argv = [sys.executable, "-m", "dynakv", "bench", "--workload", "A", "--duration", "2",
            "--warmup", "0.5", "--concurrency", "4", "--keys", "200", "--json", "--quiet",
            *(arg for url in ceiling.urls for arg in ("--url", url))]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["protocol"] == ceiling.name.removeprefix("ceiling-")
    assert report["ops"] > 0 and report["ops_per_s"] > 0
    assert report["errors"] == 0, report["error_kinds"]
    assert report["reads_not_found"] == 0  # the load phase wrote every record
    assert report["siblings_per_read"] == 1.0


def test_pb_objects_contexts_and_replication(ceiling_pb: list[str]) -> None:
    first, *others = ceiling_pb
    with Client(first, timeout_s=10) as client:
        assert client.ping()
        assert not client.get("b", "k").exists
        stored = client.put("b", "k", b"v1", return_body=True)
        assert stored is not None and [s.value for s in stored.siblings] == [b"v1"]
        read = client.get("b", "k")
        assert [s.value for s in read.siblings] == [b"v1"] and read.context
        # a context passed back is accepted (with no versions it changes nothing)
        assert client.put("b", "k", b"v2", context=read.context) is None
        assert client.get("b", "k").context == read.context
    for url in others:  # W=2: one peer has it at once, the other soon after
        with Client(url, timeout_s=10) as client:
            deadline = time.monotonic() + 5
            while [s.value for s in client.get("b", "k").siblings] != [b"v2"]:
                assert time.monotonic() < deadline, url
                time.sleep(0.05)


def test_pb_pipelined_replies_come_in_request_order(ceiling_pb: list[str]) -> None:
    address = pb_address(ceiling_pb[0])
    assert address is not None
    put = pb.RpbPutReq(bucket=b"b", key=b"p", content=pb.RpbContent(value=b"x"))
    requests = [encode_frame(Code.GET_REQ, pb.RpbGetReq(bucket=b"b", key=b"absent")
                             .SerializeToString()),
                encode_frame(Code.PUT_REQ, put.SerializeToString()),
                encode_frame(Code.PING_REQ),
                encode_frame(Code.LIST_BUCKETS_REQ),  # not served: an error, then go on
                encode_frame(Code.GET_REQ, pb.RpbGetReq(bucket=b"b", key=b"p")
                             .SerializeToString())]
    frames: list[tuple[int, bytes]] = []
    decoder = FrameDecoder(1 << 20)
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"".join(requests))  # all at once: pipelined
        while len(frames) < len(requests):
            data = sock.recv(65536)
            assert data, "the ceiling closed the connection"
            decoder.feed(data)
            while (frame := decoder.next_frame()) is not None:
                frames.append(frame)
    assert [code for code, _ in frames] == [Code.GET_RESP, Code.PUT_RESP, Code.PING_RESP,
                                            Code.ERROR_RESP, Code.GET_RESP]
    assert not pb.RpbGetResp.FromString(frames[0][1]).content  # not found
    assert pb.RpbPutResp.FromString(frames[1][1]).vclock
    assert isinstance(error_of(frames[3][1]), BadRequest)
    assert [c.value for c in pb.RpbGetResp.FromString(frames[4][1]).content] == [b"x"]
