"""``fleet.process_pid`` must not call a process gone while it is mid-execve.

``ip netns exec`` execs the program; for an instant /proc/PID/environ
reads empty, and `lab up` failed with "exited while waiting" (seen in the
netns tier).  Here a real child execs a chain of programs while it is asked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edgectl.lab import fleet


def test_a_live_process_is_found_however_often_it_is_asked(tmp_path: Path) -> None:
    state = fleet.LabState("t", tmp_path, {gw: "x" for gw in fleet.GATEWAYS})
    env = dict(os.environ, **{fleet.ENV_MARK: str(tmp_path)})
    for _ in range(10):
        # sh execs env, which execs python: two execve windows while we look.
        child = subprocess.Popen(
            [
                "/bin/sh",
                "-c",
                f"exec /usr/bin/env {sys.executable} -c 'import sys; sys.stdin.read()'",
            ],
            env=env,
            stdin=subprocess.PIPE,
        )
        assert child.stdin is not None
        state.pid_file("p").write_text(f"{child.pid}\n")
        try:
            # From the fork through both execs to the program waiting on its
            # stdin (it lives until we close it): every answer is the pid.
            for _ in range(300):
                assert fleet.process_pid(state, "p") == child.pid
        finally:
            child.stdin.close()
            child.wait(timeout=10)
        assert fleet.process_pid(state, "p") is None  # reaped: gone
