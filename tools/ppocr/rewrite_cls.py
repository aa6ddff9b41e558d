#!/usr/bin/env python3
"""Make RapidOCR's text-angle classifier (0 / 180 degrees) loadable by OpenCV 4.6's DNN module.

Input:  ch_ppocr_mobile_v2.0_cls_mobile.onnx from the PyPI wheel rapidocr==3.10.0 (rapidocr/models/),
        SHA-256 e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c.
Output: ch_ppocr_mobile_v2.0_cls_mobile.opencv46.onnx, input "x" 1x3x48x192 (crop resized to height 48,
        width ceil(48*w/h) capped at 192, (pixel/255-0.5)/0.5, BGR, right-padded with 0), output 1x2
        softmax: [p(0 degrees), p(180 degrees)]. RapidOCR rotates a crop when p(180) > 0.9.
Changes: input shape fixed and constant-folded by onnxsim without optimisation passes (its optimiser
turns the final MatMul+Add into a Gemm that OpenCV 4.6 rejects); the 18 Clip nodes' min/max inputs
become attributes (OpenCV 4.6 rejects the 3-input form: "node_proto.input_size() == 1"; the same
rewrite as the shipped PP-OCRv4 detector). The result is not valid opset-11 ONNX for onnx.checker
(Clip-11 has no attributes) but OpenCV reads it; onnxruntime cannot run it.

Usage: python rewrite_cls.py ch_ppocr_mobile_v2.0_cls_mobile.onnx --out-dir OUT
"""
import argparse
import os
import sys

import onnx
import onnxsim
from onnx import helper, numpy_helper

from rewrite_rec import remove_identities, sha256_of

EXPECTED_SHA256 = "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    sha = sha256_of(args.model)
    if sha != EXPECTED_SHA256 and not args.force:
        raise SystemExit(f"{args.model}: sha256 {sha}, expected {EXPECTED_SHA256} (use --force)")
    model = onnx.load(args.model)
    model, ok = onnxsim.simplify(model, overwrite_input_shapes={model.graph.input[0].name: [1, 3, 48, 192]},
                                 perform_optimization=False)
    if not ok:
        raise SystemExit("onnxsim could not validate the simplified model")
    remove_identities(model.graph)
    inits = {t.name: t for t in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}

    def scalar(name):
        if name in inits:
            return float(numpy_helper.to_array(inits[name]))
        return float(numpy_helper.to_array(consts[name].attribute[0].t))

    clips = 0
    for n in model.graph.node:
        if n.op_type == "Clip" and len(n.input) == 3:
            lo, hi = scalar(n.input[1]), scalar(n.input[2])
            del n.input[1:]
            n.attribute.extend([helper.make_attribute("min", lo), helper.make_attribute("max", hi)])
            clips += 1
    used = {i for n in model.graph.node for i in n.input}
    nodes = [n for n in model.graph.node if not (n.op_type == "Constant" and n.output[0] not in used)]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.value_info[:]
    del model.metadata_props[:]
    model.producer_name = "lector rewrite_cls.py"
    model.producer_version = "1"
    model.doc_string = (f"Modified by Lector's rewrite_cls.py for OpenCV 4.6 DNN (fixed input 1x3x48x192, "
                        f"constant-folded, Clip bounds as attributes). Source: rapidocr==3.10.0 wheel, "
                        f"rapidocr/models/ch_ppocr_mobile_v2.0_cls_mobile.onnx (sha256 {sha}); PaddleOCR model "
                        f"weights, Apache-2.0.")
    os.makedirs(args.out_dir, exist_ok=True)
    out = os.path.join(args.out_dir, "ch_ppocr_mobile_v2.0_cls_mobile.opencv46.onnx")
    onnx.save(model, out)
    print(f"{sha256_of(out)}  {out}  (nodes {len(model.graph.node)}, Clip nodes rewritten {clips})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
