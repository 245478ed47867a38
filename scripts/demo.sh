#!/usr/bin/env bash
# README's first command: set up if needed, then run the lab demo (root).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/edgectl demo "$@"
