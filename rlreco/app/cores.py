"""The cores a process may use."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """CPUs this process may run on (its affinity where the system has one): the default of
    ``--workers``, and whether a log part can be written beside the kernel."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
