"""`dynakv bench`: a YCSB-style load generator for dynakv and the stores it is compared with.

workload.py holds the pure parts (operation mixes, key choosers), histogram.py the
HdrHistogram latency record, drivers.py one small adapter per protocol (dynakv over
HTTP or Protocol Buffers, Redis, etcd), runner.py the asyncio clients, the phases and
the load-generator processes, command.py the command line and the report.
"""
