"""Shared by the agent benchmarks: agent processes, bench namespaces, kernel probes.

Namespaces are ``ectl-bench-<hex>-*`` (bench/_common.py) or lab topologies,
always deleted in ``finally``; nothing touches the root namespace's ruleset.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from edgectl.agent import kernel_readback as kr
from edgectl.agent.netlink.constants import NFPROTO_INET
from edgectl.agent.netlink.nfsocket import NetlinkError, NfNetlink
from edgectl.agent.netns import inside
from edgectl.testing.fleet import AgentFiles
from edgectl.testing.processes import stop

# The command the systemd unit runs (the console script, through edgectl.cli),
# so start-up figures include what a gateway really pays before its first step.
AGENT = [str(Path(sys.executable).with_name("edgectl")), "agent", "run"]


def write_agent(
    workdir: Path,
    name: str,
    token: str,
    netns: str,
    controller_url: str | Sequence[str],
    *,
    metrics_port: int | None = None,
    poll_wait: float = 30.0,
) -> Path:
    """Config, token file and state dir of one agent under ``workdir/name``; returns the config.

    ``controller_url``: one URL, or several (the agent fails over in that order)."""
    metrics = "" if metrics_port is None else f"127.0.0.1:{metrics_port}"
    timings = {"poll_wait": poll_wait, "backoff_min": 0.2, "backoff_max": 2}
    return AgentFiles(workdir / name).write(
        token=token,
        controller_url=controller_url,
        gateway=name,
        netns=netns,
        metrics_listen=metrics,
        settings=timings,
    )


@contextmanager
def agents(configs: list[Path], logdir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start one agent process per config; SIGTERM (then SIGKILL) them all on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for config in configs:
            with (logdir / f"{config.parent.name}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [*AGENT, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
                    )
                )
        yield procs
    finally:
        for proc in procs:  # all told at once: they stop in parallel
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            stop(proc)


class Probe:
    """Key-by-key element lookups in one namespace's ``table inet edgectl`` (no listing)."""

    def __init__(self, netns: str) -> None:
        with inside(netns):
            self.sock = NfNetlink()

    def close(self) -> None:
        self.sock.close()

    def has_table(self) -> bool:
        return kr.table_exists(self.sock, NFPROTO_INET, "edgectl")

    def has(self, set_name: str, key: bytes) -> bool:
        try:
            missing = kr.missing_elements(self.sock, NFPROTO_INET, "edgectl", set_name, [key])
        except NetlinkError:
            return False  # no table/set yet
        return not missing


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (clock ticks -> seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")
