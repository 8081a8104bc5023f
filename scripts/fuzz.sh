#!/usr/bin/env bash
# The dedicated fuzz run of issue 7: `distributeai fuzz --inputs 100000 --json` over every decoder,
# split over two processes (CI has 2 cores). Prints one JSON object (every decoder's report, the
# findings, the wall time) and exits 1 if any decoder had a finding. The inputs behind findings
# are written to .run/fuzz/findings. Environment: FUZZ_INPUTS (default 100000), FUZZ_SEED (0).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ -x .venv/bin/distributeai ] || scripts/setup.sh >&2
INPUTS="${FUZZ_INPUTS:-100000}"
SEED="${FUZZ_SEED:-0}"
OUT=.run/fuzz
rm -rf "$OUT" && mkdir -p "$OUT"
# Two groups of about equal time (measured: gossip, session and tasks_file are the slow ones);
# group B is every decoder not in group A, so a new decoder is never left out.
GROUP_A="gossip session answer session_frame control reveal_request"
GROUP_B="$(.venv/bin/python -c "
from distributeai.tools.fuzz import decoder_names
print(' '.join(n for n in decoder_names() if n not in '$GROUP_A'.split()))")"
run_group() {
    local name="$1"; shift
    local args=()
    for d in "$@"; do args+=(--decoder "$d"); done
    .venv/bin/distributeai fuzz --inputs "$INPUTS" --seed "$SEED" --json --findings-dir "$OUT/findings" \
        "${args[@]}" >"$OUT/$name.json" 2>"$OUT/$name.stderr"
}
started=$(date +%s.%N)
# shellcheck disable=SC2086  # the groups are word lists
run_group a $GROUP_A & pid_a=$!
# shellcheck disable=SC2086
run_group b $GROUP_B & pid_b=$!
rc_a=0; rc_b=0
wait "$pid_a" || rc_a=$?
wait "$pid_b" || rc_b=$?
.venv/bin/python - "$OUT" "$started" "$rc_a" "$rc_b" <<'PY'
import json, pathlib, sys, time
out, started, rcs = pathlib.Path(sys.argv[1]), float(sys.argv[2]), [int(x) for x in sys.argv[3:5]]
reports, failed = [], []
for name, rc in zip("ab", rcs):
    try:
        part = json.loads((out / f"{name}.json").read_text())
    except ValueError:
        failed.append(f"group {name} exited {rc} without a report: {(out / f'{name}.stderr').read_text()[-2000:]}")
        continue
    reports += part["decoders"]
result = {"inputs_per_decoder": reports[0]["inputs"] if reports else 0, "decoders": reports,
          "inputs": sum(r["inputs"] for r in reports), "findings": sum(r["findings"] for r in reports),
          "wall_s": round(time.time() - started, 1), "errors": failed}
print(json.dumps(result))
sys.exit(1 if result["findings"] or failed else 0)
PY
