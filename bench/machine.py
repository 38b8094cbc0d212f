"""What every benchmark prints first: the machine it ran on, and how busy it was."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe(*, load: bool = True) -> str:
    """`OS; CPU model; N cores; Python X.Y.Z[; load a b c (1, 5, 15 min)]`."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{platform.platform()}; {cpu}; {os.cpu_count()} cores"
    text += f"; Python {platform.python_version()}"
    if load:
        text += "; load {:.2f} {:.2f} {:.2f} (1, 5, 15 min)".format(*os.getloadavg())
    return text
