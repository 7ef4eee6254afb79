"""What the machine has for a command: its memory (physical, or the container's limit if lower)."""

from __future__ import annotations

import os
from pathlib import Path


def machine_memory_bytes() -> int:
    """Physical memory, or the container's limit (cgroup v2 ``memory.max``) if it is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        limit = "max"
    return min(total, int(limit)) if limit.isdigit() else total
