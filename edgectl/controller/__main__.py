"""``python -m edgectl.controller``: the controller's commands on their own.

The same subcommands ``edgectl`` offers (``controller``, ``token``), for a
controller host without the agent's dependencies, and for tests and
benchmarks that start a real controller process.
"""

from __future__ import annotations

import argparse
import sys

from edgectl.controller.cli import register


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m edgectl.controller")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args()
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
