#!/usr/bin/env bash
# Launch three jobs of different levels and types, then wait for all of them.
# Run it inside a git project; reports go to .codexw/<type>/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

ids=()
ids+=("$(codexw launch --json low workers "Add docstrings to the public functions in utils.py" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')")
ids+=("$(codexw launch --json high research "Compare three SQLite migration tools for this project" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')")
ids+=("$(codexw launch --json --level medium --type custom --timeout 20m -f "$here/first-task.md" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')")

echo "launched jobs: ${ids[*]}"
codexw status --latest 3
codexw wait "${ids[@]}"   # exit 0 only if all three succeeded
