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

# Every option that decides which tests exist is given, so that values cached by an earlier
# configure of the same directory (tests off, no LibTorch) cannot shrink the suite; extra
# arguments come last and may still change them. --no-tests=error: zero tests is a failure.
echo "== build and test ($build_dir)"
cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFSTORE_BUILD_TESTS=ON \
  -DFSTORE_WITH_TORCH=ON -DFSTORE_WITH_OPENCV=ON -DFSTORE_SANITIZE=OFF -DFSTORE_PYTHON=/usr/bin/python3 "$@"
cmake --build "$build_dir" --parallel "$jobs"
(cd "$build_dir" && ctest --output-on-failure --no-tests=error --parallel "$jobs" --timeout 900)

if [ "${SANITIZE:-1}" != 0 ]; then
  # LibTorch parts are left out: ASan cannot load the SentencePiece module with
  # RTLD_DEEPBIND next to LibTorch (docs: platform-facts.md).
  echo "== build and test under ASan + UBSan (${build_dir}-asan)"
  # Here the extra arguments come first: this pass is the sanitized, LibTorch-free one.
  cmake -S "$root" -B "${build_dir}-asan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" \
    -DFSTORE_BUILD_TESTS=ON -DFSTORE_WITH_OPENCV=ON -DFSTORE_PYTHON=/usr/bin/python3 \
    -DFSTORE_SANITIZE=ON -DFSTORE_WITH_TORCH=OFF
  cmake --build "${build_dir}-asan" --parallel "$jobs"
  (cd "${build_dir}-asan" &&
   ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest --output-on-failure --no-tests=error --parallel "$jobs" --timeout 900)
fi
