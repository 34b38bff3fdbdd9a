#!/usr/bin/env bash
# The README's test command: install dependencies, configure, build, run every test; then
# the same without LibTorch under AddressSanitizer + UndefinedBehaviorSanitizer.
#   scripts/test.sh [extra cmake args...]
# Environment: BUILD_DIR (default build), JOBS (default: number of cores),
#              SANITIZE=0 to skip the sanitizer pass (default 1).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build_dir="${BUILD_DIR:-$root/build}"
jobs="${JOBS:-$(nproc)}"

"$root/scripts/setup.sh"

echo "== build and test ($build_dir)"
cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build_dir" --parallel "$jobs"
(cd "$build_dir" && ctest --output-on-failure --parallel "$jobs" --timeout 900)

if [ "${SANITIZE:-1}" != 0 ]; then
  # LibTorch parts are left out: ASan cannot load the SentencePiece module with
  # RTLD_DEEPBIND next to LibTorch (docs: platform-facts.md).
  echo "== build and test under ASan + UBSan (${build_dir}-asan)"
  cmake -S "$root" -B "${build_dir}-asan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DFSTORE_SANITIZE=ON -DFSTORE_WITH_TORCH=OFF "$@"
  cmake --build "${build_dir}-asan" --parallel "$jobs"
  (cd "${build_dir}-asan" &&
   ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest --output-on-failure --parallel "$jobs" --timeout 900)
fi
