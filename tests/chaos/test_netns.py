"""The namespace harness and the nemesis, checked with real packets and real nodes.

Skipped (with what is missing) unless run as root on Linux with network namespaces,
veth, bridges and nftables."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos import nemesis as nm
from tests.chaos.netns import (
    STATE_DIR,
    ChaosNet,
    _existing_links,
    _existing_namespaces,
    cleanup_leftovers,
    unavailable_reason,
)
from tests.chaos.probes import tcp_connect, udp_delivered, wait_views
from tests.cluster.harness import http


def _skip_reason() -> str | None:
    return unavailable_reason()


pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosNet]:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with ChaosNet(tmp_path_factory.mktemp("chaosnet")) as chaos:
        yield chaos


@pytest.fixture
def nemesis(net: ChaosNet) -> Iterator[nm.Nemesis]:
    nemesis = nm.Nemesis(net)
    try:
        yield nemesis
    finally:
        nemesis.heal()
        net.wait_connected(timeout_s=60)


def test_hosts_have_their_own_addresses_and_serve_clients(net: ChaosNet) -> None:
    assert len({host.address for host in net.hosts}) == 5
    assert len({host.ns for host in net.hosts}) == 5
    for host in net.hosts:
        assert host.ns in _existing_namespaces()
    put = http("PUT", net.hosts[0].url + "/buckets/chaos/keys/k", b"v",
               {"Content-Type": "text/plain"})
    assert put.status == 204
    for host in net.hosts:
        assert http("GET", host.url + "/buckets/chaos/keys/k").body == b"v"
    record = json.loads((STATE_DIR / f"{net.prefix}.json").read_text())
    assert record["node_pids"] == [host.process.pid for host in net.hosts if host.process]


def test_majority_minority_partition_cuts_and_heals(net: ChaosNet,
                                                    nemesis: nm.Nemesis) -> None:
    nemesis.apply(nm.Partition((("n1", "n2", "n3"), ("n4", "n5"))))
    assert not tcp_connect(net, "n1", "n4", timeout_s=1)[0]
    assert not tcp_connect(net, "n5", "n2", timeout_s=1)[0]
    assert tcp_connect(net, "n1", "n3")[0]
    assert tcp_connect(net, "n4", "n5")[0]
    wait_views(net, {"n1": {"n4": False, "n5": False, "n2": True},
                     "n4": {"n1": False, "n5": True}}, timeout_s=20)
    # Clients in the root namespace still reach both sides.
    for host in net.hosts:
        assert http("GET", host.url + "/ping", timeout=5).status == 200
    nemesis.heal()
    assert tcp_connect(net, "n1", "n4")[0]
    net.wait_connected(timeout_s=60)


def test_bridge_node_sees_both_sides(net: ChaosNet, nemesis: nm.Nemesis) -> None:
    nemesis.apply(nm.Bridge(("n1", "n2"), ("n4", "n5"), "n3"))
    assert not tcp_connect(net, "n1", "n5", timeout_s=1)[0]
    assert tcp_connect(net, "n1", "n3")[0]
    assert tcp_connect(net, "n5", "n3")[0]
    wait_views(net, {"n3": {"n1": True, "n5": True}, "n1": {"n5": False, "n3": True}},
               timeout_s=20)


def test_one_way_drop(net: ChaosNet, nemesis: nm.Nemesis) -> None:
    nemesis.apply(nm.OneWay(("n1",), ("n2",)))
    assert udp_delivered(net, "n1", "n2", count=50) == 0
    assert udp_delivered(net, "n2", "n1", count=50) == 50
    assert "drop n1->n2" in nemesis.counters("n1")
    assert "drop" not in nemesis.counters("n2")


def test_random_loss_drops_about_that_share(net: ChaosNet, nemesis: nm.Nemesis) -> None:
    nemesis.apply(nm.Loss(50))
    delivered = udp_delivered(net, "n3", "n4", count=400)
    assert 100 <= delivered <= 300, delivered  # about 200; 5 standard deviations apart
    nemesis.clear(nm.Loss(50))
    assert udp_delivered(net, "n3", "n4", count=100) == 100


def test_delay_goes_through_the_delaying_proxy(net: ChaosNet, nemesis: nm.Nemesis) -> None:
    ok, direct_s = tcp_connect(net, "n1", "n2", read=True)
    assert ok and direct_s < 0.1, direct_s
    nemesis.apply(nm.Delay("n2", 300))
    # The proxy delays the connection's bytes each way: n2's handshake arrives 300 ms late.
    ok, delayed_s = tcp_connect(net, "n1", "n2", read=True)
    assert ok and 0.29 <= delayed_s < 3.0, delayed_s
    ok, delayed_s = tcp_connect(net, "n2", "n5", read=True)
    assert ok and 0.29 <= delayed_s < 3.0, delayed_s
    # Nodes keep working through it.
    net.wait_connected(timeout_s=30)
    nemesis.heal()
    ok, direct_s = tcp_connect(net, "n1", "n2", read=True)
    assert ok and direct_s < 0.1, direct_s


def test_kill_restart_pause_resume(net: ChaosNet, nemesis: nm.Nemesis) -> None:
    nemesis.apply(nm.Kill("n3"))
    assert not net.host("n3").alive()
    wait_views(net, {"n1": {"n3": False}}, timeout_s=20)
    nemesis.clear(nm.Kill("n3"))
    assert net.host("n3").alive()
    wait_views(net, {"n1": {"n3": True}, "n3": {"n1": True}}, timeout_s=30)
    nemesis.apply(nm.Pause("n5"))
    wait_views(net, {"n1": {"n5": False}, "n2": {"n5": False}}, timeout_s=20)
    nemesis.clear(nm.Pause("n5"))
    wait_views(net, {"n1": {"n5": True}}, timeout_s=30)


def test_schedules_are_seeded_and_cover_every_fault() -> None:
    short = nm.make_schedule("short", seed=7)
    assert short == nm.make_schedule("short", seed=7)
    assert short != nm.make_schedule("short", seed=8)
    kinds = {type(w.fault) for w in short.windows}
    assert kinds == {nm.Partition, nm.Bridge, nm.OneWay, nm.Loss, nm.Kill, nm.Pause, nm.Delay}
    assert short.faults_end_s < 100
    windows = sorted((w for w in short.windows if not w.until_heal), key=lambda w: w.start_s)
    assert all(a.end_s < b.start_s for a, b in itertools.pairwise(windows))
    # The heal ends a partition with a node of its minority killed.
    final = [w.fault for w in short.windows if w.until_heal]
    assert isinstance(final[0], nm.Partition) and isinstance(final[1], nm.Kill)
    assert final[1].host in final[0].groups[1]
    long = nm.make_schedule("long", seed=7)
    assert len(long.windows) >= 21 and long.faults_end_s > 300
    with pytest.raises(ValueError, match="unknown schedule"):
        nm.make_schedule("medium", seed=1)


def test_command_line_tool(tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    tool = [sys.executable, "-m", "tests.chaos.net"]
    up = subprocess.Popen([*tool, "up", "--root", str(tmp_path)], stdout=subprocess.PIPE,
                          text=True)
    try:
        assert up.stdout is not None
        first = up.stdout.readline()
        assert first.startswith("run dkc"), first
        prefix = first.split()[1].rstrip(":")
        net = ChaosNet.attach(prefix)
        status = subprocess.run([*tool, "status"], capture_output=True, text=True, check=True)
        assert prefix in status.stdout and net.hosts[0].url in status.stdout
        fault = subprocess.run([*tool, "fault", prefix, "partition", "n1,n2,n3/n4,n5"],
                               capture_output=True, text=True, check=True)
        assert "partition n1,n2,n3 | n4,n5" in fault.stdout
        assert not tcp_connect(net, "n1", "n4", timeout_s=1)[0]
        bad = subprocess.run([*tool, "fault", prefix, "partition", "n1/n9"],
                             capture_output=True, text=True)
        assert bad.returncode == 2 and "unknown host(s) n9" in bad.stderr
        subprocess.run([*tool, "heal", prefix], capture_output=True, text=True, check=True)
        assert tcp_connect(net, "n1", "n4")[0]
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
    assert not any(ns.startswith(prefix) for ns in _existing_namespaces())
    assert not any(link.startswith(prefix) for link in _existing_links())
    assert not (STATE_DIR / f"{prefix}.json").exists()


def test_leftovers_of_a_dead_run_are_removed(tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    # A run whose owner died: SIGKILL a process that brought a net up without nodes.
    script = ("import sys, time; from pathlib import Path; from tests.chaos.netns import "
              "ChaosNet; n = ChaosNet(Path(sys.argv[1])); n.up(start_nodes=False); "
              "print(n.prefix, flush=True); time.sleep(600)")
    owner = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    prefix = owner.stdout.readline().strip()
    owner.kill()
    owner.wait(timeout=10)
    assert any(ns.startswith(prefix) for ns in _existing_namespaces())
    assert prefix in cleanup_leftovers()
    assert not any(ns.startswith(prefix) for ns in _existing_namespaces())
    assert not any(link.startswith(prefix) for link in _existing_links())
