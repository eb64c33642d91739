"""The load generator: C asyncio clients (uvloop) in one or several processes.

Phases: load (write every record once, without a context), warm-up (the workload,
not recorded), then the measured run. An operation is recorded when it started in
the measured window; throughput is the operations recorded over the time from the
window's start to the last of them finishing. Each process records its own
histograms; the parent merges them (HdrHistogram's encoding carries them across).
Progress goes to stderr: a bar on a terminal, a line every few seconds otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dynakv.bench.drivers import Driver, Target, make_driver
from dynakv.bench.histogram import Latencies
from dynakv.bench.workload import Op, Values, key_chooser, key_name, workload

# Contexts kept per process, one per key at most: --keys is bounded by this.
KEYS_MAX = 10_000_000
ERROR_PAUSE_S = 0.01  # a client that met an error pauses, so a dead server is not spun on
PROCESS_START_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class BenchConfig:
    targets: tuple[Target, ...]
    workload: str = "A"
    distribution: str = "uniform"
    concurrency: int = 50
    duration_s: float = 10.0
    warmup_s: float = 2.0
    keys: int = 10_000
    value_size: int = 100
    processes: int = 1
    seed: int = 1
    load: bool = True
    progress: bool = True

    def check(self) -> None:
        workload(self.workload)
        key_chooser(self.distribution, 1)
        if not self.targets:
            raise ValueError("at least one --url is needed")
        if self.concurrency < 1:
            raise ValueError("--concurrency must be at least 1")
        if not 1 <= self.processes <= self.concurrency:
            raise ValueError("--processes must be between 1 and --concurrency")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("--duration must be positive and --warmup not negative")
        if not 1 <= self.keys <= KEYS_MAX:
            raise ValueError(f"--keys must be between 1 and {KEYS_MAX}")
        if self.value_size < 1:
            raise ValueError("--value-size must be at least 1 byte")

    def clients_of(self, process: int) -> range:
        """The client numbers process `process` runs (C split as evenly as can be)."""
        share, extra = divmod(self.concurrency, self.processes)
        start = process * share + min(process, extra)
        return range(start, start + share + (1 if process < extra else 0))


class Tally(Protocol):
    value: int


@dataclass
class LocalTally:
    value: int = 0


@dataclass
class Part:
    """What one process measured; plain data, so it crosses a process boundary."""

    histograms: dict[str, bytes] = field(default_factory=dict)
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    reads: int = 0
    siblings: int = 0
    siblings_max: int = 0
    reads_with_siblings: int = 0
    reads_not_found: int = 0
    elapsed_s: float = 0.0
    fatal: str | None = None


class Recorder:
    def __init__(self) -> None:
        self.latencies = {op: Latencies() for op in Op}
        self.requests = 0
        self.errors: Counter[str] = Counter()
        self.reads = self.siblings = self.siblings_max = 0
        self.reads_with_siblings = self.reads_not_found = 0

    def read(self, siblings: int) -> None:
        self.reads += 1
        self.siblings += siblings
        self.siblings_max = max(self.siblings_max, siblings)
        self.reads_with_siblings += siblings > 1
        self.reads_not_found += siblings == 0

    def part(self, elapsed_s: float) -> Part:
        return Part({op.value: lat.encode() for op, lat in self.latencies.items() if lat.count},
                    self.requests, dict(self.errors), self.reads, self.siblings,
                    self.siblings_max, self.reads_with_siblings, self.reads_not_found,
                    elapsed_s)


def open_drivers(config: BenchConfig, clients: int) -> list[Driver]:
    per_target = -(-clients // len(config.targets))
    return [make_driver(target, per_target) for target in config.targets]


async def close_drivers(drivers: list[Driver]) -> None:
    for driver in drivers:
        with contextlib.suppress(Exception):
            await driver.close()


async def load_phase(config: BenchConfig, tally: Tally) -> float:
    """Write every record once, with C clients; answers the seconds it took."""
    drivers = open_drivers(config, config.concurrency)
    values = Values(config.value_size, random.Random(config.seed))
    records = iter(range(config.keys))
    failures: list[BaseException] = []

    async def client(number: int) -> None:
        driver = drivers[number % len(drivers)]
        for index in records:
            try:
                await driver.write(key_name(index), values.next(), None)
            except Exception as error:
                failures.append(error)
                return
            tally.value += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(client(number) for number in range(config.concurrency)))
    finally:
        await close_drivers(drivers)
    if failures:
        raise ConnectionError(f"the load phase failed: {describe(failures[0])}")
    return time.perf_counter() - started


def describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if text != type(error).__name__ else text


async def run_clients(config: BenchConfig, process: int, tally: Tally,
                      ready: Callable[[], None]) -> Part:
    """This process's clients through warm-up and the measured run."""
    numbers = config.clients_of(process)
    drivers = open_drivers(config, len(numbers))
    mix = workload(config.workload)
    keys = key_chooser(config.distribution, config.keys)
    values = Values(config.value_size, random.Random(config.seed * 7919 + process))
    contexts: dict[str, bytes] = {}
    recorder = Recorder()
    try:
        await probe(drivers)
    except Exception as error:
        await close_drivers(drivers)
        return Part(fatal=describe(error))
    ready()
    start_ns = time.perf_counter_ns()
    measure_ns = start_ns + int(config.warmup_s * 1e9)
    end_ns = measure_ns + int(config.duration_s * 1e9)
    last_ns = measure_ns

    async def client(number: int) -> None:
        nonlocal last_ns
        driver = drivers[number % len(drivers)]
        rng = random.Random(config.seed * 1_000_003 + number)
        latencies = recorder.latencies
        while True:
            began = time.perf_counter_ns()
            if began >= end_ns:
                return
            measured = began >= measure_ns
            op = mix.choose(rng)
            key = key_name(keys.next(rng))
            try:
                if op is Op.WRITE:
                    context = await driver.write(key, values.next(), contexts.get(key))
                    requests = 1
                else:
                    context, siblings = await driver.read(key)
                    requests = 1
                    if measured:
                        recorder.read(siblings)
                    if op is Op.UPDATE:
                        context = await driver.write(key, values.next(), context)
                        requests = 2
            except Exception as error:
                if measured:
                    recorder.errors[type(error).__name__] += 1
                await asyncio.sleep(ERROR_PAUSE_S)
                continue
            if context:
                contexts[key] = context
            done = time.perf_counter_ns()
            tally.value += 1
            if measured:
                latencies[op].record_us((done - began) // 1000)
                recorder.requests += requests
                last_ns = max(last_ns, done)

    try:
        await asyncio.gather(*(client(number) for number in numbers))
    finally:
        await close_drivers(drivers)
    return recorder.part(max(last_ns - measure_ns, 1) / 1e9)


async def probe(drivers: list[Driver]) -> None:
    """Fail fast, with the reason, when a target does not answer."""
    for driver in drivers:
        await driver.read(key_name(0))


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run_in_loop(coroutine: Any) -> Any:
    loop = new_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


# --- processes ------------------------------------------------------------------------


def worker_main(config: BenchConfig, process: int, tally: Any, barrier: Any,
                results: Any) -> None:
    """A load-generator process: run its clients, put its Part on the results queue."""
    def ready() -> None:
        barrier.wait(PROCESS_START_TIMEOUT_S)

    try:
        part = run_in_loop(run_clients(config, process, tally, ready))
    except Exception as error:
        part = Part(fatal=describe(error))
        with contextlib.suppress(Exception):
            barrier.abort()
    results.put((process, part))


class Progress:
    """A progress bar (or plain lines) on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last_line_s = 0.0
        self.last_count = 0
        self.last_s = time.monotonic()

    def show(self, phase: str, fraction: float, count: int, detail: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        rate = (count - self.last_count) / max(now - self.last_s, 1e-6)
        self.last_count, self.last_s = count, now
        width = 30
        filled = int(width * min(max(fraction, 0.0), 1.0))
        line = (f"{phase:<8} [{'#' * filled}{'.' * (width - filled)}] "
                f"{100 * fraction:5.1f}%  {count} ops  {rate:8.0f} ops/s {detail}")
        if self.tty:
            sys.stderr.write("\r" + line[:120].ljust(120))
            sys.stderr.flush()
        elif now - self.last_line_s >= 5.0 or fraction >= 1.0:
            self.last_line_s = now
            print(line, file=sys.stderr, flush=True)

    def reset(self, count: int = 0) -> None:
        self.last_count = count
        self.last_s = time.monotonic()

    def done(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


async def watch(progress: Progress, phase: str, tally: Tally,
                fraction: Callable[[], float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        progress.show(phase, fraction(), tally.value)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    progress.show(phase, fraction(), tally.value)


async def load_with_progress(config: BenchConfig, progress: Progress) -> float:
    tally = LocalTally()
    stop = asyncio.Event()
    watcher = asyncio.create_task(
        watch(progress, "load", tally, lambda: tally.value / config.keys, stop))
    try:
        return await load_phase(config, tally)
    finally:
        stop.set()
        await watcher
        progress.done()


def run_fraction(config: BenchConfig, started: float) -> float:
    return (time.monotonic() - started) / (config.warmup_s + config.duration_s)


async def one_process(config: BenchConfig, progress: Progress) -> list[Part]:
    tally = LocalTally()
    stop = asyncio.Event()
    started = time.monotonic()
    progress.reset()
    watcher = asyncio.create_task(
        watch(progress, "run", tally, lambda: run_fraction(config, started), stop))
    try:
        part = await run_clients(config, 0, tally, lambda: None)
    finally:
        stop.set()
        await watcher
        progress.done()
    return [part]


def many_processes(config: BenchConfig, progress: Progress) -> list[Part]:
    context = multiprocessing.get_context("spawn")
    tallies = [context.Value("q", 0, lock=False) for _ in range(config.processes)]
    barrier = context.Barrier(config.processes + 1)
    results = context.Queue()
    workers = [context.Process(target=worker_main, daemon=True,
                               args=(config, index, tallies[index], barrier, results))
               for index in range(config.processes)]
    for worker in workers:
        worker.start()
    parts: dict[int, Part] = {}
    try:
        # A broken barrier means a worker failed; its Part says why.
        with contextlib.suppress(Exception):
            barrier.wait(PROCESS_START_TIMEOUT_S)
        started = time.monotonic()
        progress.reset()
        deadline = started + config.warmup_s + config.duration_s + PROCESS_START_TIMEOUT_S
        while len(parts) < config.processes and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                index, part = results.get(timeout=0.5)
                parts[index] = part
            progress.show("run", run_fraction(config, started),
                          sum(tally.value for tally in tallies),
                          f"({config.processes} processes)")
            if any(part.fatal for part in parts.values()):
                break
        progress.done()
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=5)
    missing = config.processes - len(parts)
    if missing and not any(part.fatal for part in parts.values()):
        raise RuntimeError(f"{missing} load-generator process(es) did not report")
    return list(parts.values())


@dataclass
class Outcome:
    parts: list[Part]
    load_s: float | None
    load_average_before: tuple[float, float, float]
    load_average_after: tuple[float, float, float]


def run(config: BenchConfig) -> Outcome:
    """Every phase; raises ConnectionError (with the reason) if a target fails."""
    config.check()
    progress = Progress(config.progress)
    before = os.getloadavg()
    load_s = run_in_loop(load_with_progress(config, progress)) if config.load else None
    if config.processes == 1:
        parts = run_in_loop(one_process(config, progress))
    else:
        parts = many_processes(config, progress)
    for part in parts:
        if part.fatal:
            raise ConnectionError(part.fatal)
    return Outcome(parts, load_s, before, os.getloadavg())
