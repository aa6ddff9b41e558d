#!/usr/bin/env python3
"""The "common Python approach" to scene-text OCR, baseline of benchmark P6 (see BENCHMARKS.md).

    .venv-bench/bin/python benchmarks/scene_python.py IMG... --output DIR [--lang eng]

(create the venv with benchmarks/setup-bench-venv.sh). Per image: OpenCV DNN (Debian's python3-opencv 4.6)
runs the same PP-OCRv4 DB text detector as Lector (deploy/models/ppocr-v4-det/ch_PP-OCRv4_det_infer.opencv46.onnx),
then pytesseract reads each detected region with `--psm 7` (one text line), one tesseract process per region,
as a typical Python script does.

  1. Preprocessing (deploy/models/ppocr-v4-det/SOURCE.txt): scale down (never up, INTER_AREA) keeping the aspect
     ratio to fit 960 x 960, pad bottom/right with the network's mean colour; blobFromImage(scale 1/(255*0.226),
     mean (123.675, 116.28, 103.53), swapRB true). One fixed input size: OpenCV 4.6 gives all-zero maps
     otherwise.
  2. DB post-processing on the raw probability map (content area only): binarise at 0.3, findContours
     (external), drop regions whose min-area rectangle has a side < 3 px, keep those whose mean probability
     inside the contour is >= 0.5, grow the min-area rectangle by d = area * 1.6 / perimeter on every side
     (what pyclipper's unclip + minAreaRect gives for a rectangle), drop it if a side is < 5 px, map back to
     image pixels, clip to the image.
  3. Perspective crop of each box (longer side horizontal; boxes with height >= 1.5 x width are turned 90
     degrees counter-clockwise as PaddleOCR does), BORDER_REPLICATE, cubic.
  4. pytesseract.image_to_data(crop, lang, config="--psm 7"): its words (empty ones dropped) mapped back
     through the inverse perspective transform into image pixels.

Writes DIR/<file stem>.json per image in Lector's `lector ocr --format json` shape (schemaVersion 1, pages with
lines with words, boxes, polygons clockwise from top-left in original pixels, confidence 0-100), prints one
timing line per image to stderr and a summary line to stdout:
    scene_python: images=N seconds=T seconds_per_image=T/N
cv2.setNumThreads(1) and OMP_THREAD_LIMIT=1 (for tesseract), like Lector's slots.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

import cv2  # noqa: E402  (Debian's python3-opencv, through the venv's system site-packages)
import numpy as np  # noqa: E402
import pytesseract  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MODEL = os.path.join(ROOT, "deploy", "models", "ppocr-v4-det", "ch_PP-OCRv4_det_infer.opencv46.onnx")

INPUT = 960
SCALE = 1.0 / (255.0 * 0.226)
MEAN_RGB = (123.675, 116.28, 103.53)
THRESH_BIN = 0.3
THRESH_BOX = 0.5
UNCLIP = 1.6
MIN_SIDE = 3.0
MIN_SIDE_UNCLIPPED = 5.0
MAX_CANDIDATES = 1000


def order_corners(pts):
    """4 points -> TL, TR, BR, BL: clockwise on screen (y down), starting at the corner whose outgoing edge
    points closest to +x (as Lector's lector_cv.cpp does)."""
    p = [tuple(map(float, q)) for q in pts]
    area2 = sum(p[i][0] * p[(i + 1) % 4][1] - p[(i + 1) % 4][0] * p[i][1] for i in range(4))
    if area2 < 0:
        p[1], p[3] = p[3], p[1]
    best, best_key = 0, -float("inf")
    for i in range(4):
        dx, dy = p[(i + 1) % 4][0] - p[i][0], p[(i + 1) % 4][1] - p[i][1]
        length = (dx * dx + dy * dy) ** 0.5
        if length <= 0:
            continue
        key = dx / length - 1e-6 * dy / length
        if key > best_key:
            best, best_key = i, key
    return [p[(best + i) % 4] for i in range(4)]


def detect(net, bgr):
    """DB text boxes of a BGR image: a list of (quad [TL, TR, BR, BL] in image pixels, score)."""
    h, w = bgr.shape[:2]
    s = min(INPUT / w, INPUT / h, 1.0)
    cw, ch = max(1, min(INPUT, round(w * s))), max(1, min(INPUT, round(h * s)))
    pad = tuple(round(v) for v in reversed(MEAN_RGB))  # BGR
    canvas = np.empty((INPUT, INPUT, 3), np.uint8)
    canvas[:] = pad
    canvas[:ch, :cw] = bgr if (cw, ch) == (w, h) else cv2.resize(bgr, (cw, ch), interpolation=cv2.INTER_AREA)
    blob = cv2.dnn.blobFromImage(canvas, SCALE, (INPUT, INPUT), MEAN_RGB, swapRB=True, crop=False)
    net.setInput(blob)
    prob = net.forward().reshape(INPUT, INPUT)[:ch, :cw]
    back_x, back_y = w / cw, h / ch

    bitmap = (prob > THRESH_BIN).astype(np.uint8) * 255
    contours, _ = cv2.findContours(bitmap, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for contour in contours[:MAX_CANDIDATES]:
        (cx, cy), (rw, rh), angle = cv2.minAreaRect(contour)
        if min(rw, rh) < MIN_SIDE:
            continue
        x, y, bw, bh = cv2.boundingRect(contour)
        mask = np.zeros((bh, bw), np.uint8)
        cv2.fillPoly(mask, [contour.reshape(-1, 2) - (x, y)], 1)
        score = float(cv2.mean(prob[y:y + bh, x:x + bw], mask)[0])
        if score < THRESH_BOX:
            continue
        d = rw * rh * UNCLIP / (2.0 * (rw + rh))
        rw, rh = rw + 2 * d, rh + 2 * d
        if min(rw, rh) < MIN_SIDE_UNCLIPPED:
            continue
        pts = cv2.boxPoints(((cx, cy), (rw, rh), angle))
        pts[:, 0] = np.clip(pts[:, 0] * back_x, 0, w - 1)
        pts[:, 1] = np.clip(pts[:, 1] * back_y, 0, h - 1)
        boxes.append((order_corners(pts), score))
    return reading_order(boxes)


def reading_order(boxes):
    """By top-left y, then left to right among neighbours on the same line (PaddleOCR's sorted_boxes)."""
    boxes.sort(key=lambda b: (b[0][0][1], b[0][0][0]))
    def height(q):
        return ((q[3][0] - q[0][0]) ** 2 + (q[3][1] - q[0][1]) ** 2) ** 0.5
    for i in range(1, len(boxes)):
        j = i
        while j > 0:
            a, b = boxes[j - 1][0], boxes[j][0]
            if abs(b[0][1] - a[0][1]) < 0.5 * min(height(a), height(b)) and b[0][0] < a[0][0]:
                boxes[j - 1], boxes[j] = boxes[j], boxes[j - 1]
                j -= 1
            else:
                break
    return boxes


def dist(a, b):
    return ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5


def crop(bgr, quad):
    """Perspective crop of quad (TL, TR, BR, BL); returns (crop, function mapping crop points to image points)."""
    tl, tr, br, bl = quad
    cw = max(1, int(round(max(dist(tl, tr), dist(bl, br)))))
    ch = max(1, int(round(max(dist(tl, bl), dist(tr, br)))))
    src = np.float32([tl, tr, br, bl])
    dst = np.float32([[0, 0], [cw, 0], [cw, ch], [0, ch]])
    m = cv2.getPerspectiveTransform(src, dst)
    img = cv2.warpPerspective(bgr, m, (cw, ch), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    rotated = ch >= 1.5 * cw
    if rotated:
        img = np.ascontiguousarray(np.rot90(img))  # 90 degrees counter-clockwise
    inv = np.linalg.inv(m)

    def back(points):
        pts = np.float32(points)
        if rotated:  # np.rot90 (CCW): rotated (x', y') comes from unrotated (cw - y', x')
            pts = np.stack([cw - pts[:, 1], pts[:, 0]], axis=1)
        return cv2.perspectiveTransform(pts.reshape(-1, 1, 2), inv).reshape(-1, 2)

    return img, back


def box_of(poly):
    xs, ys = [p[0] for p in poly], [p[1] for p in poly]
    x0, y0 = int(np.floor(min(xs))), int(np.floor(min(ys)))
    return {"x": x0, "y": y0, "width": int(np.ceil(max(xs))) - x0, "height": int(np.ceil(max(ys))) - y0}


def rounded(poly):
    return [[round(float(x), 1), round(float(y), 1)] for x, y in poly]


def recognize(bgr, quad, lang):
    img, back = crop(bgr, quad)
    data = pytesseract.image_to_data(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), lang=lang, config="--psm 7",
                                     output_type=pytesseract.Output.DICT)
    words = []
    for i, text in enumerate(data["text"]):
        text = (text or "").strip()
        if int(data["level"][i]) != 5 or not text:
            continue
        x, y, ww, hh = (int(data[k][i]) for k in ("left", "top", "width", "height"))
        poly = order_corners(back([[x, y], [x + ww, y], [x + ww, y + hh], [x, y + hh]]))
        conf = max(0.0, float(data["conf"][i]))
        words.append({"text": text, "box": box_of(poly), "polygon": rounded(poly), "confidence": round(conf, 2)})
    return words


def run(net, path, lang):
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not an image OpenCV reads")
    h, w = bgr.shape[:2]
    lines = []
    for quad, _score in detect(net, bgr):
        words = recognize(bgr, quad, lang)
        if not words:
            continue
        lines.append({
            "text": " ".join(wd["text"] for wd in words),
            "box": box_of(quad),
            "polygon": rounded(quad),
            "confidence": round(sum(wd["confidence"] for wd in words) / len(words), 2),
            "words": words,
        })
    text = "\n".join(line["text"] for line in lines)
    page = {"number": 1, "width": w, "height": h, "mode": "scene", "lines": lines, "text": text}
    return {"schemaVersion": 1,
            "engine": f"python opencv-dnn {cv2.__version__} ppocr-v4-det + pytesseract {pytesseract.__version__} "
                      f"(tesseract {pytesseract.get_tesseract_version()}, psm 7)",
            "language": lang, "pages": [page], "text": text}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="+")
    ap.add_argument("--output", required=True, help="directory for <stem>.json")
    ap.add_argument("--lang", default="eng")
    ap.add_argument("--model", default=MODEL)
    args = ap.parse_args()

    cv2.setNumThreads(1)
    os.makedirs(args.output, exist_ok=True)
    start = time.perf_counter()
    net = cv2.dnn.readNetFromONNX(args.model)
    failures = 0
    for path in args.images:
        t0 = time.perf_counter()
        try:
            result = run(net, path, args.lang)
        except Exception as e:  # one bad image must not stop the batch
            failures += 1
            print(f"scene_python: {path}: error: {e}", file=sys.stderr, flush=True)
            continue
        stem = os.path.splitext(os.path.basename(path))[0]
        with open(os.path.join(args.output, stem + ".json"), "w") as f:
            json.dump(result, f, ensure_ascii=False, indent=1)
        nwords = sum(len(line["words"]) for line in result["pages"][0]["lines"])
        print(f"scene_python: {path}: {time.perf_counter() - t0:.3f} s, "
              f"{len(result['pages'][0]['lines'])} lines, {nwords} words", file=sys.stderr, flush=True)
    total = time.perf_counter() - start
    n = len(args.images)
    print(f"scene_python: images={n} seconds={total:.2f} seconds_per_image={total / n:.3f} failures={failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
