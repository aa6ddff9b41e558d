#!/usr/bin/python3
"""Document page or scene photo, before OCR: cheap pixel statistics on the receipts and scene sets.

    /usr/bin/python3 benchmarks/classify_study.py [--data ../shared/data] [--side 256] [--list]

(needs Debian's python3-opencv, or run it with .venv-bench/bin/python). Every image is reduced so that its
longer side is --side pixels by area averaging (cv2.INTER_AREA; Leptonica: pixScaleAreaMap), then:

  L        BT.601 luma in integers, (299 R + 587 G + 114 B) / 1000 rounded down, 0..255 (the histogram that
           Sources/LectorOCR/PageClassifier.swift already builds)
  chroma   max(R, G, B) - min(R, G, B), 0..255

  bright     fraction of pixels with L >= 150 (--bright-level)       <- proposed rule
  chroma     mean chroma
  paper90    fraction of pixels with |L - p90| <= 30, p90 the 90th percentile of L <- proposed rule
             (PageClassifier.swift's "paper"; p90 = the lowest level whose cumulative count * 10 >= total * 9)
  nearmode   fraction of pixels with |L - mode of the 256-bin L histogram| <= 16
  spread     95th - 5th percentile of L
  std        standard deviation of L
  dark       fraction of pixels with L < 64
  edges      fraction of pixels where |L(x+1,y) - L(x,y)| > 24 or |L(x,y+1) - L(x,y)| > 24

Proposed rule: document if bright >= 0.5 and paper90 >= 0.4, else scene (bright alone already separates the
real images; paper90 adds resistance to over-exposed photos).
Compared with PageClassifier.swift's rule at the time of writing: document if paper90 >= 0.5 and chroma < 40.

Besides the 39 receipts (document) and 50 ICDAR 2015 photos (scene) it checks the rules on variants: the photos
turned grayscale (chroma 0), darkened to 40 % (dusk) or brightened to 130 % with clipping (over-exposed, the hard
case for a fixed threshold): all must stay scene; the receipts turned grayscale or dimmed to 70 % (an
under-exposed scan, paper at ~180): must stay document; and clean synthetic pages rendered here (black text on
white, from one line to very dense bold text; grey and pale-yellow paper; white-on-black is shown for
information, it is expected to fail). It prints each feature's min / median / max per set, each rule's accuracy,
the margins, and how bright moves with --side 128 and 512.
"""
import argparse
import glob
import os
import statistics
import sys

import cv2
import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DATA = os.environ.get("LECTOR_EVAL_DATA", os.path.join(ROOT, "..", "shared", "data"))
BRIGHT_L = 150
THRESHOLD = 0.5
PAPER90 = 0.4
FEATURES = ("bright", "chroma", "paper90", "nearmode", "spread", "std", "dark", "edges")


def reduce(bgr, side):
    h, w = bgr.shape[:2]
    s = min(1.0, side / max(h, w))
    if s == 1.0:
        return bgr
    return cv2.resize(bgr, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def features(bgr, side=256):
    im = reduce(bgr, side).astype(np.float32)
    u8 = im.astype(np.int32)
    luma = (299 * u8[..., 2] + 587 * u8[..., 1] + 114 * u8[..., 0]) // 1000
    lum = luma.astype(np.float32)
    chroma = im.max(axis=2) - im.min(axis=2)
    hist = np.bincount(luma.ravel(), minlength=256)
    mode = int(hist.argmax())
    p5, p95 = np.percentile(lum, [5, 95])
    p90 = int(np.searchsorted(np.cumsum(hist) * 10, luma.size * 9))
    paper90 = hist[max(0, p90 - 30):min(255, p90 + 30) + 1].sum() / luma.size
    gx = np.abs(np.diff(lum, axis=1))[:-1, :] > 24
    gy = np.abs(np.diff(lum, axis=0))[:, :-1] > 24
    return {
        "bright": float(hist[BRIGHT_L:].sum() / luma.size),
        "chroma": float(chroma.mean()),
        "paper90": float(paper90),
        "nearmode": float((np.abs(lum - mode) <= 16).mean()),
        "spread": float(p95 - p5),
        "std": float(lum.std()),
        "dark": float((lum < 64).mean()),
        "edges": float((gx | gy).mean()),
    }


def is_document(f):
    return f["bright"] >= THRESHOLD


def is_document_two(f):
    return f["bright"] >= THRESHOLD and f["paper90"] >= PAPER90


def is_document_current(f):
    return f["paper90"] >= 0.5 and f["chroma"] < 40


def gray(bgr):
    return cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def dim(bgr, factor):
    return np.clip(bgr.astype(np.float32) * factor + 0.5, 0, 255).astype(np.uint8)


def render_page(w, h, scale, thick, margin, spacing, ink=(0, 0, 0), paper=(255, 255, 255)):
    im = np.full((h, w, 3), paper, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    (_, th), base = cv2.getTextSize("Ag", font, scale, thick)
    words = "The quick brown fox jumps over the lazy dog 0123456789 invoice total RM 12.50".split()
    y, i = margin + th, 0
    while y < h - margin:
        x = margin
        while True:
            word = words[i % len(words)]
            (ww, _), _ = cv2.getTextSize(word + " ", font, scale, thick)
            if x + ww > w - margin:
                break
            cv2.putText(im, word, (x, y), font, scale, ink, thick, cv2.LINE_AA)
            x, i = x + ww, i + 1
        y += int(th * spacing + base)
    return im


def render_line(text, w, h, scale, thick):
    im = np.full((h, w, 3), 255, np.uint8)
    cv2.putText(im, text, (20, int(h * 0.65)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return im


def synthetic():
    return [
        ("one line 560x110", render_line("Document 0421", 560, 110, 1.5, 2), "document"),
        ("big text 800x300", render_line("BIG 42", 800, 300, 5, 10), "document"),
        ("A4 150 dpi 10 pt", render_page(1240, 1754, 0.5, 1, 60, 1.6), "document"),
        ("A4 300 dpi 10 pt", render_page(2480, 3508, 1.0, 2, 120, 1.6), "document"),
        ("A4 dense bold", render_page(1240, 1754, 0.7, 2, 40, 1.3), "document"),
        ("A4 very dense heavy", render_page(1240, 1754, 0.9, 3, 40, 1.1), "document"),
        ("A4 grey paper (200)", render_page(1240, 1754, 0.5, 1, 60, 1.6, paper=(200, 200, 200)), "document"),
        ("A4 pale yellow paper", render_page(1240, 1754, 0.5, 1, 60, 1.6, paper=(190, 240, 250)), "document"),
        ("A4 white on black", render_page(1240, 1754, 0.5, 1, 60, 1.6, ink=(255, 255, 255), paper=(0, 0, 0)),
         "document (expected miss)"),
    ]


def summary(values):
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


def main():
    global BRIGHT_L
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--bright-level", type=int, default=BRIGHT_L, help="luma level of 'bright' (default 150)")
    ap.add_argument("--list", action="store_true", help="print every image's features")
    args = ap.parse_args()
    BRIGHT_L = args.bright_level
    cv2.setNumThreads(1)

    receipts = sorted(glob.glob(os.path.join(args.data, "receipts-sroie", "images", "*.jpg")))
    scenes = sorted(glob.glob(os.path.join(args.data, "scene-icdar2015", "images", "*.jpg")))
    if not receipts or not scenes:
        print(f"classify_study: no images under {args.data}", file=sys.stderr)
        return 2
    sets = {"receipts": [], "scenes": [], "receipts gray": [], "scenes gray": [], "receipts dim": [], "scenes dark": [],
            "scenes bright": []}
    scale_rows = {"receipts": {}, "scenes": {}}
    for name, paths in (("receipts", receipts), ("scenes", scenes)):
        for path in paths:
            bgr = cv2.imread(path, cv2.IMREAD_COLOR)
            f = features(bgr, args.side)
            sets[name].append((os.path.basename(path), f))
            sets[name + " gray"].append((os.path.basename(path), features(gray(bgr), args.side)))
            if name == "receipts":  # an under-exposed scan: paper at ~180 instead of ~255
                sets["receipts dim"].append((os.path.basename(path), features(dim(bgr, 0.7), args.side)))
            else:  # a dusk / indoor photo
                sets["scenes dark"].append((os.path.basename(path), features(dim(bgr, 0.4), args.side)))
                # over-exposed (x 1.3, clipped): the hard case for a fixed luminance threshold
                sets["scenes bright"].append((os.path.basename(path), features(dim(bgr, 1.3), args.side)))
            for side in (128, 512):
                scale_rows[name].setdefault(side, []).append(features(bgr, side)["bright"])
    synth = [(label, features(im, args.side), want) for label, im, want in synthetic()]

    print(f"Features at longer side {args.side} px (min / median / max):\n")
    print("| feature | " + " | ".join(f"{k} ({len(v)})" for k, v in sets.items()) + " |")
    print("|---|" + "---|" * len(sets))
    for feat in FEATURES:
        print(f"| {feat} | " + " | ".join(summary([f[feat] for _, f in v]) for v in sets.values()) + " |")

    want = {"receipts": True, "scenes": False, "receipts gray": True, "scenes gray": False,
            "receipts dim": True, "scenes dark": False, "scenes bright": False}
    rules = ((f"proposed: bright (share of L >= {BRIGHT_L}) >= {THRESHOLD}", is_document),
             (f"proposed, two thresholds: bright >= {THRESHOLD} and paper90 >= {PAPER90}", is_document_two),
             ("current PageClassifier.swift: paper90 >= 0.5 and chroma < 40", is_document_current))
    for title, rule in rules:
        print(f"\nRule {title}:\n")
        total_ok = total = 0
        for name, rows in sets.items():
            ok = sum(1 for _, f in rows if rule(f) == want[name])
            wrong = [n for n, f in rows if rule(f) != want[name]]
            if name in ("receipts", "scenes"):
                total_ok, total = total_ok + ok, total + len(rows)
            print(f"  {name:14s} {ok}/{len(rows)} correct" + (f"  wrong: {', '.join(wrong)}" if wrong else ""))
        print(f"  accuracy on the {total} real images: {total_ok}/{total} = {total_ok / total:.3f}")
    doc_min = min(f["bright"] for _, f in sets["receipts"])
    scene_max = max(f["bright"] for _, f in sets["scenes"] + sets["scenes gray"])
    print(f"\nMargin of the one-threshold rule: lowest receipt {doc_min:.3f} (threshold + {doc_min - THRESHOLD:.3f}), "
          f"highest scene (colour or gray) {scene_max:.3f} (threshold - {THRESHOLD - scene_max:.3f})")
    docs = [f for name in ("receipts", "receipts gray", "receipts dim") for _, f in sets[name]] + \
        [f for label, f, _ in synth if "white on black" not in label]
    photos = [f for name in ("scenes", "scenes gray", "scenes dark", "scenes bright") for _, f in sets[name]]
    doc_margin = min(min(f["bright"] - THRESHOLD, f["paper90"] - PAPER90) for f in docs)
    scene_margin = min(max(THRESHOLD - f["bright"], PAPER90 - f["paper90"]) for f in photos)
    print(f"Margin of the two-threshold rule (every variant and synthetic page): documents pass both by >= "
          f"{doc_margin:.3f}, every photo fails one by >= {scene_margin:.3f}")

    print("\nSynthetic pages (rendered here):\n")
    print("| image | bright | chroma | paper90 | dark | edges | bright rule | two thresholds | current rule "
          "| expected |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, f, expected in synth:
        print(f"| {label} | {f['bright']:.3f} | {f['chroma']:.1f} | {f['paper90']:.3f} | {f['dark']:.3f} | "
              f"{f['edges']:.3f} | {'document' if is_document(f) else 'scene'} | "
              f"{'document' if is_document_two(f) else 'scene'} | "
              f"{'document' if is_document_current(f) else 'scene'} | {expected} |")

    print("\nScale sensitivity of bright (min / median / max):\n")
    for name, by_side in scale_rows.items():
        line = [f"{side} px: {summary(v)}" for side, v in sorted(by_side.items())]
        line.insert(1, f"{args.side} px: {summary([f['bright'] for _, f in sets[name]])}")
        print(f"  {name:9s} " + "   ".join(line))

    if args.list:
        print()
        for name, rows in sets.items():
            for n, f in rows:
                print(f"{name:14s} {n:14s} " + " ".join(f"{k}={f[k]:.3f}" for k in FEATURES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
