#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for spense and builds it into build/:
# system packages (compiler, CMake, BLAS, PCRE2, utf8proc, nlohmann-json, GoogleTest), the real
# test model (scripts/fetch_models.sh), then a Release build. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake ninja-build pkg-config python3 python3-pip libopenblas-openmp-dev libpcre2-dev libutf8proc-dev
          nlohmann-json3-dev libgtest-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" > /dev/null
fi

# cuSPARSELt (the 2:4 GEMMs of the GPU layer) comes as a Python wheel; CMake finds it in
# python3's site-packages. Only needed where CUDA code is built.
if command -v nvcc > /dev/null && ! python3 -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('nvidia.cusparselt') is None)" 2> /dev/null; then
    echo "setup: installing nvidia-cusparselt-cu13==0.8.0"
    python3 -m pip install --quiet nvidia-cusparselt-cu13==0.8.0
fi

./scripts/fetch_models.sh

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build
echo "setup: built build/spense"
