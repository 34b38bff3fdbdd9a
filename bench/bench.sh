#!/bin/bash
# Runs every fstore benchmark with its baselines in one invocation and prints one table.
#   bench/bench.sh [--quick] [--build DIR] [--work DIR] [--only writer,e2e,memory,reads] [--results FILE]
# --build: a configured CMake build dir (default build-bench; configured + built here);
# --work: scratch space on the disk to measure (default /tmp/fstore-bench; needs ~10 GB,
#         ~2 GB with --quick); --results: also write the table as markdown (bench/RESULTS.md).
# Full run: ~10 minutes on 2 cores; --quick: ~1-2 minutes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$(dirname "$here")"
build="$src/build-bench"
work="${TMPDIR:-/tmp}/fstore-bench"
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --quick) args+=(--quick); shift ;;
    --only|--results) args+=("$1" "$2"); shift 2 ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
targets=(fstore_bench_writer)
grep -q "^build fstore-access:" "$build/build.ninja" 2>/dev/null && targets+=(fstore-access)
grep -q "^build fstore:" "$build/build.ninja" 2>/dev/null && targets+=(fstore)
cmake --build "$build" --target "${targets[@]}" -j"$(nproc)" >/dev/null
mkdir -p "$work"
exec /usr/bin/python3 "$here/run_bench.py" --work "$work" \
  --bench-writer "$build/bench/fstore_bench_writer" \
  --fstore "$build/apps/fstore" --access "$build/apps/fstore-access" "${args[@]}"
