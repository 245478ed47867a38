"""Every golden script of the unit tier is a script the kernel accepts."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

from edgectl.testing.processes import nft

GOLDEN = Path(__file__).parent.parent / "tests" / "golden"


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("full*.nft")))
def test_golden_full_sync_loads_and_replays(name: str) -> None:
    namespace = f"ectl-gold-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        script = (GOLDEN / name).read_text()
        for _ in range(2):  # a full sync must also apply over itself
            nft(namespace, script=script)
        delta = (GOLDEN / "delta.nft").read_text()
        if name == "full.nft":
            nft(namespace, script=delta)
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=True)
