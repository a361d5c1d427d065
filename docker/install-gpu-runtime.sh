#!/usr/bin/env bash
# Swaps the venv's CPU-only onnxruntime for onnxruntime-gpu with its CUDA, cuDNN and (TENSORRT=1)
# TensorRT libraries, all as Python wheels, and makes those libraries the system's. Run by
# docker/Dockerfile after setup.sh, from the repository root.
set -euo pipefail

PY=.venv/bin/python
TENSORRT="${TENSORRT:-1}"

# Both distributions install the `onnxruntime` module: only one may be present.
"$PY" -m pip uninstall -y -qq onnxruntime
"$PY" -m pip install --no-cache-dir -qq -r docker/requirements-robot.txt
if [[ "$TENSORRT" == 1 ]]; then
  # tensorrt-cu13-libs on PyPI is a stub that fetches the wheel from NVIDIA's index.
  "$PY" -m pip install --no-cache-dir -qq --extra-index-url https://pypi.nvidia.com \
    -r docker/requirements-tensorrt.txt
fi

# The providers dlopen libcudart.so.13, libcudnn.so.9, libnvinfer.so.10, ... by soname: list
# the wheels' library directories (nvidia/cu13/lib, nvidia/cudnn/lib, tensorrt_libs) for ld.so.
site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
libs=("$site/nvidia")
if [[ -d "$site/tensorrt_libs" ]]; then libs+=("$site/tensorrt_libs"); fi
find "${libs[@]}" -name 'lib*.so*' -printf '%h\n' | sort -u > /etc/ld.so.conf.d/armstack-gpu.conf
ldconfig

# Compiled-in providers (no GPU needed to list them; whether they load is checked at run time).
want="CUDAExecutionProvider"
if [[ "$TENSORRT" == 1 ]]; then want="$want TensorrtExecutionProvider"; fi
"$PY" - "$want" <<'PY'
import sys

import onnxruntime as ort

missing = set(sys.argv[1].split()) - set(ort.get_available_providers())
if missing:
    sys.exit(f"onnxruntime {ort.__version__} lacks {sorted(missing)}")
print(f"onnxruntime {ort.__version__}: {ort.get_available_providers()}")
PY
