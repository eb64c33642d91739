"""A TCP proxy that delays every byte by a fixed time, each way (the kernel has no netem).

    python -m tests.chaos.delayproxy --listen 10.77.0.254 --delay-ms 150 \
        --route 18101=10.77.0.1:8100 --route 18102=10.77.0.2:8100

For each route it listens on LISTEN:PORT and connects every accepted connection to
HOST:PORT; whatever it reads from one side it writes to the other `delay_ms` later, in
order (a queue of (due time, chunk) per direction). The nemesis redirects a node's
internode connections through it with nftables DNAT rules in the namespaces. It prints
`ready` once every listener is open, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, chunk = await queue.get()
            if not chunk:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()
        await asyncio.sleep(max(0.0, due - loop.time()))
        with contextlib.suppress(OSError):
            writer.write_eof()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            chunk = await reader.read(65536)
            queue.put_nowait((loop.time() + delay_s, chunk))
            if not chunk:
                break
        await sender
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        sender.cancel()
        writer.close()


async def _serve(listen: str, routes: dict[int, tuple[str, int]], delay_s: float) -> None:
    def handler_for(target: tuple[str, int]) -> Callable[
            [asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(*target), timeout=5)
            except (OSError, TimeoutError):
                writer.close()
                return
            with contextlib.suppress(asyncio.CancelledError):  # the proxy stopping
                await asyncio.gather(_pump(reader, up_writer, delay_s),
                                     _pump(up_reader, writer, delay_s),
                                     return_exceptions=True)
        return handle

    servers = []
    for port, target in sorted(routes.items()):
        servers.append(await asyncio.start_server(handler_for(target), listen, port,
                                                  reuse_address=True))
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def parse_route(text: str) -> tuple[int, tuple[str, int]]:
    port, _, target = text.partition("=")
    host, _, target_port = target.rpartition(":")
    if not port.isdigit() or not target_port.isdigit() or not host:
        raise argparse.ArgumentTypeError(f"route {text!r} is not PORT=HOST:PORT")
    return int(port), (host, int(target_port))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.delayproxy",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--listen", required=True, help="address to listen on")
    parser.add_argument("--delay-ms", type=int, required=True, help="delay each way")
    parser.add_argument("--route", type=parse_route, action="append", required=True,
                        help="LISTENPORT=HOST:PORT (repeat)")
    args = parser.parse_args(argv)
    if args.delay_ms < 0 or args.delay_ms > 60_000:
        parser.error("--delay-ms must be in 0..60000")
    asyncio.run(_serve(args.listen, dict(args.route), args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
