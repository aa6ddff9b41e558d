#!/usr/bin/python3
"""Run the rewritten nets in Debian 12's OpenCV 4.6 (python3-opencv) and save what is needed to compare them
with onnxruntime on the original models (compare_ort.py, which runs in the venv: onnxruntime and cv2 are not
in the same Python).

  /usr/bin/python3 check_opencv.py rec   --models DIR --out rec.npz IMAGE...   # recogniser: strings + outputs
  /usr/bin/python3 check_opencv.py cls   --models DIR --out cls.npz IMAGE...   # angle classifier, upright + 180
  /usr/bin/python3 check_opencv.py bench --models DIR [--cls-models DIR]      # CPU time per forward, RSS

The recogniser nets are found as PP-OCRv6_rec_small.opencv46.w<W>.latin.logits.onnx in DIR, the character
list as PP-OCRv6_rec_small.latin.keys.txt. Everything runs single-threaded (cv2.setNumThreads(1)).
"""
import argparse
import glob
import math
import os
import re
import statistics
import sys
import time

import cv2
import numpy as np

HEIGHT = 48
REC_GLOB = "PP-OCRv6_rec_small.opencv46.w*.latin.logits.onnx"
KEYS = "PP-OCRv6_rec_small.latin.keys.txt"
CLS = "ch_ppocr_mobile_v2.0_cls_mobile.opencv46.onnx"
CLS_W = 192


def blob(img, width, height=HEIGHT):
    """RapidOCR's resize_norm_img with a fixed padded width: keep the aspect ratio, height 48, width
    ceil(48*w/h) capped at `width`, INTER_LINEAR, (px/255-0.5)/0.5 in BGR order, right-pad with 0."""
    h, w = img.shape[:2]
    rw = min(width, int(math.ceil(height * w / h)))
    r = cv2.resize(img, (rw, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    r = (r / 255.0 - 0.5) / 0.5
    b = np.zeros((1, 3, height, width), np.float32)
    b[0, :, :, :rw] = r.transpose(2, 0, 1)
    return b, rw


def rec_nets(models):
    nets = {}
    for p in glob.glob(os.path.join(models, REC_GLOB)):
        w = int(re.search(r"\.w(\d+)\.", os.path.basename(p)).group(1))
        nets[w] = p
    if not nets:
        raise SystemExit(f"no {REC_GLOB} in {models}")
    return dict(sorted(nets.items()))


def load(path):
    net = cv2.dnn.readNetFromONNX(path)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return net


def forward(net, b):
    net.setInput(b)
    return net.forward()


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ctc_greedy(logits):
    """logits [T, C]: argmax per step, repeats collapsed, blank (0) dropped.
    Returns [(class, first_step, p at first_step)]."""
    p = softmax(logits)
    best = p.argmax(axis=1)
    out, prev = [], 0
    for t, c in enumerate(best):
        if c != 0 and c != prev:
            out.append((int(c), t, float(p[t, c])))
        prev = c
    return out


def to_text(chars, keys):
    space = len(keys) + 1
    return "".join(" " if c == space else keys[c - 1] for c, _, _ in chars)


def read_keys(models):
    with open(os.path.join(models, KEYS), encoding="utf-8", newline="\n") as f:
        data = f.read()
    assert data.endswith("\n")
    return data[:-1].split("\n")


def cmd_rec(a):
    cv2.setNumThreads(1)
    keys = read_keys(a.models)
    paths = rec_nets(a.models)
    nets = {w: load(p) for w, p in paths.items()}
    widths = list(nets)
    save = {"widths": np.array(widths)}
    for i, path in enumerate(a.images):
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        need = int(math.ceil(HEIGHT * img.shape[1] / img.shape[0]))
        chosen = next((w for w in widths if w >= need), widths[-1])
        # The chosen width (what a caller would use) and every wider one (more padding).
        for w in [w for w in widths if w >= chosen]:
            b, rw = blob(img, w)
            y = forward(nets[w], b)[0]
            assert y.shape == (w // 8, len(keys) + 2), y.shape
            chars = ctc_greedy(y)
            text = to_text(chars, keys)
            conf = float(np.mean([c[2] for c in chars])) if chars else 0.0
            mark = "*" if w == chosen else " "
            print(f"{mark} {os.path.basename(path)}  w={w:4d} resized_w={rw:4d} T={y.shape[0]:3d} "
                  f"conf={conf:.4f}  {text!r}")
            key = f"img{i}_w{w}"
            save[key + "_x"] = b
            save[key + "_y"] = y
            save[key + "_text"] = np.array(text)
            save[key + "_name"] = np.array(os.path.basename(path))
    rng = np.random.RandomState(0)
    for w in widths:
        b = rng.uniform(-1, 1, (1, 3, HEIGHT, w)).astype(np.float32)
        save[f"rand_w{w}_x"] = b
        save[f"rand_w{w}_y"] = forward(nets[w], b)[0]
    np.savez(a.out, **save)


def cmd_cls(a):
    cv2.setNumThreads(1)
    net = load(os.path.join(a.models, CLS))
    save = {}
    for i, path in enumerate(a.images):
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        for rot, im in (("0", img), ("180", cv2.rotate(img, cv2.ROTATE_180))):
            b, rw = blob(im, CLS_W)
            y = forward(net, b).reshape(-1)
            print(f"{os.path.basename(path)}  rotated {rot:>3}: p(0)={y[0]:.6g} p(180)={y[1]:.6g}")
            save[f"img{i}_r{rot}_x"] = b
            save[f"img{i}_r{rot}_y"] = y
            save[f"img{i}_r{rot}_name"] = np.array(os.path.basename(path))
    np.savez(a.out, **save)


def rss_mb():
    with open("/proc/self/status") as f:
        st = dict(l.split(":", 1) for l in f)
    return int(st["VmRSS"].split()[0]) / 1024, int(st["VmHWM"].split()[0]) / 1024


def cmd_bench(a):
    cv2.setNumThreads(1)
    base = rss_mb()[0]
    paths = rec_nets(a.models)
    t0 = time.process_time()
    nets = {w: load(p) for w, p in paths.items()}
    t_load = time.process_time() - t0
    after_load = rss_mb()[0]
    rng = np.random.RandomState(1)
    rows = []
    for w, net in nets.items():
        b = rng.uniform(-1, 1, (1, 3, HEIGHT, w)).astype(np.float32)
        t0 = time.process_time()
        forward(net, b)  # first forward: allocates the buffers
        first = time.process_time() - t0
        cpu, wall = [], []
        for _ in range(a.n):
            c0, w0 = time.process_time(), time.perf_counter()
            forward(net, b)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        rows.append((w, first, statistics.median(cpu), statistics.median(wall)))
    after_fwd, peak = rss_mb()
    print(f"OpenCV {cv2.__version__}, cv2.getNumThreads()={cv2.getNumThreads()}, median of {a.n} forwards")
    print("width  steps  first forward CPU  median CPU  median wall")
    for w, first, c, wl in rows:
        print(f"{w:5d}  {w // 8:5d}  {first * 1000:14.1f} ms  {c * 1000:7.1f} ms  {wl * 1000:8.1f} ms")
    print(f"load of {len(nets)} nets: {t_load:.2f} s CPU")
    print(f"RSS: {base:.0f} MB after import cv2; {after_load:.0f} MB after loading all ({after_load - base:+.0f} MB); "
          f"{after_fwd:.0f} MB after one forward pass each ({after_fwd - base:+.0f} MB); peak {peak:.0f} MB")
    if a.cls_models:
        net = load(os.path.join(a.cls_models, CLS))
        b = rng.uniform(-1, 1, (1, 3, HEIGHT, CLS_W)).astype(np.float32)
        forward(net, b)
        cpu = []
        for _ in range(a.n):
            c0 = time.process_time()
            forward(net, b)
            cpu.append(time.process_time() - c0)
        print(f"angle classifier 48x{CLS_W}: median CPU {statistics.median(cpu) * 1000:.1f} ms; "
              f"RSS now {rss_mb()[0]:.0f} MB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("rec", "cls"):
        p = sub.add_parser(name)
        p.add_argument("--models", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("images", nargs="+")
    p = sub.add_parser("bench")
    p.add_argument("--models", required=True)
    p.add_argument("--cls-models")
    p.add_argument("-n", type=int, default=20)
    a = ap.parse_args()
    {"rec": cmd_rec, "cls": cmd_cls, "bench": cmd_bench}[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
