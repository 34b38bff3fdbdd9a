#!/usr/bin/env bash
# Packs fstore's build dependencies (all but LibTorch and OpenCV) for a machine that has a
# compiler, CMake and a LibTorch of its own but none of fstore's other libraries and no
# package access: the GPU machine that bench/gpu_bench.sh runs on.
#   scripts/gpu_kit.sh [KIT_DIR]        # default: .gpu-kit in the repository (git-ignored)
# Run it here, on Debian 12 after scripts/setup.sh. The kit holds
#   usr/   the Debian -dev packages unpacked (headers, CMake configs, .pc files, .so links)
#          plus every shared library they load at run time, copied from this machine
#          (glibc and libstdc++ excluded: the target machine's own serve);
#   env.sh what a shell sources to use it (paths relative to the kit, so it can move).
# It must stay small: the device tool carries at most 64 MiB with the working tree.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
kit="$(mkdir -p "${1:-$root/.gpu-kit}" && cd "${1:-$root/.gpu-kit}" && pwd)"
arch=x86_64-linux-gnu
limit_mb=48

dev_packages=(
  libhdf5-dev libfmt-dev libspdlog-dev libcli11-dev nlohmann-json3-dev liblzf-dev
  libzip-dev libsentencepiece-dev libssl-dev libcurl4-openssl-dev zlib1g-dev
  pkgconf pkgconf-bin libpkgconf3
)
# Shared libraries the build links: their run-time closure goes into the kit.
linked_libraries=(
  hdf5/serial/libhdf5.so libfmt.so libspdlog.so liblzf.so libzip.so libsentencepiece.so
  libsentencepiece_train.so libssl.so libcrypto.so libcurl.so libz.so libpkgconf.so.3
)
# Provided by every glibc system, and newer there than here.
system_library='^(linux-vdso|ld-linux-x86-64|libc|libm|libdl|libpthread|librt|libresolv|libutil|libstdc\+\+|libgcc_s)\.so'

"$root/scripts/setup.sh" >/dev/null
rm -rf "$kit/usr" "$kit/debs"
mkdir -p "$kit/debs"
chmod 0777 "$kit/debs"  # apt downloads as user _apt

echo "gpu_kit: downloading ${#dev_packages[@]} packages"
# setup.sh skips `apt-get update` when nothing is missing; download needs the lists.
if ! (cd "$kit/debs" && apt-get download -q "${dev_packages[@]}" >/dev/null 2>&1); then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -q >/dev/null
  (cd "$kit/debs" && apt-get download -q "${dev_packages[@]}" >/dev/null)
fi
for deb in "$kit"/debs/*.deb; do dpkg -x "$deb" "$kit"; done
rm -rf "$kit/debs"

# What the build does not use: static libraries, HDF5's C++/Fortran/high-level layers and
# tools, documentation.
find "$kit/usr" \( -name '*.a' -o -name '*fortran*' -o -name '*.mod' \) ! -type d -delete
find "$kit/usr/lib/$arch" -maxdepth 3 -type l \( -name 'libhdf5*_cpp.so' -o -name 'libhdf5*_hl*.so' \
  -o -name 'libhdf5*fortran*.so' \) -delete
rm -rf "$kit/usr/share/doc" "$kit/usr/share/man" "$kit/usr/share/lintian" "$kit"/usr/bin/h5*

# The run-time closure of the linked libraries, as this machine resolves it.
lib="$kit/usr/lib/$arch"
declare -A copied=()
for name in "${linked_libraries[@]}"; do
  target=$(readlink -f "/usr/lib/$arch/$name")
  [[ -f "$target" ]] || { echo "gpu_kit: /usr/lib/$arch/$name is missing: run scripts/setup.sh" >&2; exit 1; }
  soname=$(readelf -d "$target" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  while read -r soname path; do
    [[ "$soname" =~ $system_library || -n "${copied[$soname]:-}" ]] && continue
    copied[$soname]=1
    real=$(readlink -f "$path")
    cp -n "$real" "$lib/"
    [[ "$(basename "$real")" == "$soname" ]] || ln -sf "$(basename "$real")" "$lib/$soname"
  done < <(echo "$soname $target"; ldd "$target" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}')
done
# The -dev links point at the versioned files (libhdf5.so -> ../../libhdf5_serial.so.103.3.0):
# every one must resolve inside the kit.
dangling=$(find "$kit/usr" -xtype l)
if [[ -n "$dangling" ]]; then echo "gpu_kit: links left dangling: $dangling" >&2; exit 1; fi

cat > "$kit/env.sh" <<'EOF'
# Sourced by bench/gpu_bench.sh: the kit's libraries first, its pkgconf on the .pc files of
# the kit alone, with the kit as sysroot (the .pc files say prefix=/usr).
kit="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export FSTORE_KIT="$kit"
export LD_LIBRARY_PATH="$kit/usr/lib/x86_64-linux-gnu:$kit/usr/lib/x86_64-linux-gnu/hdf5/serial${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PKG_CONFIG_LIBDIR="$kit/usr/lib/x86_64-linux-gnu/pkgconfig:$kit/usr/share/pkgconfig"
export PKG_CONFIG_PATH=""
export PKG_CONFIG_SYSROOT_DIR="$kit"
# Nothing in the kit is a system directory: keep every -I and -L pkgconf reports.
export PKG_CONFIG_SYSTEM_INCLUDE_PATH=/nonexistent PKG_CONFIG_SYSTEM_LIBRARY_PATH=/nonexistent
# The CMake arguments that point the build at the kit (prefix first, LibTorch's added by the caller).
fstore_kit_cmake_args=(
  -DCMAKE_LIBRARY_ARCHITECTURE=x86_64-linux-gnu
  # Debian's multiarch headers (opensslconf.h, curlbuild.h): a Debian compiler finds them in
  # /usr/include/x86_64-linux-gnu; here they are the kit's, searched before the system's.
  "-DCMAKE_C_FLAGS=-isystem $kit/usr/include/x86_64-linux-gnu"
  "-DCMAKE_CXX_FLAGS=-isystem $kit/usr/include/x86_64-linux-gnu"
  # Debian's hdf5/serial directory has include/ and lib/ links: the layout HDF5_ROOT wants.
  -DHDF5_ROOT="$kit/usr/lib/x86_64-linux-gnu/hdf5/serial" -DHDF5_NO_FIND_PACKAGE_CONFIG_FILE=ON
  -DOPENSSL_ROOT_DIR="$kit/usr" -DZLIB_ROOT="$kit/usr"
  -DPKG_CONFIG_EXECUTABLE="$kit/usr/bin/pkgconf"
)
EOF

size_mb=$(du -sm "$kit" | cut -f1)
echo "gpu_kit: $kit: ${size_mb} MB, ${#copied[@]} run-time libraries"
if (( size_mb > limit_mb )); then
  echo "gpu_kit: the kit is over ${limit_mb} MB: with the working tree it would not fit the device tool's 64 MiB" >&2
  exit 1
fi
