"""``python -m edgectl.portal run --config FILE``: the portal without the main CLI."""

from __future__ import annotations

import argparse
import sys

from edgectl.portal import cli


def main() -> int:
    parser = argparse.ArgumentParser(prog="edgectl")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["portal", *sys.argv[1:]])
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
