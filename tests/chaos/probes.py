"""Checks that a fault is really in effect, with real packets between namespaces."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.chaos.netns import INTERNODE_PORT, ChaosNet

_CONNECT = """
import socket, sys, time
start = time.monotonic()
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as s:
        s.settimeout(float(sys.argv[3]))
        first = s.recv(1) if sys.argv[4] == "read" else b"x"
        print("ok" if first else "closed", time.monotonic() - start)
except OSError as error:
    print("fail", time.monotonic() - start, error)
"""

_LISTEN = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(float(sys.argv[3]))
print("listening", flush=True)
n = 0
try:
    while True:
        s.recv(100)
        n += 1
except OSError:
    pass
print(n, flush=True)
"""

_SEND = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    try:
        s.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
    except PermissionError:  # dropped by an nftables rule in this namespace's output
        pass
    time.sleep(0.001)
"""


def _in_ns(net: ChaosNet, host: str, script: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", net.host(host).ns, sys.executable, "-c", script, *args]


def tcp_connect(net: ChaosNet, source: str, target: str, port: int = INTERNODE_PORT,
                timeout_s: float = 2.0, read: bool = False) -> tuple[bool, float]:
    """Whether `source` opens a TCP connection to `target` (and, with read, gets a first
    byte back: a node sends its handshake at once); and how long it took."""
    result = subprocess.run(
        _in_ns(net, source, _CONNECT, net.host(target).address, str(port), str(timeout_s),
               "read" if read else "connect"),
        capture_output=True, text=True, timeout=timeout_s + 20, check=True)
    words = result.stdout.split()
    return words[0] == "ok", float(words[1])


def udp_delivered(net: ChaosNet, source: str, target: str, count: int = 100,
                  port: int = 9999) -> int:
    """How many of `count` UDP datagrams sent from source reach target."""
    listener = subprocess.Popen(
        _in_ns(net, target, _LISTEN, net.host(target).address, str(port), "1.0"),
        stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "listening"
        subprocess.run(_in_ns(net, source, _SEND, net.host(target).address, str(port),
                              str(count)), check=True, timeout=60)
        out, _ = listener.communicate(timeout=30)
        return int(out.split()[-1])
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait(timeout=5)


def wait_views(net: ChaosNet, expect: dict[str, dict[str, bool]], timeout_s: float) -> None:
    """Until each named node's view of the named peers is as expected (up True/False)."""
    deadline = time.monotonic() + timeout_s
    views: object = None
    while time.monotonic() < deadline:
        views = net.up_views()
        if all(views.get(node, {}).get(peer) == up
               for node, peers in expect.items() for peer, up in peers.items()):
            return
        time.sleep(0.2)
    raise AssertionError(f"views not as expected after {timeout_s} s: want {expect}, "
                         f"have {views}")
