#!/usr/bin/env bash
# Creates (idempotently) .venv-rapidocr: Debian's Python 3 (no system site-packages) with RapidOCR and
# ONNX Runtime from PyPI, for benchmarks/rapidocr_peer.py (the "rapidocr" peer column of benchmarks/eval.py).
#
#   benchmarks/setup-rapidocr-venv.sh       create or complete .venv-rapidocr, then check it
#
# rapidocr's wheel ships the models the peer uses (rapidocr/models/PP-OCRv6_det_small.onnx, PP-OCRv6_rec_small.onnx,
# ch_ppocr_mobile_v2.0_cls_mobile.onnx); nothing is downloaded at run time. pip resolves rapidocr's own
# dependencies (opencv-python-headless, numpy, pyclipper, shapely, omegaconf, ...); the versions it got are printed.
# Needs the Debian package python3-venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-rapidocr"
PY=/usr/bin/python3
RAPIDOCR_VERSION="${RAPIDOCR_VERSION:-3.10.0}"
ONNXRUNTIME_VERSION="${ONNXRUNTIME_VERSION:-1.32.0}"

if ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "install ok installed"; then
    echo "setup-rapidocr-venv: missing Debian package python3-venv" >&2
    echo "  install it with: sudo apt-get install -y python3-venv" >&2
    exit 1
fi

# A venv whose interpreter is gone or broken (e.g. Debian's python was upgraded) is rebuilt.
if [[ -e "$VENV" ]] && ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    echo "setup-rapidocr-venv: $VENV is unusable; recreating it" >&2
    rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PY" -m venv "$VENV"
fi

version() {
    "$VENV/bin/python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1" 2>/dev/null || true
}
if [[ "$(version rapidocr)" != "$RAPIDOCR_VERSION" || "$(version onnxruntime)" != "$ONNXRUNTIME_VERSION" ]]; then
    "$VENV/bin/python" -m pip install --quiet --only-binary=:all: \
        "rapidocr==$RAPIDOCR_VERSION" "onnxruntime==$ONNXRUNTIME_VERSION"
fi

"$VENV/bin/python" - <<'EOF'
import importlib.metadata as m
import pathlib

import cv2
import numpy
import onnxruntime
import rapidocr

models = pathlib.Path(rapidocr.__file__).parent / "models"
needed = ["PP-OCRv6_det_small.onnx", "PP-OCRv6_rec_small.onnx", "ch_ppocr_mobile_v2.0_cls_mobile.onnx"]
missing = [name for name in needed if not (models / name).is_file()]
if missing:
    raise SystemExit(f"setup-rapidocr-venv: the rapidocr wheel lacks {', '.join(missing)} in {models}")
deps = ", ".join(f"{d.metadata['Name']} {d.version}" for d in m.distributions()
                 if d.metadata["Name"].lower() in ("opencv-python", "opencv-python-headless", "pyclipper", "shapely",
                                                   "omegaconf"))
print(f"setup-rapidocr-venv: ok: rapidocr {m.version('rapidocr')}, onnxruntime {onnxruntime.__version__} "
      f"({', '.join(onnxruntime.get_available_providers())}), opencv {cv2.__version__}, numpy {numpy.__version__}; "
      f"{deps}; models in {models}")
EOF
