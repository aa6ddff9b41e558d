#!/usr/bin/env python3
"""OCR quality of `lector ocr` side by side with the tesseract CLI, on receipts and scene photos (`make eval`).

    benchmarks/eval.py [--lector .build/release/lector] [--limit N] [--python-baseline] [--peer rapidocr]
                       [--detector db|east] [--sets receipts,scenes] [--modes document,auto,scene,ppocr]
                       [--tesseract-config VAR=VALUE]... [--keep DIR]

Data (research use only, read in place, never copied): ../shared/data (or $LECTOR_EVAL_DATA, or --data):
  receipts-sroie/images/<id>.jpg + gt/<id>.gt.txt     39 scanned SROIE receipts, one GT text line per line
  scene-icdar2015/images/img_<n>.jpg + gt/gt_img_<n>.txt  50 ICDAR 2015 incidental scene photos, word quads

Systems:
  tesseract CLI   /usr/bin/tesseract 5 with OMP_THREAD_LIMIT=1, one process per image, default --psm 3:
                  receipts: `tesseract IMG -` (plain text); scenes: `tesseract IMG - tsv`, every word row
                  (level 5) with non-empty text, whatever its confidence (conf >= 0: all words the CLI outputs),
                  its axis-aligned box as polygon.
  lector MODE     `lector ocr FILES... --mode MODE --format json --output TMP`, one process per set and mode
                  (all files at once); receipts: document, auto, scene; scenes: scene, auto.
  python          (--python-baseline) benchmarks/scene_python.py in .venv-bench: OpenCV DNN + the same DB model
                  + pytesseract --psm 7 per region (benchmark P6), one process per set.
  rapidocr        (--peer rapidocr) the peer RapidOCR 3.10.0 from PyPI: benchmarks/rapidocr_peer.py in
                  .venv-rapidocr (benchmarks/setup-rapidocr-venv.sh), one process per set (all files at once):
                  PP-OCRv6 small det + rec and the mobile 0/180 classifier shipped in its wheel, on onnxruntime
                  (CPU), RapidOCR's defaults otherwise (its own thread settings; the environment is passed as is,
                  without OMP_THREAD_LIMIT). receipts: its lines joined by newlines; scenes: the whitespace-
                  separated words of its lines, boxed by its word boxes (return_word_box) with the fragments
                  it cuts inside a word merged (see the script's docstring).
--modes limits the lector columns to those modes (receipts: of document, auto, scene; scenes: of scene, auto)
and ppocr (`lector ocr --recognizer ppocr`: every page through the detector and the PP-OCRv6 recogniser, both sets);
--modes '' runs no lector column (and needs no lector binary), e.g. with --peer rapidocr while lector rebuilds;
--tesseract-config VAR=VALUE (repeatable) is passed to the tesseract CLI as `-c VAR=VALUE` (its column is then
labelled with it): what a Tesseract variable does to the CLI's text, e.g. tessedit_do_invert=0.
Seconds per image are wall-clock: per image for the CLI (process start included), whole run / images for
lector, python and rapidocr (one process start and model load included).

Receipts: bag-of-words precision / recall / F1, micro-averaged over the set (sums of matched, output and GT
tokens over all receipts). Tokens: the text is Unicode-NFKC-normalised, typographic quotes and dashes
(U+2018/2019/201A/201B -> ', U+201C/201D/201E -> ", U+2010-2015/2212 -> -) are made ASCII, case-folded
(str.casefold), then split on whitespace (str.split()); punctuation is kept, so "18," and "18" differ.
Matched tokens per receipt = size of the multiset intersection of output and GT tokens. Lector's text is the
document's top-level "text" (else the pages' "text", else their lines); GT is gt/<id>.gt.txt.

Scenes: end-to-end word detection + recognition, ICDAR 2015 style. GT lines are x1,y1,...,x4,y4,transcription
(only the first 8 commas split; BOM and CR stripped); transcription "###" = don't care. Detected words are the
words of every line of every page (their "polygon", else their "box"); a word whose text is empty after
stripping whitespace is dropped. Polygon IoU is exact for convex polygons (Sutherland-Hodgman clipping; a
non-convex or self-intersecting quad is replaced by its convex hull). Matching per image:
  1. pairs (detection, legible GT word) with IoU >= 0.5 and equal normalised text are matched one-to-one,
     greedily by decreasing IoU: true positives;
  2. an unmatched detection with IoU >= 0.5 against any "###" region is ignored (neither TP nor FP);
  3. the other detections are false positives; unmatched legible GT words are false negatives.
  Text normalisation (words): NFKC, casefold, strip whitespace, then strip leading and trailing characters
  of Unicode categories P* (punctuation) and S* (symbols) on both sides; if that leaves nothing, the
  case-folded word is kept as is (so "-" matches only "-").
  precision = TP / (detections - ignored), recall = TP / legible GT words, micro-averaged over the set.
  "det F1" is the same with the text test left out (detection quality alone), for information.

Classifier: share of pages whose "mode" is "document" for receipts and "scene" for scenes, under --mode auto.

Targets (printed, never the exit status): scene e2e F1 of lector (scene and auto) >= 2 x the CLI's;
receipts F1 of lector (document and auto) >= the CLI's. Exits non-zero only on errors (a tool failing,
a missing output file, missing data).
"""
import argparse
import collections
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DATA = os.environ.get("LECTOR_EVAL_DATA", os.path.join(ROOT, "..", "shared", "data"))
TESSERACT = "/usr/bin/tesseract"
PY_VENV = os.path.join(ROOT, ".venv-bench", "bin", "python")
PY_BASELINE = os.path.join(ROOT, "benchmarks", "scene_python.py")
RAPIDOCR_VENV = os.path.join(ROOT, ".venv-rapidocr", "bin", "python")
RAPIDOCR_PEER = os.path.join(ROOT, "benchmarks", "rapidocr_peer.py")
RAPIDOCR_LABEL = "rapidocr 3.10 (PP-OCRv6 small, onnxruntime)"
IOU_MIN = 0.5

errors = []


def log(message):
    print(f"eval: {message}", file=sys.stderr, flush=True)


def error(message):
    errors.append(message)
    log(f"ERROR: {message}")


def tool_env():
    env = dict(os.environ)
    env["OMP_THREAD_LIMIT"] = "1"
    return env


# ---- data ----------------------------------------------------------------------------------------------------

def stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def read_text(path):
    with open(path, "rb") as f:
        raw = f.read()
    return raw.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")


def load_receipts(data, limit):
    base = os.path.join(data, "receipts-sroie")
    images = sorted(os.path.join(base, "images", f) for f in os.listdir(os.path.join(base, "images"))
                    if f.lower().endswith((".jpg", ".jpeg", ".png")))
    items = []
    for img in images[:limit] if limit else images:
        gt = os.path.join(base, "gt", stem(img) + ".gt.txt")
        if not os.path.exists(gt):
            error(f"no ground truth {gt}")
            continue
        items.append((img, read_text(gt)))
    return items


def parse_icdar_gt(text):
    """[(quad [(x, y)] * 4, transcription, dont_care)] from an ICDAR 2015 GT file's text."""
    words = []
    for line in text.split("\n"):
        line = line.strip("\ufeff").strip()
        if not line:
            continue
        fields = line.split(",", 8)
        if len(fields) < 9:
            raise ValueError(f"bad GT line {line!r}")
        c = [float(v) for v in fields[:8]]
        transcription = fields[8]
        words.append(([(c[0], c[1]), (c[2], c[3]), (c[4], c[5]), (c[6], c[7])], transcription,
                      transcription == "###"))
    return words


def load_scenes(data, limit):
    base = os.path.join(data, "scene-icdar2015")
    names = [f for f in os.listdir(os.path.join(base, "images")) if f.startswith("img_") and f.endswith(".jpg")]
    names.sort(key=lambda f: int(stem(f)[4:]))
    items = []
    for name in names[:limit] if limit else names:
        gt = os.path.join(base, "gt", "gt_" + stem(name) + ".txt")
        if not os.path.exists(gt):
            error(f"no ground truth {gt}")
            continue
        items.append((os.path.join(base, "images", name), parse_icdar_gt(read_text(gt))))
    return items


# ---- receipts: bag of words ----------------------------------------------------------------------------------

_ASCII = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
                        "\u201c": '"', "\u201d": '"', "\u201e": '"',
                        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
                        "\u2212": "-"})


def tokens(text):
    return unicodedata.normalize("NFKC", text).translate(_ASCII).casefold().split()


def bag_counts(output_text, gt_text):
    out, gt = collections.Counter(tokens(output_text)), collections.Counter(tokens(gt_text))
    return sum((out & gt).values()), sum(out.values()), sum(gt.values())


def prf(tp, n_out, n_gt):
    p = tp / n_out if n_out else 0.0
    r = tp / n_gt if n_gt else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


# ---- scenes: polygons ----------------------------------------------------------------------------------------

def signed_area(poly):
    return 0.5 * sum(poly[i][0] * poly[(i + 1) % len(poly)][1] - poly[(i + 1) % len(poly)][0] * poly[i][1]
                     for i in range(len(poly)))


def convex_hull(points):
    """Andrew's monotone chain; counter-clockwise in a y-up frame (positive signed area)."""
    pts = sorted(set((float(x), float(y)) for x, y in points))
    if len(pts) <= 2:
        return pts

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def is_convex(poly):
    n, sign = len(poly), 0
    if n < 3:
        return False
    for i in range(n):
        a, b, c = poly[i], poly[(i + 1) % n], poly[(i + 2) % n]
        z = (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0])
        if z:
            s = 1 if z > 0 else -1
            if sign and s != sign:
                return False
            sign = s
    return sign != 0


def convex(poly):
    """The polygon as a convex one with positive signed area (itself if convex, else its convex hull)."""
    poly = [(float(x), float(y)) for x, y in poly]
    if not is_convex(poly):
        return convex_hull(poly)
    return poly if signed_area(poly) > 0 else poly[::-1]


def clip(subject, clipper):
    """Sutherland-Hodgman: subject polygon clipped by a convex clipper, both with positive signed area."""
    out = subject
    n = len(clipper)
    for i in range(n):
        if not out:
            break
        a, b = clipper[i], clipper[(i + 1) % n]
        ex, ey = b[0] - a[0], b[1] - a[1]

        def side(p):
            return ex * (p[1] - a[1]) - ey * (p[0] - a[0])
        inp, out = out, []
        for j in range(len(inp)):
            p, q = inp[j], inp[(j + 1) % len(inp)]
            sp, sq = side(p), side(q)
            if sp >= 0:
                out.append(p)
            if (sp >= 0) != (sq >= 0):
                t = sp / (sp - sq)
                out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
    return out


class Poly:
    __slots__ = ("pts", "area", "bbox")

    def __init__(self, points):
        self.pts = convex(points)
        self.area = signed_area(self.pts) if len(self.pts) >= 3 else 0.0
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        self.bbox = (min(xs), min(ys), max(xs), max(ys))


def iou(a, b):
    if a.area <= 0 or b.area <= 0:
        return 0.0
    if a.bbox[2] <= b.bbox[0] or b.bbox[2] <= a.bbox[0] or a.bbox[3] <= b.bbox[1] or b.bbox[3] <= a.bbox[1]:
        return 0.0
    inter = clip(a.pts, b.pts)
    inter_area = abs(signed_area(inter)) if len(inter) >= 3 else 0.0
    union = a.area + b.area - inter_area
    return inter_area / union if union > 0 else 0.0


def norm_word(s):
    s = unicodedata.normalize("NFKC", s).casefold().strip()
    i, j = 0, len(s)
    while i < j and unicodedata.category(s[i])[0] in "PS":
        i += 1
    while j > i and unicodedata.category(s[j - 1])[0] in "PS":
        j -= 1
    return s[i:j] or s


def e2e_counts(detections, gt):
    """detections: [(points, text)]; gt: [(points, text, dont_care)].
    Returns (tp, counted detections, legible GT, det_tp) where det_tp ignores the text."""
    dets = [(Poly(p), norm_word(t)) for p, t in detections if t.strip()]
    legible = [(Poly(p), norm_word(t)) for p, t, dc in gt if not dc]
    dont_care = [Poly(p) for p, t, dc in gt if dc]
    ious = [[iou(d[0], g[0]) for g in legible] for d in dets]

    def match(use_text):
        pairs = sorted(((ious[i][j], i, j) for i in range(len(dets)) for j in range(len(legible))
                        if ious[i][j] >= IOU_MIN and (not use_text or dets[i][1] == legible[j][1])), reverse=True)
        used_d, used_g = set(), set()
        for _, i, j in pairs:
            if i not in used_d and j not in used_g:
                used_d.add(i)
                used_g.add(j)
        ignored = sum(1 for i in range(len(dets)) if i not in used_d
                      and any(iou(dets[i][0], dc) >= IOU_MIN for dc in dont_care))
        return len(used_d), len(dets) - ignored

    tp, counted = match(True)
    det_tp, det_counted = match(False)
    return tp, counted, len(legible), det_tp, det_counted


# ---- outputs -------------------------------------------------------------------------------------------------

def doc_text(doc):
    if isinstance(doc.get("text"), str):
        return doc["text"]
    parts = []
    for page in doc.get("pages", []):
        if isinstance(page.get("text"), str):
            parts.append(page["text"])
        else:
            parts.extend(line.get("text", "") for line in page.get("lines", []))
    return "\n".join(parts)


def box_points(box):
    x, y, w, h = (float(box[k]) for k in ("x", "y", "width", "height"))
    return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]


def doc_words(doc):
    words = []
    for page in doc.get("pages", []):
        for line in page.get("lines", []):
            for w in line.get("words", []):
                pts = w.get("polygon") or (box_points(w["box"]) if w.get("box") else None)
                if pts and len(pts) >= 3:
                    words.append(([(p[0], p[1]) for p in pts], w.get("text", "")))
    return words


def doc_modes(doc):
    return [page.get("mode") for page in doc.get("pages", [])]


def run_batch(name, argv, files, outdir, verbose, env=None):
    """Runs one process over all files (environment: tool_env() unless env); returns ({stem: doc}, seconds)."""
    shutil.rmtree(outdir, ignore_errors=True)  # no stale output from an earlier --keep run
    os.makedirs(outdir)
    log(f"{name}: {len(files)} images")
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=tool_env() if env is None else env)
    seconds = time.perf_counter() - t0
    if verbose and proc.stderr:
        sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        error(f"{name}: exit status {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    docs = {}
    for f in files:
        path = os.path.join(outdir, stem(f) + ".json")
        try:
            with open(path) as fh:
                docs[stem(f)] = json.load(fh)
        except (OSError, ValueError) as e:
            error(f"{name}: no readable output for {f}: {e}")
    return docs, seconds


def run_lector(lector, mode, files, tmp, detector, verbose):
    """mode: a pipeline mode, or "ppocr" (--recognizer ppocr: every page through the detector)."""
    outdir = os.path.join(tmp, f"lector-{mode}-{stem(os.path.dirname(os.path.dirname(files[0])))}")
    extra = ["--recognizer", "ppocr"] if mode == "ppocr" else ["--mode", mode]
    argv = [lector, "ocr", *files, *extra, "--format", "json", "--output", outdir]
    if detector:
        argv += ["--detector", detector]
    return run_batch(f"lector --mode {mode}", argv, files, outdir, verbose)


def run_python(files, tmp, verbose):
    outdir = os.path.join(tmp, f"python-{stem(os.path.dirname(os.path.dirname(files[0])))}")
    return run_batch("python baseline", [PY_VENV, PY_BASELINE, *files, "--output", outdir], files, outdir, verbose)


def run_rapidocr(files, tmp, verbose):
    outdir = os.path.join(tmp, f"rapidocr-{stem(os.path.dirname(os.path.dirname(files[0])))}")
    return run_batch("rapidocr peer", [RAPIDOCR_VENV, RAPIDOCR_PEER, *files, "--output", outdir], files, outdir,
                     verbose, env=dict(os.environ))


def run_system(m, args, files, tmp):
    """({stem: doc}, seconds) of column m: a lector mode, "python" or "rapidocr"."""
    if m == "python":
        return run_python(files, tmp, args.verbose)
    if m == "rapidocr":
        return run_rapidocr(files, tmp, args.verbose)
    return run_lector(args.lector, m, files, tmp, args.detector, args.verbose)


def config_args(config):
    """["-c", "VAR=VALUE", ...] for the tesseract CLI."""
    return [arg for setting in config for arg in ("-c", setting)]


# The CLI's page segmentation mode (`--psm`; its default is 3). `-c tessedit_pageseg_mode=N` does not change it:
# the CLI sets the mode itself after reading -c.
PSM = 3


def tesseract_text(img, config=()):
    t0 = time.perf_counter()
    proc = subprocess.run([TESSERACT, img, "-", "--psm", str(PSM), *config_args(config)], capture_output=True, text=True,
                          env=tool_env())
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        error(f"tesseract {img}: exit status {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc.stdout, seconds


def tesseract_words(img, config=()):
    t0 = time.perf_counter()
    proc = subprocess.run([TESSERACT, img, "-", "--psm", str(PSM), *config_args(config), "tsv"], capture_output=True, text=True,
                          env=tool_env())
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        error(f"tesseract {img} tsv: exit status {proc.returncode}: {proc.stderr.strip()[-500:]}")
    words = []
    for row in proc.stdout.split("\n")[1:]:
        f = row.split("\t")
        if len(f) < 12 or f[0] != "5" or not f[11].strip():
            continue
        x, y, w, h = (float(v) for v in f[6:10])
        words.append(([(x, y), (x + w, y), (x + w, y + h), (x, y + h)], f[11]))
    return words, seconds


# ---- report --------------------------------------------------------------------------------------------------

def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{ncpu} cores ({cpu}), {mem}, {platform.system()} {platform.release()}"


def tesseract_version():
    try:
        out = subprocess.run([TESSERACT, "--version"], capture_output=True, text=True).stdout
        return out.split("\n")[0].strip()
    except OSError:
        return "?"


def fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lector", default=os.path.join(ROOT, ".build", "release", "lector"))
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--limit", type=int, default=0, help="first N images of each set (quick run)")
    ap.add_argument("--sets", default="receipts,scenes")
    ap.add_argument("--modes", default="document,auto,scene,ppocr",
                    help="lector columns to score: modes (receipts: document, auto, scene; scenes: scene, auto) and "
                         "ppocr (--recognizer ppocr, both sets)")
    ap.add_argument("--tesseract-config", action="append", default=[], metavar="VAR=VALUE",
                    help="passed to the tesseract CLI as -c VAR=VALUE (repeatable)")
    ap.add_argument("--psm", type=int, default=3, help="the tesseract CLI's page segmentation mode (default 3, its own)")
    ap.add_argument("--detector", choices=["db", "east"], help="passed to lector ocr --detector")
    ap.add_argument("--python-baseline", action="store_true",
                    help="also score benchmarks/scene_python.py (needs benchmarks/setup-bench-venv.sh)")
    ap.add_argument("--peer", choices=["rapidocr"], action="append", default=[],
                    help="also score a peer OCR system: rapidocr (needs benchmarks/setup-rapidocr-venv.sh)")
    ap.add_argument("--keep", help="keep every output JSON under this directory instead of a temporary one")
    ap.add_argument("--verbose", action="store_true", help="echo the tools' stderr (per-file timings)")
    args = ap.parse_args()
    args.peer = list(dict.fromkeys(args.peer))  # each peer once

    global PSM
    PSM = args.psm
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for setting in args.tesseract_config:
        if "=" not in setting:
            log(f"ERROR: --tesseract-config {setting!r} is not VAR=VALUE")
            return 2
    cli_config = "".join(f" -c {setting}" for setting in args.tesseract_config)
    for tool in ((args.lector,) if modes else ()) + (TESSERACT,):
        if not (os.path.isfile(tool) and os.access(tool, os.X_OK)):
            log(f"ERROR: {tool} is missing (lector: swift build -c release --product lector)")
            return 2
    if args.python_baseline and not os.access(PY_VENV, os.X_OK):
        log(f"ERROR: {PY_VENV} is missing: run benchmarks/setup-bench-venv.sh")
        return 2
    if "rapidocr" in args.peer and not os.access(RAPIDOCR_VENV, os.X_OK):
        log(f"ERROR: {RAPIDOCR_VENV} is missing: run benchmarks/setup-rapidocr-venv.sh")
        return 2
    if not os.path.isdir(args.data):
        log(f"ERROR: no data directory {args.data} (set LECTOR_EVAL_DATA or --data)")
        return 2

    tmp = args.keep or tempfile.mkdtemp(prefix="lector-eval-")
    os.makedirs(tmp, exist_ok=True)
    started = datetime.datetime.now()
    tables, targets, engines, peer_engines, notes = [], [], set(), set(), []
    try:
        if "receipts" in sets:
            items = load_receipts(args.data, args.limit)
            files = [img for img, _ in items]
            rows = []
            counts, secs = [0, 0, 0], 0.0
            for i, (img, gt) in enumerate(items):
                text, s = tesseract_text(img, args.tesseract_config)
                secs += s
                for k, v in enumerate(bag_counts(text, gt)):
                    counts[k] += v
            log(f"tesseract CLI receipts: {secs / len(items):.3f} s/image")
            rows.append((f"tesseract CLI (psm {PSM}{cli_config})", prf(*counts), counts, secs / len(items), None))
            systems = [(f"lector --mode {m}", m) for m in ("document", "auto", "scene") if m in modes]
            if "ppocr" in modes:
                systems.append(("lector --recognizer ppocr", "ppocr"))
            if args.python_baseline:
                systems.append(("python (OpenCV DNN + pytesseract psm 7)", "python"))
            if "rapidocr" in args.peer:
                systems.append((RAPIDOCR_LABEL, "rapidocr"))
            for label, m in systems:
                docs, seconds = run_system(m, args, files, tmp)
                c = [0, 0, 0]
                for img, gt in items:
                    doc = docs.get(stem(img))
                    if doc is None:
                        doc = {}
                    elif m == "rapidocr":
                        peer_engines.add(str(doc.get("engine")))
                    elif m != "python":
                        engines.add(str(doc.get("engine")))
                    for k, v in enumerate(bag_counts(doc_text(doc), gt)):
                        c[k] += v
                classified = None
                if m == "auto":
                    page_modes = [doc_modes(docs[stem(img)])[:1] for img, _ in items if stem(img) in docs]
                    classified = (sum(1 for md in page_modes if md == ["document"]), len(items))
                rows.append((label, prf(*c), c, seconds / len(items), classified))
            cli_f1 = rows[0][1][2]
            lines = [f"**Receipts** ({len(items)} SROIE scans, bag of words, micro-averaged)", "",
                     "| system | precision | recall | F1 | matched / output / GT tokens | s per image | auto → document |",
                     "|---|---|---|---|---|---|---|"]
            for label, (p, r, f1), c, s, cl in rows:
                lines.append(f"| {label} | {p:.3f} | {r:.3f} | **{f1:.3f}** | {c[0]} / {c[1]} / {c[2]} | {s:.2f} | "
                             f"{f'{cl[0]}/{cl[1]}' if cl else ''} |")
            tables.append("\n".join(lines))
            for label, (p, r, f1), *_ in rows:
                if label in ("lector --mode document", "lector --mode auto"):
                    targets.append(f"receipts F1 {label} {f1:.3f} >= CLI {cli_f1:.3f}: "
                                   f"{'MET' if f1 >= cli_f1 else 'NOT MET'}")

        if "scenes" in sets:
            items = load_scenes(args.data, args.limit)
            files = [img for img, _ in items]
            nonconvex = sum(1 for _, gt in items for p, _, _ in gt if not is_convex(p))
            if nonconvex:
                notes.append(f"{nonconvex} GT quads are not convex: scored as their convex hulls")
            rows = []
            c, secs = [0] * 5, 0.0
            for img, gt in items:
                words, s = tesseract_words(img, args.tesseract_config)
                secs += s
                c = [a + b for a, b in zip(c, e2e_counts(words, gt))]
            log(f"tesseract CLI scenes: {secs / len(items):.3f} s/image")
            rows.append((f"tesseract CLI (psm {PSM}{cli_config}, tsv words)", c, secs / len(items), None))
            systems = [(f"lector --mode {m}", m) for m in ("scene", "auto") if m in modes]
            if "ppocr" in modes:
                systems.append(("lector --recognizer ppocr", "ppocr"))
            if args.python_baseline:
                systems.append(("python (OpenCV DNN + pytesseract psm 7)", "python"))
            if "rapidocr" in args.peer:
                systems.append((RAPIDOCR_LABEL, "rapidocr"))
            for label, m in systems:
                docs, seconds = run_system(m, args, files, tmp)
                c = [0] * 5
                for img, gt in items:
                    doc = docs.get(stem(img))
                    if doc is not None and m == "rapidocr":
                        peer_engines.add(str(doc.get("engine")))
                    elif doc is not None and m != "python":
                        engines.add(str(doc.get("engine")))
                    c = [a + b for a, b in zip(c, e2e_counts(doc_words(doc or {}), gt))]
                classified = None
                if m == "auto":
                    page_modes = [doc_modes(docs[stem(img)])[:1] for img, _ in items if stem(img) in docs]
                    classified = (sum(1 for md in page_modes if md == ["scene"]), len(items))
                rows.append((label, c, seconds / len(items), classified))
            lines = [f"**Scenes** ({len(items)} ICDAR 2015 photos, {rows[0][1][2]} legible words; end-to-end words, "
                     f"IoU ≥ {IOU_MIN} and same text, `###` ignored)", "",
                     "| system | precision | recall | F1 | TP / counted detections / GT | det F1 (IoU only) "
                     "| s per image | auto → scene |",
                     "|---|---|---|---|---|---|---|---|"]
            f1s = {}
            for label, (tp, nd, ng, dtp, dnd), s, cl in rows:
                p, r, f1 = prf(tp, nd, ng)
                f1s[label] = f1
                df1 = prf(dtp, dnd, ng)[2]
                lines.append(f"| {label} | {p:.3f} | {r:.3f} | **{f1:.3f}** | {tp} / {nd} / {ng} | {df1:.3f} | "
                             f"{s:.2f} | {f'{cl[0]}/{cl[1]}' if cl else ''} |")
            tables.append("\n".join(lines))
            cli_f1 = f1s[rows[0][0]]
            for label in [label for label in ("lector --mode scene", "lector --mode auto") if label in f1s]:
                targets.append(f"scene e2e F1 {label} {f1s[label]:.3f} >= 2 x CLI {cli_f1:.3f} = {2 * cli_f1:.3f}: "
                               f"{'MET' if f1s[label] >= 2 * cli_f1 else 'NOT MET'}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"Command: `benchmarks/eval.py{' --limit ' + str(args.limit) if args.limit else ''}"
          f"{' --python-baseline' if args.python_baseline else ''}"
          f"{''.join(' --peer ' + p for p in args.peer)}"
          f"{' --detector ' + args.detector if args.detector else ''}"
          f"{' --psm ' + str(args.psm) if args.psm != 3 else ''}"
          f"{' --sets ' + args.sets if args.sets != 'receipts,scenes' else ''}"
          f"{' --modes ' + (args.modes or repr('')) if args.modes != 'document,auto,scene,ppocr' else ''}"
          f"{''.join(' --tesseract-config ' + c for c in args.tesseract_config)}` — {started:%Y-%m-%d %H:%M}, {machine()}; "
          f"{tesseract_version()} (OMP_THREAD_LIMIT=1); "
          f"lector engine: {(', '.join(sorted(engines)) or '?') if modes else 'not run'}; "
          f"{''.join(f'peer: {e}; ' for e in sorted(peer_engines))}"
          f"{(datetime.datetime.now() - started).total_seconds():.0f} s in all.")
    print()
    print("\n\n".join(tables))
    print()
    for note in notes:
        print(f"Note: {note}.")
    for t in targets:
        print(f"Target: {t}")
    if errors:
        print(f"\n{len(errors)} error(s):", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
