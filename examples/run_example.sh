#!/usr/bin/env bash
# Runs `davel detect` on the bundled example video, fully offline.
#
# Real weights cannot be assumed here, so this writes deterministic STAND-IN
# weights (random, in the original file layouts) into $DAVEL_HOME/standin and
# uses them: the pipeline runs end to end, but the events it prints mean
# nothing. With real weights: `davel weights download` and drop --weights-dir.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
weights="$(python -c 'from weights.store import cache_dir; print(cache_dir() / "standin")')"
if [ ! -f "$weights/davel-weights.json" ] || [ ! -f "$weights/ccnet_unav100.pth" ]; then
  davel weights standin --weights-dir "$weights" --no-one-peace
fi
davel detect "$here/example.mp4" --weights-dir "$weights"  \
  --top-k 5 -o "${1:-example_events.json}"
cat "${1:-example_events.json}"
