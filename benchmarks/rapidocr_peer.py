#!/usr/bin/env python3
"""RapidOCR 3.10 (PP-OCRv6 small on ONNX Runtime), the peer column of benchmarks/eval.py.

    .venv-rapidocr/bin/python benchmarks/rapidocr_peer.py IMG... --output DIR

(create the venv with benchmarks/setup-rapidocr-venv.sh). One RapidOCR engine for all images, configured
explicitly (see ENGINE_PARAMS) to run on onnxruntime with the three models shipped inside the rapidocr wheel
(rapidocr/models/): PP-OCRv6_det_small.onnx (DB detector), ch_ppocr_mobile_v2.0_cls_mobile.onnx (0/180 degree
line classifier), PP-OCRv6_rec_small.onnx (recogniser; its character list is in the model's metadata, so no
dictionary file either). Setting Det/Cls/Rec.model_path skips RapidOCR's model-URL lookup and download; as a
guard, rapidocr's downloader is replaced by one that raises, so a configuration that would fetch anything
fails instead. Everything else is RapidOCR's default config.yaml: use_cls on, text_score 0.5, det
limit_side_len 736 (limit_type min), max_side_len 2000, box_thresh 0.5, unclip_ratio 1.6, and its thread
settings (intra/inter_op_num_threads -1: onnxruntime's own defaults), i.e. the peer at its best on this
machine. Only log_level is raised to "warning" (no output effect).

Output, per image, DIR/<file stem>.json shaped enough like `lector ocr --format json` for eval.py's readers:
    {"engine": "rapidocr 3.10.0 ...", "text": lines joined by "\\n" (RapidOCR's order),
     "pages": [{"lines": [{"text", "confidence", "polygon",
                           "words": [{"text", "confidence", "polygon": [[x, y]] * 4}]}]}]}
polygons in original image pixels, RapidOCR's corner order (top-left, top-right, bottom-right, bottom-left),
confidence 0-1 as RapidOCR gives it.

Words: the line's text split at whitespace (str.split()), each with a box from RapidOCR's own word boxes
(return_word_box=True), which are the line's box cut at the recogniser's CTC character columns. RapidOCR cuts
a line not only at spaces but also wherever two neighbouring characters are more than 5 CTC columns apart
(and CJK characters one by one), so widely spaced letters come out as fragments ("SKECHERS" as 8 one-letter
boxes, "shopping" as "shoppi" + "ng"); the fragments of one whitespace-separated word are merged into one box
(left edge of the first, right edge of the last). On the 50 ICDAR 2015 scenes this gives e2e F1 0.545 where
RapidOCR's raw fragments give 0.500 and the line quads cut at spaces in proportion to character offsets 0.476;
--raw-word-boxes keeps the raw fragments as words. Where RapidOCR gives no usable word boxes for a line (its
word list can be missing or, when an earlier line had none, shifted: each line's fragments are checked to
spell the line's text without whitespace), that line's quad is split at spaces in proportion to character
offsets instead; the number of such lines is printed (none on the shared data).

Prints one timing line per image to stderr and a summary line to stdout:
    rapidocr_peer: images=N seconds=T seconds_per_image=T/N load_seconds=L fallback_lines=F failures=K
T is the wall time from the script's start (imports and model load included) to after the last file is written.
"""
import argparse
import json
import os
import sys
import time

T_START = time.perf_counter()

import rapidocr  # noqa: E402
from rapidocr import EngineType, RapidOCR  # noqa: E402
from rapidocr.utils import download_file  # noqa: E402

MODELS = os.path.join(os.path.dirname(rapidocr.__file__), "models")
DET_MODEL = os.path.join(MODELS, "PP-OCRv6_det_small.onnx")
CLS_MODEL = os.path.join(MODELS, "ch_ppocr_mobile_v2.0_cls_mobile.onnx")
REC_MODEL = os.path.join(MODELS, "PP-OCRv6_rec_small.onnx")
ENGINE_PARAMS = {
    "Det.engine_type": EngineType.ONNXRUNTIME,
    "Cls.engine_type": EngineType.ONNXRUNTIME,
    "Rec.engine_type": EngineType.ONNXRUNTIME,
    "Det.model_path": DET_MODEL,
    "Cls.model_path": CLS_MODEL,
    "Rec.model_path": REC_MODEL,
    "Global.return_word_box": True,
    "Global.log_level": "warning",
}


def _no_download(*_args, **_kwargs):
    raise RuntimeError("rapidocr tried to download a file; rapidocr_peer.py must use the wheel's models only")


download_file.DownloadFile.run = staticmethod(_no_download)


def version():
    try:
        import importlib.metadata as m
        return f"rapidocr {m.version('rapidocr')} (onnxruntime {m.version('onnxruntime')}, PP-OCRv6 small)"
    except Exception:  # noqa: BLE001
        return "rapidocr"


def quad(points):
    return [[float(p[0]), float(p[1])] for p in points]


def split_line(text, poly):
    """[(word, polygon)]: the line quad (tl, tr, br, bl) cut at spaces, in proportion to character offsets."""
    n = len(text)
    if n == 0:
        return []
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = poly

    def at(t):  # top and bottom points at fraction t along the line
        return ([x0 + t * (x1 - x0), y0 + t * (y1 - y0)], [x3 + t * (x2 - x3), y3 + t * (y2 - y3)])
    words, i = [], 0
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        j = i
        while j < n and not text[j].isspace():
            j += 1
        (ta, ba), (tb, bb) = at(i / n), at(j / n)
        words.append((text[i:j], [ta, tb, bb, ba]))
        i = j
    return words


def usable_words(entry, line_text):
    """RapidOCR's word tuple for one line as [(word, confidence, polygon)], or None if it does not fit the line."""
    try:
        words = [(str(t), float(c), quad(b)) for t, c, b in entry if b is not None and len(b) == 4]
    except (TypeError, ValueError):
        return None
    if not words or "".join(w for w, _, _ in words) != "".join(line_text.split()):
        return None
    return words


def merge_at_spaces(fragments, line_text):
    """RapidOCR's fragments [(text, confidence, polygon)] merged into the line's whitespace-separated words, or None
    if they do not spell them. Merged box: top-left and bottom-left of the first fragment, top-right and
    bottom-right of the last; confidence: the lowest of the fragments'."""
    words, i = [], 0
    for token in line_text.split():
        group, spelled = [], ""
        while i < len(fragments) and len(spelled) < len(token):
            group.append(fragments[i])
            spelled += fragments[i][0]
            i += 1
        if not group or spelled != token:
            return None
        first, last = group[0][2], group[-1][2]
        words.append((token, min(c for _, c, _ in group), [first[0], last[1], last[2], first[3]]))
    return words if i == len(fragments) else None


def to_doc(result, raw_word_boxes=False):
    """(Lector-shaped document, number of lines whose words were split proportionally)."""
    boxes, txts, scores = result.boxes, result.txts, result.scores
    if boxes is None or txts is None or len(txts) == 0:
        return {"engine": version(), "text": "", "pages": [{"lines": []}]}, 0
    word_results = list(result.word_results or ())
    lines, fallback, k = [], 0, 0
    for box, text, score in zip(boxes, txts, scores):
        poly = quad(box)
        # word_results is aligned with the lines unless RapidOCR dropped an entry (a line without word boxes):
        # take the next entry only if it spells this line.
        words = usable_words(word_results[k], text) if k < len(word_results) else None
        if words is not None:
            k += 1
            if not raw_word_boxes:
                words = merge_at_spaces(words, text)
        if words is not None:
            line_words = [{"text": w, "confidence": c, "polygon": p} for w, c, p in words]
        else:
            fallback += 1
            line_words = [{"text": w, "confidence": float(score), "polygon": p} for w, p in split_line(text, poly)]
        lines.append({"text": text, "confidence": float(score), "polygon": poly, "words": line_words})
    return {"engine": version(), "text": "\n".join(line["text"] for line in lines), "pages": [{"lines": lines}]}, fallback


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="+")
    ap.add_argument("--output", required=True, help="directory for <stem>.json")
    ap.add_argument("--raw-word-boxes", action="store_true",
                    help="words = RapidOCR's word-box fragments as they are, not merged at the line's spaces")
    args = ap.parse_args()
    os.makedirs(args.output, exist_ok=True)

    for path in (DET_MODEL, CLS_MODEL, REC_MODEL):
        if not os.path.isfile(path):
            print(f"rapidocr_peer: missing model {path} (run benchmarks/setup-rapidocr-venv.sh)", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    engine = RapidOCR(params=ENGINE_PARAMS)
    # RapidOCR loads its models lazily on the first image; load them now so the first image's time is its own.
    for load in ("_load_det_model", "_load_cls_model", "_load_rec_model"):
        if hasattr(engine, load):
            getattr(engine, load)()
    load_seconds = time.perf_counter() - t0
    print(f"rapidocr_peer: {version()}; models {DET_MODEL}, {CLS_MODEL}, {REC_MODEL}; "
          f"loaded in {load_seconds:.3f} s", file=sys.stderr, flush=True)

    failures, fallback_lines = 0, 0
    for path in args.images:
        t1 = time.perf_counter()
        try:
            doc, fallback = to_doc(engine(path), args.raw_word_boxes)
        except Exception as e:  # noqa: BLE001  (one bad image must not hide the others' results)
            failures += 1
            print(f"rapidocr_peer: {path}: error: {e}", file=sys.stderr, flush=True)
            continue
        fallback_lines += fallback
        out = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".json")
        with open(out, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False)
        n_lines = len(doc["pages"][0]["lines"])
        print(f"rapidocr_peer: {path}: {time.perf_counter() - t1:.3f} s, {n_lines} lines"
              f"{f', {fallback} split proportionally' if fallback else ''}", file=sys.stderr, flush=True)
    total = time.perf_counter() - T_START
    n = len(args.images)
    print(f"rapidocr_peer: images={n} seconds={total:.2f} seconds_per_image={total / n:.3f} "
          f"load_seconds={load_seconds:.2f} fallback_lines={fallback_lines} failures={failures}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
