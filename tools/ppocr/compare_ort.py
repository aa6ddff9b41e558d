#!/usr/bin/env python3
"""Compare what check_opencv.py saved (OpenCV 4.6 on the rewritten nets) with onnxruntime on the ORIGINAL
wheel models, on the very same input blobs. Runs in the venv (onnx, onnxruntime, numpy).

  python compare_ort.py rec rec.npz --orig PP-OCRv6_rec_small.onnx --models DIR
  python compare_ort.py cls cls.npz --orig ch_ppocr_mobile_v2.0_cls_mobile.onnx

rec: the original outputs probabilities over 18710 classes; the latin nets output logits over 622 of them
(blank, the 620 characters of the keys file, space). softmax(latin logits) is compared with the original
probabilities renormalised over those 622 classes (mathematically the same thing), and the logits with
onnxruntime on the rewritten latin file. Greedy CTC strings: OpenCV latin vs the original full model.
"""
import argparse
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rewrite_rec import latin_subset  # noqa: E402

KEYS = "PP-OCRv6_rec_small.latin.keys.txt"


def session(path):
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def greedy(p, table):
    best = p.argmax(axis=-1)
    out, prev = [], 0
    for c in best:
        if c != 0 and c != prev:
            out.append(table[c])
        prev = c
    return "".join(out)


def cmd_rec(a):
    d = np.load(a.npz)
    full = onnx.load(a.orig).metadata_props
    chars = {p.key: p.value for p in full}["character"].splitlines()
    full_table = ["<blank>"] + chars + [" "]
    index = {c: i + 1 for i, c in enumerate(chars)}
    sub = latin_subset(chars)
    keep = [0] + [index[c] for c in sub] + [len(chars) + 1]
    with open(os.path.join(a.models, KEYS), encoding="utf-8", newline="\n") as f:
        keys = f.read()[:-1].split("\n")
    assert keys == sub, "keys file differs from the latin subset of the model's list"
    latin_table = ["<blank>"] + keys + [" "]
    assert [full_table[k] for k in keep] == latin_table
    orig = session(a.orig)
    nets = {}
    worst_p = worst_l = worst_rand = worst_rw = lrange = 0.0
    same = n = argmax_same = argmax_n = 0
    for k in sorted(x[:-2] for x in d.files if x.endswith("_x")):
        x, y_cv = d[k + "_x"], d[k + "_y"]
        w = x.shape[3]
        if w not in nets:
            nets[w] = session(os.path.join(a.models, f"PP-OCRv6_rec_small.opencv46.w{w}.latin.logits.onnx"))
        p_full = orig.run(None, {"x": x})[0][0]
        q = p_full[:, keep]
        q = q / q.sum(axis=-1, keepdims=True)
        l_ort = nets[w].run(None, {"x": x})[0][0]
        dp = float(np.abs(softmax(y_cv) - q).max())
        dl = float(np.abs(y_cv - l_ort).max())
        dr = float(np.abs(softmax(l_ort) - q).max())  # the rewrite alone (onnxruntime on both files)
        worst_rw = max(worst_rw, dr)
        lrange = max(lrange, float(np.abs(y_cv).max()))
        argmax_same += int((y_cv.argmax(-1) == q.argmax(-1)).sum())
        argmax_n += y_cv.shape[0]
        if k.startswith("rand"):
            worst_rand = max(worst_rand, dp)
            print(f"{k:14s} random input: max|dp| {dp:.2e}  max|dlogit| vs ort(latin) {dl:.2e}")
            continue
        worst_p, worst_l = max(worst_p, dp), max(worst_l, dl)
        t_cv = str(d[k + "_text"])
        t_full = greedy(p_full, full_table)
        n += 1
        same += t_cv == t_full
        print(f"{k:14s} {str(d[k + '_name']):9s} max|dp| {dp:.2e}  max|dlogit| {dl:.2e}  "
              f"{'same' if t_cv == t_full else 'DIFF'}  cv={t_cv!r} ort(full)={t_full!r}")
    print(f"crops: max |softmax(cv logits) - renormalised ort p| = {worst_p:.2e}; "
          f"max |cv logits - ort logits (latin file)| = {worst_l:.2e}; random inputs max |dp| = {worst_rand:.2e}")
    print(f"the rewrite alone (onnxruntime, latin file vs original renormalised): max |dp| = {worst_rw:.2e}; "
          f"largest |logit| {lrange:.1f}")
    print(f"argmax agreement {argmax_same}/{argmax_n} steps; strings identical {same}/{n}")


def cmd_cls(a):
    d = np.load(a.npz)
    s = session(a.orig)
    worst = 0.0
    for k in sorted(x[:-2] for x in d.files if x.endswith("_x")):
        y_ort = s.run(None, {s.get_inputs()[0].name: d[k + "_x"]})[0].reshape(-1)
        y_cv = d[k + "_y"]
        diff = float(np.abs(y_cv - y_ort).max())
        worst = max(worst, diff)
        print(f"{k:10s} {str(d[k + '_name']):9s} p(180) OpenCV {y_cv[1]:.6g}  onnxruntime(orig) {y_ort[1]:.6g}  "
              f"|d| {diff:.1e}")
    print(f"max |diff| {worst:.2e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["rec", "cls"])
    ap.add_argument("npz")
    ap.add_argument("--orig", required=True)
    ap.add_argument("--models")
    a = ap.parse_args()
    (cmd_rec if a.what == "rec" else cmd_cls)(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
