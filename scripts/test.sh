#!/usr/bin/env bash
# Lint, type-check and run the whole test suite (slow tests included: they start the local
# Gemma 3 270M target and a redis-server on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
ruff check .
ruff format --check .
mypy
python -m pytest "$@"
