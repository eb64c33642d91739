"""bench/profile.py --machine: perf report's output read into where the machine's
time went, by thread group and kind of code."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"

REPORT = """# Overhead|    Pid:Command        |Shared Object
#
 16.00% |  101:python         |libpython3.11.so.1.0
  3.00% |  101:python         |[kernel.kallsyms]
  1.50% |  101:python         |_cmsgpack.cpython-311-x86_64-linux-gnu.so
  2.50% |  105:python         |[kernel.kallsyms]
  0.50% |  105:python         |liblmdb.so
  9.00% |  200:python         |libpython3.11.so.1.0
  5.00% |      0:swapper      |[kernel.kallsyms]
  1.00% |     47:kworker/1:1H-kb |[kernel.kallsyms]
  0.25% |   999:perf-exec     |[kernel.kallsyms]
"""


def profile_module() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # profile.py imports services from its folder
    try:
        spec = importlib.util.spec_from_file_location("bench_profile", BENCH / "profile.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_the_machine_report_groups_threads_and_kinds_of_code() -> None:
    profile = profile_module()
    rows = profile.parse_perf_rows(REPORT)
    assert rows[0] == (16.0, ["101:python", "libpython3.11.so.1.0"])
    assert len(rows) == 9
    labels = {101: "node1", 105: "node1: other threads (the commit thread)",
              200: "load generator"}
    kernel = profile.parse_perf_rows(" 4.80% |[k] _raw_spin_unlock_irqrestore\n")
    lines = profile.machine_report(rows, kernel, labels,
                                   ["node1", "node1: other threads (the commit thread)",
                                    "load generator"])
    table = [line for line in lines if line.startswith("| ") and "%" in line]
    assert table == [
        "| node1 | 20.5% | 3.0% | 16.0% | 1.5% |",
        "| node1: other threads (the commit thread) | 3.0% | 2.5% | 0.0% | 0.5% |",
        "| load generator | 9.0% | 0.0% | 9.0% | 0.0% |",
        "| idle | 5.0% | 5.0% | 0.0% | 0.0% |",
        "| other processes (the profiler among them) | 0.2% | 0.2% | 0.0% | 0.0% |",
        "| the kernel's threads (disk writeback, soft interrupts) | 1.0% | 1.0% | 0.0% | "
        "0.0% |",
        "| `_raw_spin_unlock_irqrestore` | 4.8% |",
    ]
