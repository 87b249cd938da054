#!/usr/bin/env bash
# Graft under the anchors' load generator (../shared/anchors/loadgen.py suite), so that
# its numbers sit beside etcd's and PySyncObj's (same tool, same box, same flags).
#
# Starts three `graft start` nodes with examples/fsm-scripts/kv.py (stream mode, election
# 350 ms, heartbeat 35 ms) through bench/_cluster.py, runs `loadgen.py suite --client line`,
# writes bench/results/graft-<fsm>.json, stops only the PIDs it started (also on Ctrl-C),
# and prints the anchors' report.py table with Graft's rows added.
#
# Usage: bench/anchors.sh [extra loadgen.py args, e.g. --conc-list 32,256 --reps 3]
# Env:   ANCHORS (default ../shared/anchors beside the project, read only), FSM (kv.py; kv.sh for exec mode),
#        OUT (default bench/results).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
PY=$ROOT/.venv/bin/python
ANCHORS=${ANCHORS:-$(dirname "$ROOT")/shared/anchors}
FSM=${FSM:-kv.py}
OUT=${OUT:-$HERE/results}
WORK=$(mktemp -d /tmp/graft-anchors-XXXXXX)
PIDFILE=$WORK/graft.pids
mkdir -p "$OUT"

stop_cluster() {
  "$PY" "$HERE/_cluster.py" down --pidfile "$PIDFILE" || true
  rm -rf "$WORK"
}
trap stop_cluster EXIT
trap 'exit 130' INT TERM

case "$FSM" in
kv.py) MODE=stream ;;
kv.sh) MODE=exec ;;
*) echo "FSM must be kv.py or kv.sh" >&2; exit 2 ;;
esac

EPS=$("$PY" "$HERE/_cluster.py" up --fsm "$FSM" --dir "$WORK/cluster" --pidfile "$PIDFILE")
VERSION=$("$PY" -c 'import graft; print(graft.__version__)')
echo "graft $VERSION pids: $(tr '\n' ' ' <"$PIDFILE") endpoints $EPS ($FSM, $MODE mode)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# loadgen.py is stdlib-only; it runs under our interpreter, from its own read-only folder.
"$PY" "$ANCHORS/loadgen.py" leader --client line --endpoints "$EPS" \
  --role-cmd STATUS --leader-match '"role": ?"leader"' >/dev/null
"$PY" "$ANCHORS/loadgen.py" suite --client line --endpoints "$EPS" --pidfile "$PIDFILE" \
  --logdir "$WORK" --set-fmt 'APPLY SET {k} {v}' --ok-prefix OK \
  --role-cmd STATUS --leader-match '"role": ?"leader"' \
  --system "Graft $VERSION" \
  --config "election=350ms heartbeat=35ms, $FSM ($MODE mode), fsync per batch" \
  --out "$OUT/graft-${FSM%%.*}-$MODE.json" "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

# report.py reads the results/ folder next to itself (abspath, not realpath): a folder of
# symlinks to the anchors' report.py and JSON files, plus ours, puts Graft in its table.
VIEW=$OUT/report-view
rm -rf "$VIEW"
mkdir -p "$VIEW/results"
ln -s "$ANCHORS/report.py" "$VIEW/report.py"
ln -s "$ANCHORS"/results/*.json "$VIEW/results/"
for f in "$OUT"/graft-*.json "$OUT"/etcd-*.json "$OUT"/pysyncobj-*.json; do
  if [ -e "$f" ]; then ln -sf "$f" "$VIEW/results/"; fi   # a fresh anchor run wins
done
"$PY" "$VIEW/report.py" | tee "$OUT/table.md"
