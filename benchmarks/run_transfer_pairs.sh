#!/usr/bin/env bash
# Issue 22's two pairs on a 2-core CPU, in the order that never looks at the test set. Every step resumes where a
# kill left it: run the same line again.
#
#   benchmarks/run_transfer_pairs.sh tuning [RUNS]   # the shared source stage, then both pairs' validation grids
#   benchmarks/run_transfer_pairs.sh test [RUNS]     # both pairs' test-set benchmarks (settings chosen by the grids)
#
# RUNS defaults to runs/. The near pair's grid lives in RUNS/near_tuning (which trains the source stage), the far
# pair's in RUNS/far_tuning (the source stage copied in). Two shards run side by side, one torch thread each.
set -euo pipefail
cd "$(dirname "$0")/.."
phase=${1:?usage: $0 tuning|test [RUNS]}
runs=${2:-runs}
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE

two_shards() {  # config, folder, stage, [options]
    bayesprior experiment "$1" --out "$2" --stage "$3" --shard 0/2 --quiet "${@:4}" &
    bayesprior experiment "$1" --out "$2" --stage "$3" --shard 1/2 --quiet "${@:4}" &
    wait
}

copy_source() {  # from, to
    mkdir -p "$2"
    [ -e "$2/source" ] || cp -r "$1/source" "$2/"
}

case "$phase" in
tuning)
    near=benchmarks/transfer_near_tuning.toml far=benchmarks/transfer_far_tuning.toml
    two_shards $near "$runs/near_tuning" source
    bayesprior experiment $near --out "$runs/near_tuning" --stage source --quiet
    copy_source "$runs/near_tuning" "$runs/far_tuning"
    bayesprior experiment $far --out "$runs/far_tuning" --stage source --quiet
    two_shards $far "$runs/far_tuning" target
    bayesprior experiment $far --out "$runs/far_tuning" --stage report
    two_shards $near "$runs/near_tuning" target
    bayesprior experiment $near --out "$runs/near_tuning" --stage report
    ;;
test)
    for pair in near far; do
        copy_source "$runs/near_tuning" "$runs/$pair"
        bayesprior experiment benchmarks/transfer_$pair.toml --out "$runs/$pair" --stage source --quiet
    done
    for pair in near far; do
        # the grid's networks trained exactly as the benchmark's are scored on the test set, not trained again
        two_shards benchmarks/transfer_$pair.toml "$runs/$pair" target --reuse-runs-from "$runs/${pair}_tuning"
        bayesprior experiment benchmarks/transfer_$pair.toml --out "$runs/$pair" --stage report
    done
    ;;
*)
    echo "usage: $0 tuning|test [RUNS]" >&2
    exit 2
    ;;
esac
