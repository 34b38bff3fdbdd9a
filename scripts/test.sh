#!/usr/bin/env bash
# The README's test command: install dependencies, configure, build, run every test.
#   scripts/test.sh [extra cmake args...]
# Environment: BUILD_DIR (default build), JOBS (default: number of cores).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build_dir="${BUILD_DIR:-$root/build}"
jobs="${JOBS:-$(nproc)}"

"$root/scripts/setup.sh"
cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build_dir" --parallel "$jobs"
cd "$build_dir"
ctest --output-on-failure --parallel "$jobs" --timeout 900
