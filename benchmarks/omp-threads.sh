#!/usr/bin/env bash
# Seconds per receipt of `lector ocr` with OMP_THREAD_LIMIT=1 against OpenMP's default (4 threads in Debian's
# Tesseract), side by side in one run, rounds interleaved. Reads the receipts from ../shared/data (research use
# only; never copied into the project).
#
#   benchmarks/omp-threads.sh [ROUNDS] [FILES]      (defaults: 3 rounds, 4 receipts)
#
# The OCR runs in C, so the debug build of `lector` measures the same thing as a release build.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
data=${LECTOR_BENCH_DATA:-$root/../shared/data/receipts-sroie/images}
rounds=${1:-3}
count=${2:-4}
bin=${LECTOR_BIN:-$root/.build/debug/lector}
[[ -x $bin ]] || (cd "$root" && swift build --product lector >/dev/null)
mapfile -t files < <(ls "$data"/*.jpg | head -n "$count")

run() {  # $1 = OMP_THREAD_LIMIT; prints seconds per file
  local start end
  start=$(date +%s.%N)
  for f in "${files[@]}"; do OMP_THREAD_LIMIT=$1 "$bin" ocr "$f" >/dev/null; done
  end=$(date +%s.%N)
  echo "($end - $start) / ${#files[@]}" | bc -l
}

one=(); four=()
for _ in $(seq "$rounds"); do
  one+=("$(run 1)")
  four+=("$(run 4)")
done
stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "min %.3f  median %.3f  max %.3f", a[1], a[int((NR+1)/2)], a[NR]}'; }
echo "files=${#files[@]} rounds=$rounds machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB"
echo "OMP_THREAD_LIMIT=1  s/receipt: $(stats "${one[@]}")"
echo "OMP_THREAD_LIMIT=4  s/receipt: $(stats "${four[@]}")"
m1=$(printf '%s\n' "${one[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
m4=$(printf '%s\n' "${four[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "median ratio (4 threads / 1 thread): $(echo "$m4 / $m1" | bc -l | cut -c1-5)"
