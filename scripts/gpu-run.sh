#!/usr/bin/env bash
# Runs an adiff command on the GPU machine (no Rust, no network there): unpacks the binary that
# scripts/build-cuda.sh packed (target/cuda/adiff.xz, carried with the working tree) and puts
# the driver's and PyTorch's CUDA libraries on LD_LIBRARY_PATH (the binary links libcuda.so.1,
# libcublas(Lt).so.13, libcurand.so.10, libcudart.so.13 and NCCL's libnccl.so.2 at start; NCCL
# comes from PyTorch's nvidia-nccl wheel there).
#   usage: scripts/gpu-run.sh explain a.wav b.wav --device cuda --tier 3 ...
#   env:   ADIFF_XZ (target/cuda/adiff.xz), NVROOT (PyTorch's nvidia wheels folder)
# The unpacked binary is kept in target/cuda/gpu/adiff for later calls on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."
xzfile=${ADIFF_XZ:-target/cuda/adiff.xz}
bin=target/cuda/gpu/adiff
if [ ! -x "$bin" ] || [ "$xzfile" -nt "$bin" ]; then
  [ -f "$xzfile" ] || { echo "gpu-run: $xzfile not found (build it with scripts/build-cuda.sh)" >&2; exit 2; }
  mkdir -p "$(dirname "$bin")"
  if command -v xz >/dev/null 2>&1; then
    xz -dc "$xzfile" > "$bin.partial"
  else
    py=/opt/torch/.venv/bin/python; [ -x "$py" ] || py=python3
    "$py" -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' \
      "$xzfile" "$bin.partial"
  fi
  chmod +x "$bin.partial" && mv "$bin.partial" "$bin"
fi
nvroot=${NVROOT:-$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia 2>/dev/null | head -1)}
ldp=""
if [ -n "$nvroot" ] && [ -d "$nvroot" ]; then
  while IFS= read -r d; do ldp="${ldp:+$ldp:}$d"; done < <(find "$nvroot" -type d -name lib | sort)
fi
for d in /usr/local/nvidia/lib64 /usr/local/cuda/lib64; do [ -d "$d" ] && ldp="${ldp:+$ldp:}$d"; done
export LD_LIBRARY_PATH="${ldp}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$bin" "$@"
