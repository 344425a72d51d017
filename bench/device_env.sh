# Sourced by the bench/run_*_device.sh scripts: the library path and the Python of the GPU
# machine's image. The H100 and H200 images keep PyTorch and the NVIDIA wheels (cuSPARSELt 0.8.0)
# in /opt/torch/.venv; elsewhere, python3's. cuSPARSELt's library sits in nvidia/cusparselt/lib
# (0.8.x) or nvidia/cu13/lib (0.10+).
# Sets: PY (a Python with torch), DEVICE_SITE (its site-packages), SYSTEM_CSLT (the image's
# cuSPARSELt folder), LD_LIBRARY_PATH (carried libs first), and the function unxz_to SRC DEST.
if [ -x /opt/torch/.venv/bin/python ]; then PY=/opt/torch/.venv/bin/python; else PY=python3; fi
DEVICE_SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
SYSTEM_CSLT=$(dirname "$(ls "$DEVICE_SITE"/nvidia/cusparselt/lib/libcusparseLt.so.0 "$DEVICE_SITE"/nvidia/cu13/lib/libcusparseLt.so.0 2>/dev/null | head -1)")
device_libpath() { echo "/tmp/libs:$1:/usr/local/cuda/lib64:$DEVICE_SITE/nvidia/cu13/lib"; }
export LD_LIBRARY_PATH=$(device_libpath "$SYSTEM_CSLT")
unxz_to() { "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"; }
