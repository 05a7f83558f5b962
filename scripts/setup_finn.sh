#!/usr/bin/env bash
# Install finn-plus (FINN's front end: streamline, HW layers, folding, estimates, HLS/RTL codegen)
# into .venv for `tinydyn fpga`. Recipe from shared/notes/finn-plus.md:
#   finn-plus 1.6.1 pins brevitas==0.13.0 (broken on torch 2.13) and a plain install drags in
#   torch CUDA wheels, so it goes in with --no-deps, then its declared dependencies minus
#   brevitas (finn-plus never imports it), plus psutil (imported but undeclared).
# A constraints file freezes what tinydyn already pins (torch, brevitas, onnx, numpy, ...) at the
# versions in .venv, so nothing here can downgrade them. finn-plus declares onnxruntime==1.25.1,
# protobuf==5.29.6 and matplotlib<3.11; we keep tinydyn's newer ones (the estimate flow and
# qonnx execution were checked with them). Re-running is instant (stamp file).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
[ -x "$PY" ] || { echo "setup_finn: .venv missing: run scripts/setup.sh first" >&2; exit 1; }
stamp=.venv/.tinydyn-finn
want=$(sha256sum "$0" | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && "$PY" -c "import finn, psutil, mip" 2>/dev/null; then
  echo "setup_finn: ok (finn-plus already installed)"
  exit 0
fi

FINN_DEPS=(
  "bitstring==4.3.1" "cmake==4.0.3" "mashumaro[yaml]==3.23" "mip==1.17" "onnx-passes==0.4.1"
  "pandas==2.3.3" "pybind11==3.0.1" "pydantic==2.14.3" "PyYAML==6.0.3" "rich==13.9.4"
  "scikit-learn==1.7.2" "scipy==1.17.1" "termcolor==2.5.0" "psutil==7.2.2"
  "onnx-ir>=0.1.15" "onnxscript>=0.7.0"
)
PROTECTED='^(torch|brevitas|onnx|numpy|onnxruntime|protobuf|matplotlib|qonnx|onnxoptimizer|setuptools|click)=='
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
"$PY" -m pip freeze 2>/dev/null | grep -iE "$PROTECTED" > "$constraints" || true

echo "setup_finn: installing finn-plus 1.6.1 and its dependencies into .venv (~2 GB)"
# pip reports finn-plus's own pins we deliberately do not follow (brevitas, onnxruntime, ...)
quiet() { grep -vE "^WARNING: Location|^ERROR: pip's dependency resolver|^finn-plus 1.6.1 requires" || true; }
"$PY" -m pip install -q -c "$constraints" "${FINN_DEPS[@]}" 2>&1 | quiet
"$PY" -m pip install -q --no-deps "finn-plus==1.6.1" 2>&1 | quiet
"$PY" -c "import finn.util.basic, qonnx, mip, psutil, torch, brevitas"
"$PY" -m pip freeze 2>/dev/null | grep -iE "$PROTECTED" | diff -q "$constraints" - >/dev/null \
  || { echo "setup_finn: a pinned package changed version: see 'pip list'" >&2; exit 1; }
echo "$want" > "$stamp"
echo "setup_finn: ok (finn-plus 1.6.1 installed; Vivado is only needed for the bitstream)"
