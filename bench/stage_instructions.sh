#!/usr/bin/env bash
# Instructions per event of the ingest and the state stage (callgrind: repeatable on a busy box).
#   bench/stage_instructions.sh [EVENTS]      (default 20000; needs valgrind; takes about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-20000}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for stop in none ingest prep both; do
  valgrind --tool=callgrind --callgrind-out-file="$out/$stop" \
    .venv/bin/python bench/stages.py --events "$events" --stop "$stop" >/dev/null 2>"$out/$stop.err" &
done
wait
ir() { awk '/^(summary|totals):/ {print $2; exit}' "$out/$1"; }
python3 - "$events" "$(ir none)" "$(ir ingest)" "$(ir prep)" "$(ir both)" <<'PY'
import sys
n, none, ingest, prep, both = (int(x) for x in sys.argv[1:])
i, s = (ingest - none) / n, (both - prep) / n
print(f"ingest {i:,.0f} instructions/event   state {s:,.0f} instructions/event   total {i + s:,.0f}")
PY
