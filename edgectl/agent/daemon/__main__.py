"""``python -m edgectl.agent.daemon run --config FILE``: the agent without the main CLI.

Same parser as ``edgectl agent``; kept for tests and for hosts that run the
agent alone.
"""

from __future__ import annotations

import argparse
import sys

from edgectl.agent.daemon.cli import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgectl")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["agent", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
