#!/usr/bin/env bash
# An experiment's target runs on a 2-core CPU, whole splits in turn: every run is its own shard k/N (N = splits x
# methods x train sizes; `experiment` orders runs by split, size, method), and two processes of one torch thread take
# alternate splits, so that the paired runs of a split finish together and a session that ends early leaves complete
# pairs. (Round-robin shards 0/2 and 1/2 would give one process every PR run when a config has two methods.)
# Every run resumes where a kill left it: run the same line again.
#
#   benchmarks/run_splits_in_turn.sh CONFIG OUT [REUSE_FROM ...]
#
# OUT must hold the finished source stage (copy one in); each REUSE_FROM is passed as --reuse-runs-from (the first
# folder that has a run gives it).
set -uo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: $0 CONFIG OUT [REUSE_FROM ...]} out=${2:?usage: $0 CONFIG OUT [REUSE_FROM ...]}
reuse=()
for folder in "${@:3}"; do reuse+=(--reuse-runs-from "$folder"); done
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
read -r splits per_split < <(python - "$config" <<'PY'
import sys
from bayesprior.experiment.config import load_config
c = load_config(sys.argv[1])
print(c.splits, len(c.train_sizes) * len(c.methods))
PY
) || exit 1
bayesprior experiment "$config" --out "$out" --stage source --quiet || exit 1
worker() {  # first split; splits first, first + 2, ...
    for ((s = $1; s < splits; s += 2)); do
        for ((m = 0; m < per_split; m++)); do
            bayesprior experiment "$config" --out "$out" --stage target --quiet "${reuse[@]}" \
                --shard $((s * per_split + m))/$((splits * per_split)) >> "$out/worker$1.log" 2>&1
        done
    done
}
worker 0 & worker 1 &
wait
bayesprior experiment "$config" --out "$out" --stage report
