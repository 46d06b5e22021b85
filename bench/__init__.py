"""Benchmarks: `python -m bench` (see bench/README.md)."""

import os

# The bare baselines run in this process. Give them the OpenMP wait policy the served model gets
# (firstlight.triton.server sets it for Triton): with the default, threads spin-wait on a shared
# 2-core host and the "bare" figure measures other people's load more than the model. It must
# be set before torch loads libgomp, hence here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
