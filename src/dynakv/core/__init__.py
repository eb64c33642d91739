"""dynakv's pure core: deterministic logic with no I/O, no clocks and no global random.

Drivers (net/ in production, sim/ in tests) feed it events and carry out its effects.
"""
