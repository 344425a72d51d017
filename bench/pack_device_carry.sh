#!/usr/bin/env bash
# Packs what bench/run_device.sh needs on the GPU machine into $CARRY (default .carry-gpu, which
# must be ignored by git: echo /.carry-gpu/ >> .git/info/exclude), within the device tool's 64 MiB:
#   bin.tar.xz                     spense and spense_tests from BUILD_DIR (and libkernel_trace.so,
#                                  dense_k_halves)
#   libs.tar.xz                    the shared libraries they link that the GPU machine's image lacks
#   libcusparseLt-VERSION.so.xz    (with VERSION) that cuSPARSELt release from PyPI, reduced to its
#                                  sm_90 code (tools/strip_cusparselt_sm90.py): ~230 MB -> ~55 MB
# The GPU tests find their fixtures and the CLI at the paths compiled in, so build in a tree at
# /tmp/sp (run_device.sh recreates /tmp/sp/build there).
#
# usage: bench/pack_device_carry.sh BUILD_DIR [VERSION]
set -euo pipefail
build=$1
version=${2:-}
carry=${CARRY:-.carry-gpu}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$carry" "$tmp/libs"

tar -C "$build" -cf - spense spense_tests $(cd "$build" && ls libkernel_trace.so dense_k_halves 2>/dev/null) | xz -9 -T0 > "$carry/bin.tar.xz"

# Everything the binaries load from outside the C/C++ runtime and CUDA (those the image has).
ldd "$build/spense" | awk '/=> \//{print $3}' | grep -v -E '/(libc|libm|libstdc\+\+|libgcc_s|librt|libpthread|libdl)\.so|cublas|cusparse|cusolver|nvJitLink' |
    while read -r lib; do cp -L "$lib" "$tmp/libs/"; done
tar -C "$tmp" -cf - libs | xz -9 -T0 > "$carry/libs.tar.xz"

if [ -n "$version" ]; then
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux2014_x86_64 -d "$tmp/whl" "nvidia-cusparselt-cu13==$version"
    unzip -q -o "$tmp"/whl/*.whl '*/libcusparseLt.so.0' -d "$tmp/whl"
    python3 "$(dirname "$0")/tools/strip_cusparselt_sm90.py" "$(find "$tmp/whl" -name libcusparseLt.so.0)" "$tmp/libcusparseLt.so.0"
    xz -9e -T0 -c "$tmp/libcusparseLt.so.0" > "$carry/libcusparseLt-$version.so.xz"
fi
ls -l "$carry"
du -cb "$carry"/* | tail -1
