#!/usr/bin/env bash
# Installs every Debian package that fstore's build, tests, demo and benchmarks need.
# Idempotent: packages already present are not reinstalled and `apt-get update` runs
# only when something is missing. Works as root, or through sudo otherwise.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libtorch-dev libhdf5-dev hdf5-tools libcli11-dev libsentencepiece-dev sentencepiece
  libopencv-dev libpng-dev libjpeg-dev libfmt-dev libspdlog-dev libgtest-dev libgmock-dev liblzf-dev
  nlohmann-json3-dev libzip-dev libcurl4-openssl-dev libssl-dev libopenblas0-pthread
  python3 python3-h5py python3-numpy python3-torch python3-pil python3-sentencepiece
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo); else
    echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1
  fi
fi

echo "setup: installing ${#missing[@]} packages: ${missing[*]}"
# Through env: sudo's env_reset would drop an exported DEBIAN_FRONTEND. The lock timeout
# waits for apt runs already going on a fresh VM (unattended-upgrades) instead of failing.
apt=("${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)
"${apt[@]}" update -q
# --no-install-recommends: libopencv-dev's recommends would pull in a JDK.
"${apt[@]}" install -y -q --no-install-recommends "${missing[@]}"
