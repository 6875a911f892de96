#!/usr/bin/env bash
# Builds the CUDA backend (dsv2 and the GPU test binary) with libstdc++ and libgcc linked in, and packs
# the binaries with the shared libraries they load that a bare CUDA host may lack (PCRE2, ICU,
# cpp-httplib and its compression libraries) into one archive, for a GPU machine without this project's
# build dependencies:
#   scripts/package_gpu_binaries.sh [ARCHIVE]    (default: build-gpu-bundle/dsv2-cuda.tar.xz)
# On the GPU machine, in a checkout of the same commit:
#   mkdir -p /tmp/dsv2 && tar -xJf ARCHIVE -C /tmp/dsv2
#   LD_LIBRARY_PATH=/tmp/dsv2/lib BUILD=/tmp/dsv2 scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
archive=${1:-build-gpu-bundle/dsv2-cuda.tar.xz}
nvcc=$(scripts/find_nvcc.sh)
[ -n "$nvcc" ] || { echo "package_gpu_binaries: no CUDA toolkit (nvcc) found" >&2; exit 1; }
build=build-gpu-bundle/build
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DDSV2_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" \
  -DCMAKE_EXE_LINKER_FLAGS="-static-libstdc++ -static-libgcc" >/dev/null
cmake --build "$build" -j"$(nproc)" --target dsv2 dsv2_cuda_tests
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/lib" "$stage/tests"
cp "$build/dsv2" "$stage/"
cp "$build/tests/dsv2_cuda_tests" "$stage/tests/"
strip "$stage/dsv2" "$stage/tests/dsv2_cuda_tests"
# Every shared library the binaries resolve, but the C runtime, libstdc++/libgcc (the host's serve the
# libraries that need them), zlib and OpenSSL (on every host; a copy on LD_LIBRARY_PATH would also
# replace the host's for its own programs) and the CUDA libraries (the GPU host's own).
ldd "$stage/dsv2" "$stage/tests/dsv2_cuda_tests" | awk '/=> \// {print $3}' | sort -u |
  grep -vE '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|libz|libssl|libcrypto)\.so|/ld-linux|/libcu|/libnv|/cuda' |
  while read -r lib; do cp -L "$lib" "$stage/lib/"; done
mkdir -p "$(dirname "$archive")"
tar -cJf "$archive" -C "$stage" .
echo "$archive: $(du -h "$archive" | cut -f1) ($(ls "$stage/lib" | tr '\n' ' '))"
