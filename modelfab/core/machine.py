"""Describe the machine a benchmark or latency profile ran on."""

from __future__ import annotations

import os
import platform
from functools import cache
from importlib import metadata
from typing import Any


@cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> dict[str, Any]:
    """CPU model, cores, memory, GPU (if any) and key package versions."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError):
        pass
    for pkg in ("torch", "sqlalchemy", "numpy"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def device_label() -> str:
    """One line naming the device, e.g. ``Intel Xeon ... x2`` (used as a latency-profile key)."""
    info = describe_machine()
    return info.get("gpu") or f"{info['cpu']} x{info['cores']}"
