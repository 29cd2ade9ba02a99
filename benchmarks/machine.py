"""What every benchmark prints first (the machine and the library versions it ran with), and
the CPU time the benchmarks measure with."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import sqlite3


def cpu_seconds(*, with_children: bool = False) -> float:
    """This process's CPU time so far (user + system), with its waited-for children's if
    `with_children`."""
    whos = [resource.RUSAGE_SELF] + ([resource.RUSAGE_CHILDREN] if with_children else [])
    return sum(usage.ru_utime + usage.ru_stime for usage in map(resource.getrusage, whos))


def describe_machine(packages: list[str]) -> str:
    """One block of text: CPU, cores, memory, Python, SQLite and package versions."""
    versions = []
    for name in packages:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return "\n".join([
        f"machine: {_cpu_model()}, {os.cpu_count()} cores, {_memory_gib():.0f} GiB, "
        f"{platform.system()} {platform.release()}",
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}",
        "versions: " + ", ".join(versions),
    ])


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return 0.0
