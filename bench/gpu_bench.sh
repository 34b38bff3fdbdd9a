#!/usr/bin/env bash
# The GPU end-to-end benchmark, in one command for a GPU machine that has a compiler, CMake,
# ninja, CUDA and PyTorch but none of fstore's other libraries and no package access (the
# device tool's machines). Builds fstore there against that PyTorch's LibTorch and the kit of
# scripts/gpu_kit.sh (made beforehand on a Debian machine and carried along), then runs
# bench/run_bench.py --only gpu: the So400m-shaped test model at batch 64 per precision,
# fstore build vs the Python reference, against the encoder alone and the GPU's bf16 peak.
#   bench/gpu_bench.sh [--kit DIR] [--build DIR] [--work DIR] [--device cuda|cpu]
#                      [--precisions bf16,fp16] [--model so400m] [--images N] [--ref-images N]
#                      [--build-only]
# Environment: PYTHON (default python3: the one with torch), OUT (where the device tool
# collects files: the log, the results table and the probe land there), JOBS.
# From this machine, with the kit made (scripts/gpu_kit.sh), one device call does it all:
#   run(command="bench/gpu_bench.sh", carry=[".gpu-kit"], timeout_s=540)
# A dry run anywhere, on the CPU and a small model:
#   bench/gpu_bench.sh --device cpu --precisions fp32 --model tiny --images 128 --ref-images 64
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
kit="$root/.gpu-kit"
build="$root/build-gpu"
work="${TMPDIR:-/tmp}/fstore-gpu-bench"
build_only=0
bench_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --kit) kit="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --device) bench_args+=(--device "$2"); shift 2 ;;
    --precisions) bench_args+=(--precisions "$2"); shift 2 ;;
    --model) bench_args+=(--gpu-model "$2"); shift 2 ;;
    --images) bench_args+=(--gpu-images "$2"); shift 2 ;;
    --ref-images) bench_args+=(--gpu-ref-images "$2"); shift 2 ;;
    --build-only) build_only=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "gpu_bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
out="${OUT:-$work/out}"
mkdir -p "$out" "$work"
exec > >(tee -a "$out/gpu_bench.log") 2>&1
python="${PYTHON:-python3}"
step() { echo "== $(date +%T) $*"; }

if [[ ! -f "$kit/env.sh" ]]; then
  echo "gpu_bench.sh: no kit at $kit: run scripts/gpu_kit.sh on a Debian 12 machine first and carry .gpu-kit" >&2
  exit 3
fi
# shellcheck source=/dev/null
source "$kit/env.sh"

step "probe"
probe() {  # what the machine is; nothing here may stop the script
  set +e +o pipefail
  uname -a
  ldd --version 2>&1 | head -1
  c++ --version 2>&1 | head -1
  cmake --version | head -1
  echo "ninja $(ninja --version 2>&1)"
  command -v nvcc && nvcc --version | tail -2
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  "$python" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda",
torch.version.cuda, "available", torch.cuda.is_available(), "cxx11_abi", torch.compiled_with_cxx11_abi())' 2>&1
  echo "nproc $(nproc)"
  free -g | head -2
  df -h "$work" | tail -1
}
(probe) 2>&1 | tee "$out/probe.txt"

# LibTorch: the torch of $PYTHON (pip wheels ship share/cmake/Torch), else CMake's search.
torch_prefix="$("$python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)"
[[ -f "$torch_prefix/Torch/TorchConfig.cmake" ]] || torch_prefix=""
cuda_args=()
nvcc="$(command -v nvcc || true)"
[[ -z "$nvcc" && -x /usr/local/cuda/bin/nvcc ]] && nvcc=/usr/local/cuda/bin/nvcc
if [[ -n "$nvcc" ]]; then
  # LibTorch's CMake config enables the CUDA language: point it at the toolkit.
  cuda_args=(-DCMAKE_CUDA_COMPILER="$nvcc" -DCUDAToolkit_ROOT="$(dirname "$(dirname "$nvcc")")")
fi

step "configure ($build; LibTorch from ${torch_prefix:-the default CMake search})"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DFSTORE_BUILD_TESTS=OFF -DFSTORE_WITH_OPENCV=OFF -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
  -DCMAKE_PREFIX_PATH="${torch_prefix:+$torch_prefix;}$FSTORE_KIT/usr" \
  "${fstore_kit_cmake_args[@]}" "${cuda_args[@]}"
step "build"
cmake --build "$build" --parallel "${JOBS:-$(nproc)}" --target fstore fstore-access fstore_bench_writer

# Every library the tools load must come from the kit, LibTorch's folder or the system's
# C/C++ runtime; a "not found" here would only show up as a failed run later.
step "libraries"
ldd "$build/apps/fstore" | tee "$out/ldd-fstore.txt"
if grep -q "not found" "$out/ldd-fstore.txt"; then echo "gpu_bench.sh: fstore misses libraries (above)" >&2; exit 4; fi
"$build/apps/fstore" --version

if (( build_only )); then step "built (--build-only)"; exit 0; fi
step "benchmark"
FSTORE_PYTHON="$(command -v "$python")" PYTHONUNBUFFERED=1 "$python" "$root/bench/run_bench.py" \
  --bench-writer "$build/bench/fstore_bench_writer" --fstore "$build/apps/fstore" \
  --access "$build/apps/fstore-access" --work "$work" --only gpu --results "$out/gpu_results.md" \
  "${bench_args[@]}"
step "done: $out/gpu_results.md"
