#!/usr/bin/env bash
# The main job: install, start the local target, wrap an OpenAI client, screen a task,
# send compressed requests and print a savings table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
exec promptsieve demo "$@"
