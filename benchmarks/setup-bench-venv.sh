#!/usr/bin/env bash
# Creates (idempotently) .venv-bench: Debian's Python 3 with its system packages (python3-opencv, numpy)
# plus pytesseract from PyPI, for benchmarks/scene_python.py (the "common Python approach" of P6).
#
#   benchmarks/setup-bench-venv.sh          create or complete .venv-bench, then check it
#
# Needs the Debian packages python3-opencv, python3-venv and tesseract-ocr (deploy/scripts/deps.sh bench).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-bench"
PY=/usr/bin/python3
PYTESSERACT_VERSION="${PYTESSERACT_VERSION:-0.3.13}"

missing=()
for pkg in python3-opencv python3-venv tesseract-ocr; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    echo "setup-bench-venv: missing Debian package(s): ${missing[*]}" >&2
    echo "  install them with: sudo apt-get install -y ${missing[*]}   (or: deploy/scripts/deps.sh bench)" >&2
    exit 1
fi
if ! "$PY" -c 'import cv2, numpy' 2>/dev/null; then
    echo "setup-bench-venv: $PY cannot import cv2/numpy although python3-opencv is installed" >&2
    exit 1
fi

# A venv whose interpreter is gone or is not Debian's (e.g. made by a pyenv python) is rebuilt.
if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -c 'import cv2' 2>/dev/null; then
    echo "setup-bench-venv: $VENV is unusable (no cv2 through system site-packages); recreating it" >&2
    rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PY" -m venv --system-site-packages "$VENV"
fi

have="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("pytesseract"))' 2>/dev/null || true)"
if [[ "$have" != "$PYTESSERACT_VERSION" ]]; then
    "$VENV/bin/python" -m pip install --quiet "pytesseract==$PYTESSERACT_VERSION"
fi

"$VENV/bin/python" - <<'EOF'
import cv2, numpy, pytesseract
print(f"setup-bench-venv: ok: opencv {cv2.__version__}, numpy {numpy.__version__}, "
      f"pytesseract {pytesseract.__version__} (tesseract {pytesseract.get_tesseract_version()})")
EOF
