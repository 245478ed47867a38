#!/usr/bin/env bash
# The whole test suite: lint, types, unit tier, then the netns tier (root).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check edgectl tests netns-tests bench ansible/library
.venv/bin/ruff format --check edgectl tests netns-tests bench ansible/library
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
.venv/bin/pytest tests -q "$@"
if [[ $(id -u) -ne 0 && -z "${CI:-}" ]]; then
    echo "test: not root, netns tier not run (sudo $0 runs it)" >&2
    exit 0
fi
.venv/bin/pytest netns-tests -q "$@"
