#!/usr/bin/env bash
# Issue 22's test-set benchmarks on one GPU: many shards at once, each a process of its own on the one device.
#
#   benchmarks/run_transfer_pairs_gpu.sh SOURCE OUT [SHARDS] [CONFIG ...]
#
# SOURCE is a finished source stage (RUNS/near_tuning/source: its models, swag.pt, bank and fitted prior), made on
# any machine; the synthetic data are made again here (deterministic). CONFIG defaults to the two pairs'
# benchmarks/transfer_near.toml and benchmarks/transfer_far.toml. Each is run as written, with device = "$DEVICE"
# (default cuda) added to [target_training]: the device is not part of a result's key. Results land in
# OUT/<config name>/results/, tables in OUT/<config name>/table.md; a killed run resumes by running the same line.
set -euo pipefail
cd "$(dirname "$0")/.."
source_stage=${1:?usage: $0 SOURCE OUT [SHARDS] [CONFIG ...]}
out=${2:?usage: $0 SOURCE OUT [SHARDS] [CONFIG ...]}
shards=${3:-8}
shift $(( $# < 3 ? $# : 3 ))
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(benchmarks/transfer_near.toml benchmarks/transfer_far.toml)
device=${DEVICE:-cuda}
export OMP_NUM_THREADS=1
mkdir -p "$out"
for config in "${configs[@]}"; do
    name=$(basename "$config" .toml)
    awk -v device="$device" '{print} /^\[target_training\]$/ {print "device = \"" device "\""}' "$config" \
        > "$out/$name.toml"
    mkdir -p "$out/$name"
    [ -e "$out/$name/source" ] || cp -r "$source_stage" "$out/$name/source"
    bayesprior experiment "$out/$name.toml" --out "$out/$name" --stage source --quiet
done
for config in "${configs[@]}"; do
    name=$(basename "$config" .toml)
    for i in $(seq 0 $((shards - 1))); do
        bayesprior experiment "$out/$name.toml" --out "$out/$name" --stage target --shard "$i/$shards" --quiet \
            > "$out/$name/shard$i.log" 2>&1 &
    done
    wait
    bayesprior experiment "$out/$name.toml" --out "$out/$name" --stage report > "$out/$name/report.txt"
done
