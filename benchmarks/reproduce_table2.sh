#!/usr/bin/env bash
# Every real-data run behind the README's Table 2 results, one after another (never two at once), each step
# resumable: run this script again after an interruption and it continues where it stopped (finished runs are
# reused after their config and data are checked, an interrupted one resumes from its last epoch).
#
#   benchmarks/reproduce_table2.sh DATA_ROOT OUT_ROOT [STEP ...]
#
# DATA_ROOT holds the processed sets (mdsrec prepare scientific|sports ... --out DATA_ROOT/<name>); OUT_ROOT gets
# one benchmark folder per step. Steps (default: sports-main scientific-table2 sports-table2, in this order):
#   sports-main          pop, cooc, featsim, SASRec, MDSRec on Sports, one seed, frozen lr (issue 3's Sports row;
#                        an MDSRec epoch takes ~9 min on 2 CPU cores, ~3 h in all)
#   scientific-table2    every Table 2 model on Scientific, 3 seeds, lr searched in {1e-4, 1e-3, 1e-2} on the first
#                        seed's validation NDCG@20 (the paper's grid also has 1e-1; Adam at 1e-1 is left out to save
#                        a quarter of the runs)
#   sports-table2        every Table 2 model on Sports, one seed, frozen lr 1e-3 (a search on Sports takes days here);
#                        the same folder as sports-main, whose runs it reuses
#   sports-search        not in the default list: SASRec and MDSRec on Sports with lr searched in {1e-4, 1e-3, 1e-2}
#                        (~10 h on 2 CPU cores, for a machine with the time or a GPU); its 1e-3 runs are those of
#                        sports-main, linked into OUT_ROOT/sports_search when they exist
#   sports-seeds         not in the default list: GRU4Rec, GRU4RecF, SASRec, SASRecF on Sports with 3 seeds, frozen
#                        lr 1e-3 (the pairs of the input-fusion claims, cheapest first; ~4.5-11 h on 2 CPU cores,
#                        GRU4Rec up to 48 min a seed); their seed-0 runs are those of sports-table2, linked into
#                        OUT_ROOT/sports_seeds when they exist
#   sports-seeds-all     not in the default list: sports-seeds, then the other six Table 2 models on Sports with 3
#                        seeds into the same folder, cheapest first (a seed on 2 CPU cores: MMMLP ~50 min, BERT4Rec
#                        ~75 min, FDSA ~1.5 h, MDSRec ~2.1 h, MISSRec ~6.5 h, UniSRec ~11 h: ~47 h for seeds 43 and 44
#                        of the six, for a machine with the time or a GPU; less where runs restore from
#                        benchmarks/records, see below); seed-0 runs of sports-table2 are linked as above
# Add --dry-run after the steps to see what each would train without training anything.
# benchmarks/records holds the metrics and epoch logs (no checkpoints) of finished runs, saved with
# `mdsrec records save OUT_ROOT benchmarks/records` and committed, so that runs outlive the machine that trained
# them: they are restored into OUT_ROOT first (only onto the same processed data, never over a run with results),
# and the steps reuse them instead of training them again. The committed records were trained on data whose text was
# encoded in float32 (before `prepare` made float64, portable, the default): they restore only onto data prepared
# with --text-precision float32 on a machine whose kernels give the same bytes; elsewhere their runs are retrained.
set -euo pipefail
data=$(cd "${1:?DATA_ROOT}" && pwd)
mkdir -p "${2:?OUT_ROOT}"
out=$(cd "$2" && pwd)
shift 2
cd "$(dirname "$0")/.."  # the frozen configs are configs/experiments of this checkout
configs=(--configs "$PWD/configs/experiments")
dry=()
steps=()
for a in "$@"; do
    if [[ $a == --dry-run ]]; then dry=(--dry-run); else steps+=("$a"); fi
done
[[ ${#steps[@]} -gt 0 ]] || steps=(sports-main scientific-table2 sports-table2)
records=$PWD/benchmarks/records
if [[ -d $records ]]; then
    if [[ ${#dry[@]} -gt 0 ]]; then
        echo "would restore the runs recorded in $records into $out (a dry run writes nothing)"
    else
        mdsrec records restore "$records" "$out" --data "$data"
    fi
fi
refs=pop,cooc,featsim
# the pairs the paper's claims compare first (GRU4Rec/GRU4RecF, SASRec/SASRecF, then UniSRec and MISSRec), so a
# partial run answers them soonest; the tables list the models in this order
table2=gru4rec,gru4recf,sasrec,sasrecf,unisrec,missrec,fdsa,mmmlp,bert4rec,mdsrec
# the project's own MDSRec configuration, a named variant, joins the tables where its frozen config exists
plus() { [[ -f $PWD/configs/experiments/$1/mdsrec_plus.yaml ]] && echo ",mdsrec_plus" || true; }
# reuse a finished run of another step (SRC) as DST, by a symbolic link; the benchmark checks its config and data
link_run() {
    local src=$1 dst=$2
    if [[ -f $src/metrics.json && ! -e $dst && ! -L $dst ]]; then
        if [[ ${#dry[@]} -gt 0 ]]; then
            echo "would link $src -> $dst (reused after the config check)"
        else
            mkdir -p "$(dirname "$dst")" && ln -s "$src" "$dst"
        fi
    fi
}
for step in "${steps[@]}"; do
    echo "=== $step ($(date -u +%H:%M:%S))"
    case $step in
        sports-main)
            mdsrec benchmark --data "$data/sports" --models "$refs,sasrec,mdsrec" --seeds 1 \
                --out "$out/sports" --set train.progress=false ${dry[@]+"${dry[@]}"} "${configs[@]}" ;;
        scientific-table2)
            mdsrec benchmark --data "$data/scientific" --models "$refs,$table2$(plus scientific)" --seeds 3 \
                --search train.lr=1e-4,1e-3,1e-2 --out "$out/scientific_table2" --set train.progress=false ${dry[@]+"${dry[@]}"} "${configs[@]}" ;;
        sports-table2)
            mdsrec benchmark --data "$data/sports" --models "$refs,$table2$(plus sports)" --seeds 1 \
                --out "$out/sports" --set train.progress=false ${dry[@]+"${dry[@]}"} "${configs[@]}" ;;
        sports-search)
            for m in sasrec mdsrec; do
                link_run "$out/sports/runs/$m/seed0" "$out/sports_search/runs/$m/train.lr=0.001/seed0"
            done
            mdsrec benchmark --data "$data/sports" --models sasrec,mdsrec --seeds 1 \
                --search train.lr=1e-4,1e-3,1e-2 --out "$out/sports_search" --set train.progress=false ${dry[@]+"${dry[@]}"} "${configs[@]}" ;;
        sports-seeds|sports-seeds-all)
            models=gru4rec,gru4recf,sasrec,sasrecf
            [[ $step == sports-seeds ]] || models=$models,mmmlp,bert4rec,fdsa,mdsrec,missrec,unisrec
            for m in ${models//,/ }; do
                link_run "$out/sports/runs/$m/seed0" "$out/sports_seeds/runs/$m/seed0"
            done
            mdsrec benchmark --data "$data/sports" --models "$models" --seeds 3 \
                --out "$out/sports_seeds" --set train.progress=false ${dry[@]+"${dry[@]}"} "${configs[@]}" ;;
        *) echo "unknown step $step (known: sports-main scientific-table2 sports-table2 sports-search sports-seeds" \
                "sports-seeds-all)" >&2
           exit 2 ;;
    esac
done
