"""Processes the tests and benchmarks start: a free port, a server started and
waited for until its ``/healthz`` answers, stopped (SIGTERM, then SIGKILL)
whatever happened."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from edgectl.testing.rest import Rest
from edgectl.testing.wait import wait_until

# The installed command line, as operators run it (the venv's entry point).
EDGECTL = str(Path(sys.executable).with_name("edgectl"))


def free_port(host: str = "127.0.0.1", kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port nothing listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop(
    proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, grace: float = 15.0
) -> int | None:
    """Signal ``proc`` and wait ``grace`` s for it, then SIGKILL; its exit status."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextmanager
def serving(
    argv: list[str],
    base_url: str,
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` (output appended to ``log``) until ``base_url/healthz`` answers;
    yield the process; stop it on exit.  Exiting early or not answering in time
    raises with the log's tail."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            env=None if env is None else {**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        rest = Rest(base_url)

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited ({proc.returncode}):\n{tail(log)}")
            return rest.healthy()

        if not wait_until(up, timeout, 0.05):
            raise RuntimeError(f"{base_url}/healthz not answering in {timeout:g} s:\n{tail(log)}")
        yield proc
    finally:
        stop(proc)


def nft(
    ns: str, *args: str, script: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``nft ARGS`` inside namespace ``ns`` only, never the host's ruleset; ``script``
    is fed to ``nft -f -``.  With ``check``, a failure is an AssertionError with
    nft's message."""
    argv = ["ip", "netns", "exec", ns, "nft", *(("-f", "-") if script is not None else args)]
    proc = subprocess.run(
        argv, input=script, capture_output=True, text=True, timeout=30, check=False
    )
    if check:
        assert proc.returncode == 0, f"nft {' '.join(argv[4:])} in {ns}: {proc.stderr}"
    return proc
