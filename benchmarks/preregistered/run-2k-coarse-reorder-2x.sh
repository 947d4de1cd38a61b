#!/usr/bin/env bash
# Runs chunks of the pre-registered study 2k-coarse-reorder-2x (2k-coarse-reorder-2x.md), each
# exactly as registered, and writes the chunk's provenance.txt next to its results:
#   bash benchmarks/preregistered/run-2k-coarse-reorder-2x.sh 200 250 ...   # items S+1..S+50
# A chunk that stops resumes from the call cache when run again. Needs the verified
# bigbench==1.0.0 sdist (a run on $PROMPTSIEVE_BIGBENCH_DIR is refused: its figures would not
# be the registered items). About 36 min a chunk on 2 cores. Commit each folder as it comes.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv/bin/python ] && . .venv/bin/activate
if [ -n "${PROMPTSIEVE_BIGBENCH_DIR:-}${PROMPTSIEVE_BIGBENCH_SPLIT:-}" ]; then
  echo "run-2k-coarse-reorder-2x.sh: unset PROMPTSIEVE_BIGBENCH_DIR/_SPLIT: the study reads" \
    "the verified bigbench==1.0.0 sdist only" >&2
  exit 2
fi
[ $# -gt 0 ] || { echo "usage: $0 S [S ...]  (S = 200, 250, ..., 550)" >&2; exit 2; }
for S in "$@"; do  # every argument before the first chunk runs
  case "$S" in 200|250|300|350|400|450|500|550) ;;
    *) echo "run-2k-coarse-reorder-2x.sh: $S is not a registered chunk start (200, 250, ..., 550)" >&2; exit 2 ;;
  esac
done
if ! python -m promptsieve_bench.bigbench.fetch >/dev/null 2>&1; then
  echo "run-2k-coarse-reorder-2x.sh: needs the verified bigbench==1.0.0 sdist in" \
    "\$PROMPTSIEVE_REGISTRY_DIR or the cache (python -m promptsieve_bench.bigbench.fetch says where)" >&2
  exit 2
fi
for S in "$@"; do
  E=$((S + 50))
  OUT="benchmarks/results/confirm-2k-reorder-0.5-$((S + 1))-$E"
  COMMIT=$(git rev-parse HEAD)
  STARTED=$(date -u +%FT%TZ)
  promptsieve bench --profile headline --n-threads 2 --suites multidoc_2k --ratios 0.5 \
    --methods none,coarse-reorder --no-screen --items "$E" --skip-items "$S" --out "$OUT"
  {
    echo "registration: benchmarks/preregistered/2k-coarse-reorder-2x.md (items $((S + 1))-$E)"
    echo "commit at chunk start: $COMMIT"
    echo "started: $STARTED"
    echo "finished: $(date -u +%FT%TZ)"
    python -c "import llama_cpp, numpy, scipy; print('llama-cpp-python', llama_cpp.__version__); print('numpy', numpy.__version__); print('scipy', scipy.__version__)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
  } > "$OUT/provenance.txt"
  echo "wrote $OUT (commit it: git add $OUT && git commit -m 'confirm study: chunk $((S + 1))-$E')"
done
