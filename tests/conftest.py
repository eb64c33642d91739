"""Shared test configuration.

Hypothesis runs deterministically by default (derandomize, no example database), so a
test run is reproducible and a failure reproduces on every machine. Set
HYPOTHESIS_PROFILE=random for a randomized search (new examples on every run) when
hunting bugs locally.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("dynakv", derandomize=True, deadline=None, database=None)
settings.register_profile("random", deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dynakv"))
