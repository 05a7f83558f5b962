#!/usr/bin/env bash
# Set up tinydyn on a fresh Debian machine: Debian packages, then .venv with pinned deps.
# Re-running is fast: each step is skipped when what it installs is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(gcc g++ perl libc6-dev make gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm dataset-fashion-mnist)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.tinydyn-deps
want=$(sha256sum requirements.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python dependencies into .venv"
  quiet_pip() {  # pip's output minus this machine's noise about absent local mirrors; keeps pip's status
    .venv/bin/python -m pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
    return "${PIPESTATUS[0]}"
  }
  quiet_pip --upgrade pip
  # torch first, pinned: the local CPU wheel (an unpinned torch would pull CUDA wheels)
  quiet_pip torch==2.13.0
  quiet_pip -r requirements.txt
  quiet_pip --no-deps -e .
  .venv/bin/python -c "import torch, brevitas, qonnx, onnx, jinja2, serial, click, tqdm, matplotlib, ray, stable_baselines3" 
  echo "$want" > "$stamp"
fi
# the Cortex-M4 cycle-model QEMU plugin (docs/CYCLES.md), built with the host gcc into .venv
.venv/bin/python -m tinydyn.host.cycles --build >/dev/null
bash scripts/setup_finn.sh  # finn-plus for `tinydyn fpga` (tests/test_hw.py runs its front end)
echo "setup: ok (.venv ready; arm-none-eabi-gcc, qemu-system-arm, Fashion-MNIST installed)"
