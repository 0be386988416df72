#!/usr/bin/env bash
# The prepared GPU check (docs/gpu.md): install samr1 on a bare CUDA machine, record the environment, run
# every GPU path and the headline benches, each stage with its own time budget, and pack the results into
# at most 4 files under OUT_DIR (summary.json, gpu_check.log, records.tar.gz, plots.tar.gz).
#
#   bash bench/gpu_check.sh OUT_DIR [--wheels DIR] [--dry-run] [--total-s S] [--only STAGE,...] [--budgets STAGE=S,...] [--stage-s S]
#
# --wheels DIR  wheels carried with the tree (make gpu-wheels); each one whose distribution the machine
#               lacks is installed (pip --no-index --no-deps), the others are left alone.
# --dry-run     the same stages on the CPU with smoke sizes and no install step (the test suite runs it).
# PYTHON        the interpreter (default python3: on the GPU image, the one that holds torch).
# SAMR1_COMMIT  the commit to record when the tree travelled without its .git folder.
#
# Exit status: 0 when no stage failed or ran out of time, 1 otherwise, 2 on bad arguments.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
if [ $# -lt 1 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    [ $# -lt 1 ] && exit 2 || exit 0
fi
case "$1" in
    -*) echo "gpu_check.sh: the first argument is OUT_DIR, got $1" >&2; exit 2 ;;
esac
command -v "$PY" >/dev/null 2>&1 || { echo "gpu_check.sh: no Python interpreter '$PY' (set PYTHON)" >&2; exit 2; }
out="$1"
export PYTHONUNBUFFERED=1
"$PY" "$here/gpu_check.py" "$@"
rc=$?
# the driver writes summary.json even when stages fail; if it died before that, leave a summary that says so
if [ "$rc" -ne 2 ] && [ ! -f "$out/summary.json" ]; then
    mkdir -p "$out"
    printf '{"schema": 1, "ok": false, "error": "gpu_check.py exited %s before writing its summary", "stages": []}\n' \
        "$rc" > "$out/summary.json"
    [ "$rc" -eq 0 ] && rc=1
fi
exit "$rc"
