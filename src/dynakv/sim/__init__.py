"""Deterministic simulator: the production core under virtual time, faults and checkers.

N real core Nodes run in one process, driven as net/runtime.py drives them
(persist, then send), over a simulated network (delay, loss, duplication,
reordering, partitions) and simulated disks (fsync latency, crashes that lose
what was not synced, wipes), under client workloads; checkers then judge what
the clients were told against what the replicas hold. One seed reproduces a run
exactly (the trace hash). See docs/simulator.md.

    python -m dynakv.sim --seed 7 --faults chaos
    python -m dynakv.sim --sweep 200
    python -m dynakv.sim --scenario minority-partition --seed 1
"""

from dynakv.sim.runner import SimOptions, SimResult, Simulation, run, sweep

__all__ = ["SimOptions", "SimResult", "Simulation", "run", "sweep"]
