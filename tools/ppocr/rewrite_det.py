#!/usr/bin/env python3
"""Fix the input size of RapidOCR's PP-OCRv6 small text detector for OpenCV 4.6's DNN module.

Input:  PP-OCRv6_det_small.onnx from the PyPI wheel rapidocr==3.10.0 (rapidocr/models/),
        SHA-256 090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f.
Output: PP-OCRv6_det_small.opencv46.<W>x<H>.onnx, input "x" 1x3xHxW, output "fetch_name_0" 1x1xHxW.

OpenCV 4.6 loads and runs the original (dynamic-shape) file without complaint but its output is WRONG
(probability map differs from onnxruntime's by up to 1.0; on a receipt it found 1-5 boxes instead of ~45).
With the input shape fixed and the graph constant-folded by onnxsim (no optimisation passes, which would
create Gemm nodes), OpenCV's output matches onnxruntime's within ~3e-4. Identity nodes are removed.
Preprocessing (RapidOCR's config for this model): (pixel/255 - 0.5) / 0.5, BGR as decoded, no ImageNet
mean/std; DB post-processing thresh 0.3, box_thresh 0.5, unclip_ratio 1.6, dilation of the binary map.

Usage: python rewrite_det.py PP-OCRv6_det_small.onnx --out-dir OUT [--size 960 960]
"""
import argparse
import os
import sys

import onnx
import onnxsim

from rewrite_rec import remove_identities, sha256_of

EXPECTED_SHA256 = "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--size", type=int, nargs=2, default=[960, 960], metavar=("W", "H"))
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    w, h = args.size
    if w % 32 or h % 32:
        raise SystemExit("W and H must be multiples of 32")
    sha = sha256_of(args.model)
    if sha != EXPECTED_SHA256 and not args.force:
        raise SystemExit(f"{args.model}: sha256 {sha}, expected {EXPECTED_SHA256} (use --force)")
    model = onnx.load(args.model)
    model, ok = onnxsim.simplify(model, overwrite_input_shapes={model.graph.input[0].name: [1, 3, h, w]},
                                 perform_optimization=False)
    if not ok:
        raise SystemExit("onnxsim could not validate the simplified model")
    remove_identities(model.graph)
    del model.graph.value_info[:]
    del model.metadata_props[:]
    model.producer_name = "lector rewrite_det.py"
    model.producer_version = "1"
    model.doc_string = (f"Modified by Lector's rewrite_det.py for OpenCV 4.6 DNN (fixed input 1x3x{h}x{w}, "
                        f"constant-folded). Source: rapidocr==3.10.0 wheel, rapidocr/models/PP-OCRv6_det_small.onnx "
                        f"(sha256 {sha}); PaddleOCR model weights, Apache-2.0.")
    onnx.checker.check_model(model)
    os.makedirs(args.out_dir, exist_ok=True)
    out = os.path.join(args.out_dir, f"PP-OCRv6_det_small.opencv46.{w}x{h}.onnx")
    onnx.save(model, out)
    print(f"{sha256_of(out)}  {out}  (nodes {len(model.graph.node)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
