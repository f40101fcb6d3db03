#!/usr/bin/env bash
# The real-data studies whose records the results pages lack, trained exactly as their tables are made, one run at
# a time, each step resumable (run the script again after an interruption: finished runs are reused after their
# config and data are checked, an interrupted one resumes from its last epoch), each finished step's records saved
# under benchmarks/records (commit them).
#
#   benchmarks/rerun_records.sh DATA_ROOT OUT_ROOT [STEP ...]
#
# DATA_ROOT holds the processed sets (mdsrec prepare scientific|sports ... --out DATA_ROOT/<name>). Steps, in the
# default order (about 10 CPU hours for the Scientific steps on 2 cores, a day more for sports-seed42):
#   scientific-table2     every Table 2 model on Scientific, 3 seeds, lr searched (reproduce_table2.sh's step)
#   scientific-ablations  Table 3 on Scientific (benchmarks/ablations.py, lr 1e-3, the full model reused from
#                         scientific-table2's lr 1e-3 seed-0 run)
#   scientific-sweep-h    Figure 3 on Scientific: MDSRec with H in {0, 5, 20} (mdsrec sweep)
#   scientific-sweep-k    Figure 4 on Scientific: MDSRec with k in {4, 16, 64}
#   sports-seed42         seed 0 (42) of the Sports seed table's models that lack it (one seed each, frozen lr 1e-3)
#                         on DATA_ROOT/sports. Their other seeds were trained on Sports with its text encoded in
#                         float32 (fingerprint 4046af5ccc86), which another machine's kernels do not reproduce byte
#                         for byte, so the table mixes two fingerprints and says so
# Each step holds OUT_ROOT/.cpu.lock while it trains, as the MDSRec screens do, so that two trainings never share the
# cores; a step waits for the lock.
set -euo pipefail
data=$(cd "${1:?DATA_ROOT}" && pwd)
mkdir -p "${2:?OUT_ROOT}"
out=$(cd "$2" && pwd)
shift 2
repo=$(cd "$(dirname "$0")/.." && pwd)
steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(scientific-table2 scientific-ablations scientific-sweep-h scientific-sweep-k sports-seed42)
configs=$repo/configs/experiments
save() { python -m mdsrec records save "$out" "$repo/benchmarks/records"; }

exec 9>"$out/.cpu.lock"
for step in "${steps[@]}"; do
    flock 9
    echo "=== $step ($(date -u +%FT%TZ))"
    case $step in
        scientific-table2)
            "$repo/benchmarks/reproduce_table2.sh" "$data" "$out" scientific-table2 ;;
        scientific-ablations)
            full=$out/scientific_table2/runs/mdsrec/train.lr=0.001/seed0
            reuse=()
            [[ -f $full/metrics.json ]] && reuse=(--full-run "$full")
            python "$repo/benchmarks/ablations.py" --data "$data/scientific" --dataset scientific --lr 1e-3 \
                --runs "$out" --out "$out/scientific_ablations.md" "${reuse[@]}" ;;
        scientific-sweep-h|scientific-sweep-k)
            if [[ $step == scientific-sweep-h ]]; then param=model.h values=0,5,20; else param=model.k values=4,16,64; fi
            python -m mdsrec sweep --data "$data/scientific" --config "$configs/scientific/mdsrec.yaml" \
                --param "$param" --values "$values" --out "$out/scientific_sweep_${param#model.}" ;;
        sports-seed42)
            python -m mdsrec benchmark --data "$data/sports" --dataset sports \
                --models gru4recf,mmmlp,bert4rec,fdsa,mdsrec,missrec --seeds 1 --out "$out/sports_seeds" \
                --configs "$configs" --set train.progress=false ;;
        *) echo "unknown step $step (known: scientific-table2 scientific-ablations scientific-sweep-h" \
                "scientific-sweep-k sports-seed42)" >&2
           exit 2 ;;
    esac
    save
    flock -u 9
done
