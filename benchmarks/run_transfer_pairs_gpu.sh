#!/usr/bin/env bash
# Issue 22's test-set benchmarks on one GPU: many shards at once, each a process of its own on the one device.
#
#   benchmarks/run_transfer_pairs_gpu.sh SOURCE OUT [SHARDS]
#
# SOURCE is a finished source stage (RUNS/near_tuning/source: its models, swag.pt, bank and fitted prior), made on
# any machine; the synthetic data are made again here (deterministic). Each pair's config is run as written, with
# device = "cuda" added to [target_training] (the device is not part of a result's key). Results land in
# OUT/<pair>/results/, tables in OUT/<pair>/table.md; a killed run resumes by running the same line again.
set -euo pipefail
cd "$(dirname "$0")/.."
source_stage=${1:?usage: $0 SOURCE OUT [SHARDS]}
out=${2:?usage: $0 SOURCE OUT [SHARDS]}
shards=${3:-8}
export OMP_NUM_THREADS=1
mkdir -p "$out"
for pair in near far; do
    config="$out/transfer_${pair}_gpu.toml"
    awk '{print} /^\[target_training\]$/ {print "device = \"cuda\""}' "benchmarks/transfer_$pair.toml" > "$config"
    mkdir -p "$out/$pair"
    [ -e "$out/$pair/source" ] || cp -r "$source_stage" "$out/$pair/source"
    bayesprior experiment "$config" --out "$out/$pair" --stage source --quiet
done
for pair in near far; do
    config="$out/transfer_${pair}_gpu.toml"
    for i in $(seq 0 $((shards - 1))); do
        bayesprior experiment "$config" --out "$out/$pair" --stage target --shard "$i/$shards" --quiet \
            > "$out/$pair/shard$i.log" 2>&1 &
    done
    wait
    bayesprior experiment "$config" --out "$out/$pair" --stage report
done
