#!/usr/bin/env bash
# Runs the GPU tests and `spense bench gemm` on the GPU machine of the device tool, from binaries
# built on the development machine (same x86-64, CUDA 13.0) and carried in the folder $CARRY:
#   bin.tar.xz          spense and spense_tests, built in a tree at /tmp/sp (the tests look for
#                       their fixtures and the CLI there, so both are recreated at that path)
#   libs.tar.xz         a folder libs/ of shared libraries the GPU machine may lack (OpenBLAS, PCRE2, utf8proc)
#   libcusparseLt-VERSION.so.xz   a cuSPARSELt release from PyPI, reduced to its sm_90 code by
#                       bench/tools/strip_cusparselt_sm90.py so that it fits the carry limit
# The GPU machine's own cuSPARSELt is the one in its PyTorch environment (bench/device_env.sh).
#
# usage: bench/run_device.sh setup
#        bench/run_device.sh tests
#        bench/run_device.sh bench VERSION NAME [spense bench gemm options...]
# VERSION: "system" (the GPU machine's cuSPARSELt), a carried one (e.g. 0.8.1), or one already
# unpacked to /tmp/cusparselt-VERSION; the report goes to $DEST/NAME.json and the tables to
# $DEST/NAME.md (DEST defaults to $OUT).
set -euo pipefail
CARRY=${CARRY:-.carry-gpu}
OUT=${OUT:-/tmp/out}
source "$(dirname "$0")/device_env.sh"

case "$1" in
setup)
    mkdir -p /tmp/sp/build /tmp/sp/tests "$OUT"
    unxz_to "$CARRY/bin.tar.xz" /tmp/bin.tar && tar -C /tmp/sp/build -xf /tmp/bin.tar
    unxz_to "$CARRY/libs.tar.xz" /tmp/libs.tar && tar -C /tmp -xf /tmp/libs.tar
    cp -r tests/fixtures /tmp/sp/tests/
    {
        nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm,clocks.max.sm --format=csv
        echo "system cuSPARSELt: $(ls $SYSTEM_CSLT)"
        LD_LIBRARY_PATH=$(device_libpath $SYSTEM_CSLT) ldd /tmp/sp/build/spense
    } > "$OUT/env.txt" 2>&1
    cat "$OUT/env.txt"
    ;;
tests)
    cd /tmp/sp/build
    LD_LIBRARY_PATH=$(device_libpath $SYSTEM_CSLT) ./spense_tests --gtest_filter='*Gpu*:*Native*:*SparseGemm*' 2>&1 | tee "$OUT/gpu-tests.log" | grep -v '^\[ *\(RUN\|OK\) '
    ;;
bench)
    version=$2 name=$3
    shift 3
    dir=$SYSTEM_CSLT
    if [ "$version" != system ]; then
        dir=/tmp/cusparselt-$version
        mkdir -p "$dir"
        [ -f "$dir/libcusparseLt.so.0" ] || unxz_to "$CARRY/libcusparseLt-$version.so.xz" "$dir/libcusparseLt.so.0"
    fi
    start=$(date +%s)
    dest=${DEST:-$OUT}
    LD_LIBRARY_PATH=$(device_libpath "$dir") /tmp/sp/build/spense bench gemm --json "$dest/$name.json" "$@" | tee "$dest/$name.md"
    echo "bench $name ($version): $(($(date +%s) - start)) s wall"
    ;;
*)
    echo "usage: $0 setup | tests | bench VERSION NAME [options]" >&2
    exit 2
    ;;
esac
