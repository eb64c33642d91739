"""One dynakv node process: data directory, storage, core, transport, HTTP and PB APIs.

`run_node(options)` runs until SIGTERM or SIGINT, then stops taking requests,
drains the ones in flight, makes every queued write durable and exits.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import random
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from dynakv.config import Config
from dynakv.core import membership as ms
from dynakv.core.claim import Member, claim
from dynakv.core.node import Node
from dynakv.core.ring import Ring
from dynakv.net.http_api import make_app
from dynakv.net.pb_api import PbServer
from dynakv.net.runtime import Runtime, wall_clock_ms
from dynakv.net.stats import RequestStats
from dynakv.net.transport import Handshake, Transport
from dynakv.storage.datadir import load_ring, open_identity, save_ring
from dynakv.storage.lmdb_engine import LmdbStorage

log = logging.getLogger("dynakv.server")

DRAIN_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class PeerSpec:
    name: str
    host: str
    port: int
    weight: int = 1
    zone: str = ""


@dataclass(frozen=True, slots=True)
class NodeOptions:
    name: str
    data: Path
    http: tuple[str, int]
    internode: tuple[str, int]
    config: Config
    peers: tuple[PeerSpec, ...] = ()
    weight: int = 1
    zone: str = ""
    pb: tuple[str, int] | None = None

    def all_members(self) -> list[Member]:
        own = Member(self.name, self.weight, self.zone)
        return sorted([own, *(Member(p.name, p.weight, p.zone) for p in self.peers)],
                      key=lambda member: member.name)


def establish_ring(options: NodeOptions) -> Ring:
    """The stored ring if there is one (it wins over the command line), else a new claim."""
    stored = load_ring(options.data)
    members = options.all_members()
    if stored is not None:
        ring, stored_members = stored
        if [m.name for m in stored_members] != [m.name for m in members]:
            log.warning("the stored ring's members (%s) differ from the command line's (%s); "
                        "the stored ring wins",
                        ", ".join(m.name for m in stored_members),
                        ", ".join(m.name for m in members))
        return ring
    owners = claim(options.config.ring_size, members, options.config.n_val)
    ring = Ring(owners)
    save_ring(options.data, ring, members)
    return ring


def initial_cluster(options: NodeOptions, ring: Ring) -> ms.ClusterState:
    """With --peer: the bootstrap state every first member computes alike. Alone: a
    cluster of one, founded now (other nodes join it with `dynakv admin join`)."""
    own = ms.MemberInfo(options.name, "{}:{}".format(*options.internode), options.weight,
                        options.zone)
    config = options.config
    if options.peers:
        members = [own, *(ms.MemberInfo(p.name, f"{p.host}:{p.port}", p.weight, p.zone)
                          for p in options.peers)]
        return ms.bootstrap(config.cluster_name, members, ring.owners, config.n_val)
    return ms.new_cluster(config.cluster_name, secrets.token_hex(8), own, ring.size,
                          config.n_val)


async def serve(options: NodeOptions) -> None:
    identity = open_identity(options.data, options.name, options.config.cluster_name)
    ring = establish_ring(options)
    storage = LmdbStorage(options.data / "data.lmdb")
    node = Node(
        name=options.name,
        server_id=identity.server_id,
        ring=ring,
        peers=[peer.name for peer in options.peers],
        storage=storage,
        config=options.config,
        rng=random.Random(secrets.randbits(64)),
        now_ms=wall_clock_ms(),
        cluster=initial_cluster(options, ring),
    )
    runtime = Runtime(node, storage)
    transport = Transport(
        options.config,
        Handshake(options.config.cluster_name, options.name, ring.digest()),
        {name: (address.rpartition(":")[0], int(address.rpartition(":")[2]))
         for name, address in node.peer_addresses().items() if address},
        runtime.deliver,
        runtime.peer_status,
    )
    runtime.transport = transport
    runtime.start()
    await transport.start(*options.internode)
    stats = RequestStats()  # shared by both front ends, reported by GET /stats
    app = make_app(runtime, stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, options.http[0], options.http[1], reuse_address=True)
    await site.start()
    pb_server = PbServer(runtime, stats)
    if options.pb is not None:
        await pb_server.start(*options.pb)
    pid_file = options.data / "node.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    log.info("node %s (server id %s) serving HTTP on %s:%d, PB on %s, internode on %s:%d, "
             "ring of %d", options.name, identity.server_id, *options.http,
             "{}:{}".format(*options.pb) if options.pb else "(off)", *options.internode,
             ring.size)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        log.info("stopping: draining %d request(s) in flight", runtime.in_flight())
        await site.stop()
        pb_server.stop_listening()
        await runtime.drain(DRAIN_TIMEOUT_S)
    finally:
        await pb_server.close()
        await runner.cleanup()
        await transport.close()
        await runtime.close()
        storage.close()
        if pid_file.exists() and pid_file.read_text().strip() == str(os.getpid()):
            pid_file.unlink()
        log.info("stopped")


def run_node(options: NodeOptions) -> None:
    # A crash below Python (a fault in a C extension: LMDB, msgpack, uvloop) writes every
    # thread's Python stack to stderr, the node's log, instead of ending it silently.
    faulthandler.enable()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(options))
    else:
        uvloop.run(serve(options))
