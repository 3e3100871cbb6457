#!/usr/bin/env bash
# Builds adiff with `--features cuda,nccl` on a machine without a GPU (CUDA 13.0 and NCCL from PyPI
# wheels),
# for H100/H200 (sm_90a; CUDA_COMPUTE_CAP=80 makes one binary for A100 too), and packs it for the
# GPU machine.
#   usage: scripts/build-cuda.sh            -> target/cuda/release/adiff and target/cuda/adiff.xz
#   env:   CUDA_COMPUTE_CAP (90: H100/H200 only, 11.9 MB as .xz; 80: A100 + H100 via the fat
#          wrapper, 16.5 MB, which no longer fits the device tool's 64 MiB beside the tracked tree)
# What it does (recipe tested on this project's machines, see DEVELOPERS notes / README "CUDA"):
#   1. a venv (target/cuda-env) with the pinned nvcc/runtime/cuBLAS/cuRAND/NVRTC 13.0 wheels
#      (a newer nvcc is too new for cudarc 0.19 and for driver 580's PTX);
#   2. unversioned links to the wheels' lib*.so.N and a link-time-only libcuda stub
#      (target/cuda-link; the real libcuda.so.1 comes from the GPU machine's driver);
#   3. cargo build --release --features cuda into target/cuda (the CPU build in target/ is
#      untouched; CI never builds this feature), nvcc wrapped by scripts/nvcc-fat;
#   4. strip + xz: what travels to the GPU machine is capped at 64 MiB.
# First build ~15-25 min on 2 cores (most of it nvcc on candle-kernels); later ones are incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
env_dir=$repo/target/cuda-env
link=$repo/target/cuda-link
python=${PYTHON:-python3}
if [ ! -x "$env_dir/bin/nvcc-ok" ]; then
  "$python" -m venv "$env_dir"
  "$env_dir/bin/pip" install -q nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-nvvm==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
    nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
  touch "$env_dir/bin/nvcc-ok" && chmod +x "$env_dir/bin/nvcc-ok"
fi
# NCCL for data-parallel training (cudarc's `nccl` feature has NCCL 2.30's bindings; linked
# dynamically: the GPU machine's PyTorch wheels provide libnccl.so.2 at run time, see gpu-run.sh).
if [ ! -x "$env_dir/bin/nccl-ok" ]; then
  "$env_dir/bin/pip" install -q nvidia-nccl-cu13==2.30.7
  touch "$env_dir/bin/nccl-ok" && chmod +x "$env_dir/bin/nccl-ok"
fi
nv=$(ls -d "$env_dir"/lib/python3*/site-packages/nvidia/cu13 | head -1)
mkdir -p "$link/stubs"
for l in cudart cublas cublasLt nvrtc; do ln -sf "$nv/lib/lib$l.so.13" "$link/lib$l.so"; done
ln -sf "$nv/lib/libcurand.so.10" "$link/libcurand.so"
nccl_lib=$(find "$env_dir"/lib/python3*/site-packages/nvidia -name 'libnccl.so.2' | head -1)
[ -n "$nccl_lib" ] || { echo "build-cuda: libnccl.so.2 not found in $env_dir" >&2; exit 1; }
ln -sf "$nccl_lib" "$link/libnccl.so"
if [ ! -f "$link/stubs/libcuda.so" ]; then
  cargo fetch -q
  cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | sort | tail -1)
  # Every driver API symbol cudarc may link, each returning CUDA_ERROR_NO_DEVICE (100):
  # link-time only, never shipped.
  grep -ohE '^pub unsafe fn cu[A-Za-z0-9_]+' "$cudarc"/src/driver/sys/*.rs \
    | awk '{print "int "$4"(void){return 100;}"}' | sort -u > "$link/stubs/cuda_stub.c"
  gcc -shared -fPIC -w -Wl,-soname,libcuda.so.1 -o "$link/stubs/libcuda.so" "$link/stubs/cuda_stub.c"
fi
export PATH=$nv/bin:$PATH
export CUDA_HOME=$nv
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
if [ "$CUDA_COMPUTE_CAP" = 80 ]; then
  export NVCC=$repo/scripts/nvcc-fat REAL_NVCC=$nv/bin/nvcc
fi
export RUSTFLAGS="-L native=$link -L native=$link/stubs"
export CARGO_TARGET_DIR=$repo/target/cuda
cargo build --release --features cuda,nccl --bin adiff
bin=$CARGO_TARGET_DIR/release/adiff
strip -o "$CARGO_TARGET_DIR/adiff" "$bin"
xz -T0 -6 -c "$CARGO_TARGET_DIR/adiff" > "$CARGO_TARGET_DIR/adiff.xz"
ls -l "$CARGO_TARGET_DIR/adiff" "$CARGO_TARGET_DIR/adiff.xz"
echo "built $CARGO_TARGET_DIR/adiff.xz (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP); run it there with scripts/gpu-run.sh"
