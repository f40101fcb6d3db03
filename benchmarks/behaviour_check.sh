#!/usr/bin/env bash
# Does this checkout behave as another source tree does? Trains SASRec, GRU4Rec and MDSRec for 2 epochs (hidden 16)
# on the built-in synthetic data with each tree, then compares metrics.json and the epoch log (timings, provenance
# and the data path aside), `recommend --all-users` (top 20) and a session's CSV list, byte for byte.
#
#   git worktree add --detach ../before e20a501
#   benchmarks/behaviour_check.sh ../before/src [WORK_DIR]
set -euo pipefail
before=$(cd "${1:?usage: behaviour_check.sh OTHER_SRC [WORK_DIR]}" && pwd)
after=$(cd "$(dirname "$0")/.." && pwd)/src
work=${2:-$(mktemp -d -t mdsrec-behaviour-XXXXXX)}
mkdir -p "$work"
data=$work/synthetic
# made by the other tree, so that both read it (a newer tree reads an older processed set)
[[ -f $data/manifest.json ]] || PYTHONPATH=$before python -m mdsrec synthetic --out "$data" >/dev/null
status=0
for m in sasrec gru4rec mdsrec; do
    for side in before after; do
        src=$before; [[ $side == after ]] && src=$after
        run=$work/$side-$m
        rm -rf "$run" "$run.jsonl" "$run.csv"
        PYTHONPATH=$src python -m mdsrec train --data "$data" --model $m --out "$run" \
            --set train.epochs=2 train.progress=false model.hidden_size=16 >/dev/null 2>&1
        PYTHONPATH=$src python -m mdsrec recommend --run "$run" --all-users --top 20 --out "$run.jsonl" 2>/dev/null
        PYTHONPATH=$src python -m mdsrec recommend --run "$run" --history item1,item2,item3 --format csv \
            --out "$run.csv" 2>/dev/null
    done
    python - "$work" $m <<'PY' || status=1
import filecmp, json, sys
work, m = sys.argv[1:]
def metrics(side):
    d = json.load(open(f"{work}/{side}-{m}/metrics.json"))
    for k in ("provenance", "seconds_per_epoch", "eval_seconds"):
        d.pop(k, None)
    d["data"].pop("path", None)
    return d
def log(side):
    return [{k: v for k, v in json.loads(line).items() if "seconds" not in k} for line in open(f"{work}/{side}-{m}/log.jsonl")]
same = {
    "metrics.json": metrics("before") == metrics("after"),
    "epoch log": log("before") == log("after"),
    "recommend --all-users": filecmp.cmp(f"{work}/before-{m}.jsonl", f"{work}/after-{m}.jsonl", shallow=False),
    "session csv": filecmp.cmp(f"{work}/before-{m}.csv", f"{work}/after-{m}.csv", shallow=False),
}
print(m, " | ".join(f"{k} equal: {v}" for k, v in same.items()))
sys.exit(0 if all(same.values()) else 1)
PY
done
exit $status
