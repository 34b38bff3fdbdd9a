#!/usr/bin/env bash
# The end-to-end demo on a fresh clone: install dependencies, build, generate a small
# BloodMNIST-format .npz (random cells, same keys/dtypes/shapes as the real file), encode it
# with the tiny test model (models/tiny.pt), then summarize and verify the store.
#   scripts/demo.sh            # BUILD_DIR (default build), DEMO_DIR (default build/demo)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build_dir="${BUILD_DIR:-$root/build}"
demo_dir="${DEMO_DIR:-$build_dir/demo}"
python=/usr/bin/python3

"$root/scripts/setup.sh"
cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build_dir" --target fstore fstore-access

mkdir -p "$demo_dir"
"$python" "$root/tests/python/fstore_ref/medmnist.py" --out "$demo_dir/data" --size 28 \
  --train 64 --val 16 --test 16 --seed 0
rm -f "$demo_dir/conceptclip_features.h5"

echo "== fstore build"
"$build_dir/apps/fstore" build --run-text --run-image \
  --model "$root/models/tiny.pt" --data-root "$demo_dir/data" --size 28 \
  --h5 "$demo_dir/conceptclip_features.h5" --batch-size 16

echo "== fstore-access summarize"
"$build_dir/apps/fstore-access" --path "$demo_dir/conceptclip_features.h5" summarize
echo "== fstore-access verify"
"$build_dir/apps/fstore-access" --path "$demo_dir/conceptclip_features.h5" verify
