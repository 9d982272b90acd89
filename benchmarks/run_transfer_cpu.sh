#!/usr/bin/env bash
# The transfer benchmark of issue 10 on a 2-core CPU, in the order that never looks at the test set.
# Every step resumes where a kill left it: run the same line again (the source stage alone takes ~5 hours).
#
#   benchmarks/run_transfer_cpu.sh tuning [RUNS]   # source networks + priors, then the tuning grid on validation cases
#   benchmarks/run_transfer_cpu.sh test   [RUNS]   # the benchmark itself, once its target settings are chosen;
#                                                  # when every run is in, its tables go to benchmarks/transfer_cpu_*
#
# RUNS defaults to runs/; the benchmark lives in RUNS/transfer_cpu, the tuning grid in RUNS/transfer_cpu_tuning
# (it shares the source networks, priors and data, copied once). Two shards run side by side, one torch thread
# each: two-thread processes on a shared 2-core machine spend their time waiting at OpenMP barriers.
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

case "$phase" in
tuning)
    two_shards benchmarks/transfer_cpu.toml "$runs/transfer_cpu" source
    # both shards may stop before the priors are fitted (the other's network was not done): once more, alone
    bayesprior experiment benchmarks/transfer_cpu.toml --out "$runs/transfer_cpu" --stage source --quiet
    mkdir -p "$runs/transfer_cpu_tuning"
    for part in data cache source; do
        [ -e "$runs/transfer_cpu_tuning/$part" ] || cp -r "$runs/transfer_cpu/$part" "$runs/transfer_cpu_tuning/"
    done
    two_shards benchmarks/transfer_cpu_tuning.toml "$runs/transfer_cpu_tuning" target
    bayesprior experiment benchmarks/transfer_cpu_tuning.toml --out "$runs/transfer_cpu_tuning" --stage report
    # the rule fixed before any result (header of transfer_cpu_tuning.toml) applied to the validation table
    python benchmarks/choose_target_settings.py benchmarks/transfer_cpu_tuning.toml "$runs/transfer_cpu_tuning"
    echo "Set the chosen settings in benchmarks/transfer_cpu.toml, then: $0 test"
    ;;
test)
    # splits 0-2 are the tuning grid's: its RI, PR and chosen-DWP networks were trained exactly as these runs
    # are, so they are copied in and scored on the test set rather than trained again
    two_shards benchmarks/transfer_cpu.toml "$runs/transfer_cpu" target --reuse-runs-from "$runs/transfer_cpu_tuning"
    bayesprior experiment benchmarks/transfer_cpu.toml --out "$runs/transfer_cpu" --stage report
    python benchmarks/transfer_diagnostics.py "$runs/transfer_cpu" > "$runs/transfer_cpu/diagnostics.md"
    # into the repository only when every run is in (a shard that failed leaves its runs unfinished)
    if grep -q " 0 run(s) not finished yet" "$runs/transfer_cpu/table.md"; then
        cp "$runs/transfer_cpu/table.md" benchmarks/transfer_cpu_table.md
        cp "$runs/transfer_cpu/table.csv" benchmarks/transfer_cpu_table.csv
        cp "$runs/transfer_cpu/comparisons.csv" benchmarks/transfer_cpu_comparisons.csv
        cp "$runs/transfer_cpu/diagnostics.md" benchmarks/transfer_cpu_diagnostics.md
        echo "tables copied to benchmarks/transfer_cpu_*; the training diagnostics in benchmarks/transfer_cpu_diagnostics.md"
    else
        echo "not every run is finished (see $runs/transfer_cpu/table.md): run the same line again" >&2
        exit 1
    fi
    ;;
*)
    echo "usage: $0 tuning|test [RUNS]" >&2
    exit 2
    ;;
esac
