#!/usr/bin/env bash
# README's first command: on a fresh Debian 12 machine, as root, install what
# is missing (./scripts/setup.sh), then bring up the lab: a controller and two
# gateway agents in network namespaces, and print what to try.
# `.venv/bin/edgectl lab down` removes it all again.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/edgectl lab up "$@"
