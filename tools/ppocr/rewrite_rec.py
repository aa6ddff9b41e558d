#!/usr/bin/env python3
"""Rewrite RapidOCR's PP-OCRv6 small text recogniser so that OpenCV 4.6's DNN module runs it.

Input:  PP-OCRv6_rec_small.onnx from the PyPI wheel rapidocr==3.10.0 (rapidocr/models/),
        SHA-256 6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884.
Output: one ONNX file per input width, PP-OCRv6_rec_small.opencv46.w<W>.onnx (input "x" 1x3x48xW,
        output "fetch_name_0" 1 x W/8 x 18710, softmax probabilities over the CTC classes; with --logits
        the final Softmax is dropped: PP-OCRv6_rec_small.opencv46.w<W>.logits.onnx, output "logits"), and
        PP-OCRv6_rec_small.keys.txt: the character list stored in the model's metadata ("character"),
        one per line. Class 0 is the CTC blank, class i (1..18708) is line i of that file, and class
        18709 is a space (PaddleOCR's use_space_char).
        With --charset latin the classifier keeps only 622 classes (blank, the 620 Latin/digit/punctuation/
        symbol characters, space): PP-OCRv6_rec_small.opencv46.w<W>.latin[.logits].onnx, output 1 x W/8 x 622,
        and PP-OCRv6_rec_small.latin.keys.txt (620 lines): class 0 = blank, class i (1..620) = line i,
        class 621 = space. Lector ships --charset latin --logits (deploy/models/ppocr-v6-rec/).

What is changed, and why (OpenCV 4.6.0 as packaged by Debian 12):
  1. The input shape is fixed to 1x3x48xW and the graph is constant-folded with onnxsim *without*
     its optimisation passes. OpenCV refuses the dynamic shapes; onnxsim's optimiser turns every
     MatMul+Add into Reshape+Gemm+Reshape, and OpenCV 4.6 rejects those Gemm nodes
     ("FullyConnectedLayerImpl: !bias || (blobs.size() == 2 && numOutput == blobs[1].total())").
  2. Identity nodes are removed (cosmetic: fewer layers).
  3. Reduce* axes are made non-negative (ReduceMean axes=[-1] in the LayerNorms; not required by
     OpenCV 4.6 as it turned out: a harmless normalisation).
  4. Every Mul of a 3-D tensor [1,T,C] by a constant vector [C] (the LayerNorm scales) becomes a
     MatMul by diag(vector). OpenCV 4.6 imports such a Mul as a Scale layer (apparently applied over
     axis 1, T, rather than the last axis C)
     and the forward pass fails with "(-215) start <= (int)shape.size() && end <= (int)shape.size()
     && start <= end in function 'total'". MatMul by a constant is an InnerProduct over the last
     axis, and the following Add (the LayerNorm shift) is then imported like a linear layer's bias.
Nothing else in the network changes; the weights are the original ones (the diagonal matrices hold the
original LayerNorm scales). Check: see NOTES.md (OpenCV 4.6 vs onnxruntime on the original model).

The output is deterministic for a given input file and versions of onnx / onnxsim; the SHA-256 of
every written file is printed.

Usage:
  python rewrite_rec.py PP-OCRv6_rec_small.onnx --out-dir OUT [--widths 320 640 960] [--charset all|latin]
         [--logits] [--check]   (--check compares the full-charset files only; see compare_ort.py)
Requires: onnx, onnxsim (and onnxruntime, numpy for --check).
"""
import argparse
import hashlib
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

EXPECTED_SHA256 = "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884"
HEIGHT = 48
STEM = "PP-OCRv6_rec_small"
NOTICE = (
    "Modified by Lector's rewrite_rec.py for OpenCV 4.6 DNN (fixed input 1x3x48x{w}, constant-folded, "
    "LayerNorm scales as MatMul by diagonal matrices). Source: rapidocr==3.10.0 wheel, "
    "rapidocr/models/PP-OCRv6_rec_small.onnx (sha256 {sha}). Converted from an official PaddleOCR model; "
    "the upstream model weights are copyright Baidu and/or the applicable PaddleOCR rights holders and are "
    "licensed under the Apache License, Version 2.0."
)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def remove_identities(graph):
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}

    def root(name):
        while name in alias:
            name = alias[name]
        return name

    nodes = [n for n in graph.node if n.op_type != "Identity"]
    for n in nodes:
        for i, name in enumerate(n.input):
            n.input[i] = root(name)
    # Keep the graph's output names: rename the tensor that now produces each output.
    for out in graph.output:
        if out.name in alias:
            src = root(out.name)
            for n in nodes:
                for i, name in enumerate(n.output):
                    if name == src:
                        n.output[i] = out.name
                for i, name in enumerate(n.input):
                    if name == src:
                        n.input[i] = out.name
    del graph.node[:]
    graph.node.extend(nodes)


def tensor_ranks(model):
    inferred = shape_inference.infer_shapes(model)
    g = inferred.graph
    return {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(g.value_info) + list(g.input) + list(g.output)
    }


def positive_reduce_axes(model, shapes):
    count = 0
    for n in model.graph.node:
        if not n.op_type.startswith("Reduce"):
            continue
        for a in n.attribute:
            if a.name == "axes" and any(x < 0 for x in a.ints):
                rank = len(shapes[n.input[0]])
                axes = [x % rank for x in a.ints]
                del a.ints[:]
                a.ints.extend(axes)
                count += 1
    return count


def vector_mul_to_diag_matmul(model, shapes):
    inits = {t.name: t for t in model.graph.initializer}
    changed = []
    for n in model.graph.node:
        if n.op_type != "Mul":
            continue
        data, const = n.input[0], n.input[1]
        if const not in inits and data in inits:
            data, const = const, data
        if const not in inits or len(shapes.get(data, [])) != 3:
            continue
        vec = numpy_helper.to_array(inits[const])
        if vec.ndim != 1 or vec.shape[0] != shapes[data][2]:
            continue
        name = const + ".diag"
        if name not in inits:
            t = numpy_helper.from_array(np.diag(vec).astype(np.float32), name)
            model.graph.initializer.append(t)
            inits[name] = t
        n.op_type = "MatMul"
        del n.input[:]
        n.input.extend([data, name])
        changed.append(n.name)
    # Drop initializers nothing uses any more.
    used = {i for n in model.graph.node for i in n.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return changed


def drop_final_softmax(model):
    """Output the CTC logits instead of probabilities: the last node must be the Softmax over classes."""
    last = model.graph.node[-1]
    out = model.graph.output[0]
    if last.op_type != "Softmax" or last.output[0] != out.name:
        raise SystemExit("the graph does not end with a Softmax")
    src = last.input[0]
    model.graph.node.remove(last)
    for n in model.graph.node:
        for i, name in enumerate(n.output):
            if name == src:
                n.output[i] = "logits"
    out.name = "logits"


def latin_subset(chars):
    """Characters of the list made only of Latin scripts, digits, punctuation and common symbols
    (code points below U+0250, Latin Extended Additional, General Punctuation, super/subscripts,
    currency and letterlike symbols): 620 of the 18708."""
    def ok(c):
        return all(ord(x) < 0x250 or 0x1E00 <= ord(x) < 0x1F00 or 0x2000 <= ord(x) < 0x2150 for x in c)
    return [c for c in chars if ok(c)]


def prune_classes(model, keep):
    """Keep only the CTC classes whose indices are in `keep` (sorted, 0 = blank first): slice the
    classifier's weight columns and bias. Softmax is then over the kept classes only."""
    inits = {t.name: t for t in model.graph.initializer}
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    head = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits
            and numpy_helper.to_array(inits[n.input[1]]).shape[-1] > 1000]
    if len(head) != 1:
        raise SystemExit("could not find the classifier MatMul")
    mm = head[0]
    add = consumers[mm.output[0]][0]
    if add.op_type != "Add" or add.input[1] not in inits:
        raise SystemExit("the classifier MatMul is not followed by a bias Add")
    for name in (mm.input[1], add.input[1]):
        a = numpy_helper.to_array(inits[name])
        inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(a[..., keep]), name))
    for o in model.graph.output:
        o.type.tensor_type.shape.dim[-1].dim_value = len(keep)


def rewrite(src_model_bytes, width, src_sha, logits=False, keep=None, chars=None):
    import onnxsim

    model = onnx.load_from_string(src_model_bytes)
    input_name = model.graph.input[0].name
    model, ok = onnxsim.simplify(
        model,
        overwrite_input_shapes={input_name: [1, 3, HEIGHT, width]},
        perform_optimization=False,
    )
    if not ok:
        raise SystemExit("onnxsim could not validate the simplified model")
    remove_identities(model.graph)
    shapes = tensor_ranks(model)
    n_axes = positive_reduce_axes(model, shapes)
    diag = vector_mul_to_diag_matmul(model, shapes)
    if keep is not None:
        prune_classes(model, keep)
    if logits:
        drop_final_softmax(model)
    # Reproducible metadata: keep the character list, replace producer information.
    model.producer_name = "lector rewrite_rec.py"
    model.producer_version = "1"
    model.doc_string = NOTICE.format(w=width, sha=src_sha)
    del model.graph.value_info[:]
    props = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith("onnxsim.")]
    if keep is not None:
        props = [(k, "\n".join(chars) if k == "character" else v) for k, v in props]
        model.doc_string += f" Classifier pruned to {len(keep)} classes (blank, {len(chars)} characters, space)."
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, dict(props))
    onnx.checker.check_model(model)
    return model, n_axes, diag


def check(orig_path, new_path, width):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    x = np.random.RandomState(width).uniform(-1, 1, (1, 3, HEIGHT, width)).astype(np.float32)
    a = ort.InferenceSession(orig_path, opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    b = ort.InferenceSession(new_path, opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    if new_path.endswith(".logits.onnx"):
        e = np.exp(b - b.max(axis=-1, keepdims=True))
        b = e / e.sum(axis=-1, keepdims=True)
    return float(np.abs(a - b).max())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="PP-OCRv6_rec_small.onnx from the rapidocr 3.10.0 wheel")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--widths", type=int, nargs="+", default=[320, 640, 960])
    ap.add_argument("--force", action="store_true", help="accept an input whose SHA-256 differs")
    ap.add_argument("--check", action="store_true", help="compare with the original in onnxruntime")
    ap.add_argument("--charset", choices=["all", "latin"], default="all",
                    help="latin: keep only the 620 Latin/digit/punctuation/symbol classes (+ blank, space); "
                         "the head gets ~30x smaller; results differ where the full model reads other scripts")
    ap.add_argument("--logits", action="store_true",
                    help="drop the final Softmax: output 'logits' (softmax them yourself; ~10%% faster in OpenCV)")
    args = ap.parse_args()

    src_sha = sha256_of(args.model)
    if src_sha != EXPECTED_SHA256 and not args.force:
        raise SystemExit(f"{args.model}: sha256 {src_sha}, expected {EXPECTED_SHA256} (use --force)")
    for w in args.widths:
        if w < 32 or w % 8 != 0:
            raise SystemExit(f"width {w}: must be a multiple of 8 and >= 32")
    os.makedirs(args.out_dir, exist_ok=True)
    with open(args.model, "rb") as f:
        src = f.read()

    meta = {p.key: p.value for p in onnx.load_from_string(src).metadata_props}
    chars = meta["character"].splitlines()
    keep = None
    suffix = ""
    if args.charset == "latin":
        sub = latin_subset(chars)
        index = {c: i + 1 for i, c in enumerate(chars)}
        keep = [0] + [index[c] for c in sub] + [len(chars) + 1]
        chars = sub
        suffix = ".latin"
    keys_path = os.path.join(args.out_dir, f"{STEM}{suffix}.keys.txt")
    with open(keys_path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(chars) + "\n")
    print(f"{sha256_of(keys_path)}  {keys_path}  ({len(chars)} characters)")

    for w in args.widths:
        model, n_axes, diag = rewrite(src, w, src_sha, args.logits, keep, chars)
        kind = suffix + (".logits" if args.logits else "")
        out = os.path.join(args.out_dir, f"{STEM}.opencv46.w{w}{kind}.onnx")
        onnx.save(model, out)
        info = f"(nodes {len(model.graph.node)}, reduce axes fixed {n_axes}, vector Mul -> diag MatMul {len(diag)})"
        print(f"{sha256_of(out)}  {out}  {info}", flush=True)
        if args.check and keep is None:
            print(f"  onnxruntime, original vs rewritten, random input: max |diff| = {check(args.model, out, w):.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
