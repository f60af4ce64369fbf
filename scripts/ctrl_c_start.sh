#!/bin/bash
# Ctrl-C while a search's local Ray starts: N tries, each a small search in its own folder under OUT, sent
# SIGINT (to its process group, as a terminal does) after a random delay in [LOW, HIGH] seconds; prints each
# try's delay, seconds to exit, exit status and last stderr line, then the count of exit statuses.
# Usage: scripts/ctrl_c_start.sh [N=12] [LOW=2.5] [HIGH=8.0] [OUT=/tmp/ctrl-c-start]
set -u
N=${1:-12}; LOW=${2:-2.5}; HIGH=${3:-8.0}; OUT=${4:-/tmp/ctrl-c-start}
PS=${POLICYSEARCH:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/policysearch}
mkdir -p "$OUT" && cd "$OUT" || exit 1
for i in $(seq 1 "$N"); do
  rm -rf "run$i"
  setsid "$PS" search --train-size 200 --splits 2 --trials 4 --epochs 1 --out "run$i" > "o$i.log" 2> "e$i.log" &
  pid=$!
  delay=$(python3 -c "import random; print(round(random.uniform($LOW, $HIGH), 2))")
  sleep "$delay"
  start=$(date +%s.%N)
  kill -INT -- -"$pid"
  wait "$pid"; rc=$?
  took=$(python3 -c "print(round($(date +%s.%N) - $start, 1))")
  echo "try $i: delay $delay s, exit $rc after $took s: $(tail -n 1 "e$i.log" | cut -c1-120)"
  sleep 1
done | tee results.txt
echo "exit statuses: $(grep -o 'exit [0-9]*' results.txt | sort | uniq -c | tr -s ' ' | paste -sd ',')"
