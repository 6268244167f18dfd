"""Faults the integrity tests cause in a running job: processes killed mid-run, and waiting for the commits that
say how far it got."""

from __future__ import annotations

import time
from pathlib import Path


def kill_processes(title: str) -> int:
    """SIGKILL every process whose command line names `title` (Ray titles actor processes by their class)."""
    import psutil

    found = [p for p in psutil.process_iter(["cmdline"]) if title in " ".join(p.info["cmdline"] or [])]
    for process in found:
        process.kill()
    return len(found)


def wait_for_commits(output: Path, count: int, timeout: float = 120) -> None:
    """Until `output` holds `count` commit records (or `timeout` seconds have passed)."""
    commits = output / "_commits"
    deadline = time.time() + timeout
    while time.time() < deadline and (not commits.exists() or len(list(commits.iterdir())) < count):
        time.sleep(0.05)
