"""Facts about the machine a run happened on, printed next to every table."""

from __future__ import annotations

import os
import platform
import re
import subprocess

import pika

from bench.harness import RABBITMQ_URL


def _rabbitmq_version() -> str:
    try:
        out = subprocess.run(
            ["rabbitmqctl", "version"], capture_output=True, text=True, timeout=20
        ).stdout.strip()
        if re.fullmatch(r"[\d.]+", out):
            return out
    except (OSError, subprocess.TimeoutExpired):
        pass
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        version = connection._impl.server_properties.get("version", b"?")  # noqa: SLF001
        return version.decode() if isinstance(version, bytes) else str(version)
    finally:
        connection.close()


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memory_gb() -> float:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    return out.split("[")[0].strip() or "wrk"


def facts() -> dict[str, str]:
    import sqlite3

    return {
        "cores (nproc)": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "memory": f"{_memory_gb():.1f} GB",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "rabbitmq": _rabbitmq_version(),
        "pika": pika.__version__,
        "load generator": f"{_wrk_version()} (ingest, batch); aiohttp (steady-rate latency)",
        "os": f"{platform.system()} {platform.release()}",
    }
