#!/bin/bash
# Two checkouts of wavedge A/B on whole runs, interleaved: `wavedge run MODEL --source SOURCE`
# into each sink, ROUNDS rounds, each run's own "samples: N in S s" time. The checkout under
# test is this one; OLD is another tree of the package (e.g. `git worktree add /tmp/old HEAD~1`,
# with the built _fast*.so copied into its wavedge/runtime/). Prints one line per run:
# round sink old|new seconds.
#   scripts/ab_run.sh OLD MODEL SOURCE [ROUNDS] [SINK...]
set -euo pipefail
OLD=$1 MODEL=$2 SOURCE=$3 ROUNDS=${4:-5}
shift $(( $# < 4 ? $# : 4 ))
SINKS=("${@:-jsonl:/tmp/ab.jsonl csv:/tmp/ab.csv stdout:}")
NEW=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$NEW/.venv/bin/python}
for round in $(seq "$ROUNDS"); do
  for sink in ${SINKS[@]}; do
    for v in old new; do
      tree=$([ $v = old ] && echo "$OLD" || echo "$NEW")
      s=$(PYTHONPATH=$tree $PY -m wavedge.cli run "$MODEL" --source "$SOURCE" --sink "$sink" \
            2>&1 >/dev/null | sed -n 's/.*samples: [0-9]* in \([0-9.]*\) s.*/\1/p')
      echo "$round $sink $v $s"
    done
  done
done
