// lector_cv.cpp - implementation of the C API in include/lector_cv.h.
//
// Text detection over OpenCV 4.6 DNN:
//   * DB (PaddleOCR PP-OCR det, ONNX): the network outputs a per-pixel text
//     probability map; post-processing is done here by hand (binarise, find
//     contours, score, min-area rect, unclip) because
//     cv::dnn::TextDetectionModel_DB::detect() aborts on many real photos in
//     4.6 ("length > FLT_EPSILON in function 'unclip'").
//   * EAST (TensorFlow .pb or ONNX): score + geometry maps at 1/4 resolution,
//     decoded as in OpenCV's samples/dnn/text_detection.cpp, then rotated NMS.
//
// Every image is scaled (never up) and padded at the bottom/right to the net's
// single fixed input size ("letterbox"), because a cv::dnn::Net in 4.6 yields
// all-zero maps once its input size changes after the first forward pass.
//
// Error handling: every extern "C" entry point runs its body through
// guarded(), which converts Failure (our own errors), cv::Exception,
// std::bad_alloc, std::exception and anything else into a status code plus a
// message; no exception crosses the C boundary.

#include "lector_cv.h"

#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>
#include <opencv2/imgproc.hpp>
#ifndef LCV_NO_IMGCODECS
// imgcodecs pulls ~120 extra shared libraries on Debian 12 (GDAL, GDCM,
// poppler...): +50 MB RSS at start-up. Build with -DLCV_NO_IMGCODECS (and
// without -lopencv_imgcodecs) when images are decoded elsewhere (e.g. by
// Leptonica); lcv_image_decode() then returns LCV_EUNSUPPORTED.
#include <opencv2/imgcodecs.hpp>
#endif

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

// ---------------------------------------------------------------------------
// The opaque net handle.
// ---------------------------------------------------------------------------
struct lcv_net {
    cv::dnn::Net net;
    int kind = LCV_KIND_DB;
    int in_w = 0;
    int in_h = 0;
};

// A CTC recogniser: one net per fixed input width (OpenCV 4.6 bakes the width
// into the graph's Reshape constants, and a Net must keep its input size),
// loaded on first use.
struct lcv_rec {
    std::vector<std::string> paths;
    std::vector<int> widths;
    std::vector<cv::dnn::Net> nets;  // empty() until loaded
    int height = 48;
    int classes = 0;
};

struct lcv_angle {
    cv::dnn::Net net;
};

namespace {

// ---- constants --------------------------------------------------------------

// DB (PP-OCR) preprocessing: PaddleOCR normalises with mean .485/.456/.406 and
// std ~.226 on RGB in [0,1]; expressed for blobFromImage (mean in RGB order
// because swapRB = true).
const double kDbScale = 1.0 / (255.0 * 0.226);
const cv::Scalar kDbMeanRgb(123.675, 116.28, 103.53);
// EAST preprocessing (the original model's training means, RGB order).
const cv::Scalar kEastMeanRgb(123.68, 116.78, 103.94);

const char *const kEastInput = "input_images";
const char *const kEastScores = "feature_fusion/Conv_7/Sigmoid";
const char *const kEastGeometry = "feature_fusion/concat_3";

// DB post-processing limits (in probability-map pixels), as in PaddleOCR's
// DBPostProcess: ignore regions whose short side is < 3 px before unclipping
// or < 5 px after; examine at most 1000 contours.
const float kDbMinSide = 3.0f;
const float kDbMinSideUnclipped = 5.0f;
const size_t kDbMaxCandidates = 1000;

// Guards against absurd allocations in lcv_crop_quad.
const double kMaxCropSide = 32768.0;
const double kMaxCropPixels = 64.0 * 1024 * 1024;

// ---- errors -----------------------------------------------------------------

// An error raised by this library itself (bad argument, bad model...).
struct Failure {
    int code;
    std::string message;
};

[[noreturn]] void fail(int code, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    throw Failure{code, buf};
}

// Copy `msg` (prefixed by the function name) into the caller's buffer,
// truncating and always NUL-terminating. Trailing newlines are dropped
// (cv::Exception::what() ends with one).
void write_err(char *err, size_t errlen, const char *fn, const char *msg) noexcept {
    if (err == nullptr || errlen == 0) return;
    int n = std::snprintf(err, errlen, "%s: %s", fn, msg ? msg : "(no message)");
    if (n < 0) {
        err[0] = '\0';
        return;
    }
    size_t len = std::min(static_cast<size_t>(n), errlen - 1);
    while (len > 0 && (err[len - 1] == '\n' || err[len - 1] == '\r')) err[--len] = '\0';
}

// Run `body` (returning LCV_OK) and translate every exception into a status.
template <class Body>
int guarded(char *err, size_t errlen, const char *fn, Body &&body) noexcept {
    try {
        int rc = body();
        if (rc == LCV_OK && err != nullptr && errlen > 0) err[0] = '\0';
        return rc;
    } catch (const Failure &f) {
        write_err(err, errlen, fn, f.message.c_str());
        return f.code;
    } catch (const cv::Exception &e) {
        write_err(err, errlen, fn, e.what());
        return LCV_ECV;
    } catch (const std::bad_alloc &) {
        write_err(err, errlen, fn, "out of memory");
        return LCV_ENOMEM;
    } catch (const std::exception &e) {
        write_err(err, errlen, fn, e.what());
        return LCV_EINTERNAL;
    } catch (...) {
        write_err(err, errlen, fn, "unknown exception");
        return LCV_EINTERNAL;
    }
}

// ---- OpenCV threading ---------------------------------------------------------

std::atomic<bool> g_threads_user_set{false};
std::once_flag g_threads_once;

// Limit OpenCV to one thread the first time a net is loaded, unless the
// caller chose a value with lcv_set_num_threads() first.
void apply_default_threads() {
    std::call_once(g_threads_once, [] {
        if (!g_threads_user_set.load()) cv::setNumThreads(1);
    });
}

// ---- images -------------------------------------------------------------------

// View a caller image as a cv::Mat (no copy). Validates the struct.
cv::Mat wrap_image(const lcv_image *img) {
    if (img == nullptr) fail(LCV_EINVAL, "image is NULL");
    if (img->width <= 0 || img->height <= 0)
        fail(LCV_EINVAL, "invalid image size %dx%d", img->width, img->height);
    if (img->channels != 1 && img->channels != 3 && img->channels != 4)
        fail(LCV_EINVAL, "unsupported channel count %d (expected 1, 3 or 4)", img->channels);
    if (img->data == nullptr) fail(LCV_EINVAL, "image data is NULL");
    if (static_cast<double>(img->width) * img->height * img->channels >
        static_cast<double>(std::numeric_limits<int>::max()))
        fail(LCV_EINVAL, "image too large (%dx%dx%d)", img->width, img->height, img->channels);
    return cv::Mat(img->height, img->width, CV_8UC(img->channels), img->data);
}

// 3-channel BGR version of an 8-bit image (shares data when already BGR).
cv::Mat to_bgr(const cv::Mat &m) {
    if (m.channels() == 3) return m;
    cv::Mat out;
    cv::cvtColor(m, out, m.channels() == 1 ? cv::COLOR_GRAY2BGR : cv::COLOR_BGRA2BGR);
    return out;
}

// Copy an 8-bit Mat into a malloc'ed, tightly packed lcv_image.
void export_image(const cv::Mat &m, lcv_image *out) {
    CV_Assert(m.depth() == CV_8U && (m.channels() == 1 || m.channels() == 3 || m.channels() == 4));
    const size_t row = static_cast<size_t>(m.cols) * m.channels();
    auto *data = static_cast<unsigned char *>(std::malloc(row * m.rows > 0 ? row * m.rows : 1));
    if (data == nullptr) fail(LCV_ENOMEM, "cannot allocate %dx%d image", m.cols, m.rows);
    for (int r = 0; r < m.rows; ++r) std::memcpy(data + row * r, m.ptr(r), row);
    out->width = m.cols;
    out->height = m.rows;
    out->channels = m.channels();
    out->data = data;
}

// The image scaled into the top-left corner of a net-sized canvas.
struct Letterbox {
    cv::Mat canvas;  // in_h x in_w, CV_8UC3
    int content_w;   // size of the scaled image inside the canvas
    int content_h;
    double back_x;   // multiply canvas coordinates by these to get
    double back_y;   //   original image coordinates
};

// Scale (down only) to fit in_w x in_h keeping the aspect ratio and pad the
// rest with `pad` (the network's mean colour, i.e. ~0 after normalisation).
Letterbox letterbox(const cv::Mat &bgr, int in_w, int in_h, const cv::Scalar &pad) {
    const double s = std::min({static_cast<double>(in_w) / bgr.cols,
                               static_cast<double>(in_h) / bgr.rows, 1.0});
    Letterbox lb;
    lb.content_w = std::clamp(static_cast<int>(std::lround(bgr.cols * s)), 1, in_w);
    lb.content_h = std::clamp(static_cast<int>(std::lround(bgr.rows * s)), 1, in_h);
    lb.back_x = static_cast<double>(bgr.cols) / lb.content_w;
    lb.back_y = static_cast<double>(bgr.rows) / lb.content_h;
    lb.canvas = cv::Mat(in_h, in_w, CV_8UC3, pad);
    cv::Mat roi = lb.canvas(cv::Rect(0, 0, lb.content_w, lb.content_h));
    if (lb.content_w == bgr.cols && lb.content_h == bgr.rows)
        bgr.copyTo(roi);
    else
        cv::resize(bgr, roi, roi.size(), 0, 0, cv::INTER_AREA);
    return lb;
}

// BGR padding colour equal to an RGB-ordered blob mean.
cv::Scalar pad_for_mean(const cv::Scalar &mean_rgb) {
    return cv::Scalar(std::round(mean_rgb[2]), std::round(mean_rgb[1]), std::round(mean_rgb[0]));
}

// ---- quads --------------------------------------------------------------------

// Reorder 4 corners to TL, TR, BR, BL: clockwise on screen (y down), starting
// at the corner whose outgoing edge points closest to +x.
void order_corners(cv::Point2f p[4]) {
    double area2 = 0;
    for (int i = 0; i < 4; ++i) {
        const cv::Point2f &a = p[i], &b = p[(i + 1) % 4];
        area2 += static_cast<double>(a.x) * b.y - static_cast<double>(b.x) * a.y;
    }
    if (area2 < 0) std::swap(p[1], p[3]);  // counter-clockwise -> clockwise

    int best = 0;
    double best_key = -std::numeric_limits<double>::infinity();
    for (int i = 0; i < 4; ++i) {
        const double dx = p[(i + 1) % 4].x - p[i].x, dy = p[(i + 1) % 4].y - p[i].y;
        const double len = std::hypot(dx, dy);
        if (len <= 0) continue;
        // cos of the edge angle; ties (45 degrees) go to the upward edge.
        const double key = dx / len - 1e-6 * dy / len;
        if (key > best_key) {
            best_key = key;
            best = i;
        }
    }
    cv::Point2f tmp[4];
    for (int i = 0; i < 4; ++i) tmp[i] = p[(best + i) % 4];
    std::copy(tmp, tmp + 4, p);
}

lcv_quad make_quad(cv::Point2f p[4], float score) {
    order_corners(p);
    lcv_quad q;
    for (int i = 0; i < 4; ++i) {
        q.x[i] = p[i].x;
        q.y[i] = p[i].y;
    }
    q.score = score;
    return q;
}

void clip_quad(lcv_quad &q, int width, int height) {
    for (int i = 0; i < 4; ++i) {
        q.x[i] = std::clamp(q.x[i], 0.0f, static_cast<float>(width - 1));
        q.y[i] = std::clamp(q.y[i], 0.0f, static_cast<float>(height - 1));
    }
}

// Approximate reading order: by top-left y, then left-to-right among
// neighbours on the same line (like PaddleOCR's sorted_boxes).
void sort_reading_order(std::vector<lcv_quad> &qs) {
    // std::sort with a total order (std::stable_sort pulls in a deprecated libstdc++ helper under clang).
    std::sort(qs.begin(), qs.end(), [](const lcv_quad &a, const lcv_quad &b) {
        if (a.y[0] != b.y[0]) return a.y[0] < b.y[0];
        if (a.x[0] != b.x[0]) return a.x[0] < b.x[0];
        if (a.y[2] != b.y[2]) return a.y[2] < b.y[2];
        if (a.x[2] != b.x[2]) return a.x[2] < b.x[2];
        return a.score > b.score;
    });
    auto height = [](const lcv_quad &q) { return std::hypot(q.x[3] - q.x[0], q.y[3] - q.y[0]); };
    for (size_t i = 1; i < qs.size(); ++i) {
        for (size_t j = i; j > 0; --j) {
            const lcv_quad &a = qs[j - 1], &b = qs[j];
            const float tol = 0.5f * std::min(height(a), height(b));
            if (std::fabs(b.y[0] - a.y[0]) < tol && b.x[0] < a.x[0])
                std::swap(qs[j - 1], qs[j]);
            else
                break;
        }
    }
}

// Hand a vector of quads to the caller as a malloc'ed array.
void export_quads(const std::vector<lcv_quad> &qs, lcv_quad **out, int *count) {
    if (qs.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
        fail(LCV_EINTERNAL, "too many quads");
    lcv_quad *arr = nullptr;
    if (!qs.empty()) {
        arr = static_cast<lcv_quad *>(std::malloc(qs.size() * sizeof(lcv_quad)));
        if (arr == nullptr) fail(LCV_ENOMEM, "cannot allocate %zu quads", qs.size());
        std::copy(qs.begin(), qs.end(), arr);
    }
    *out = arr;
    *count = static_cast<int>(qs.size());
}

// ---- DB -----------------------------------------------------------------------

cv::Mat db_forward(lcv_net &n, const cv::Mat &canvas) {
    cv::Mat blob = cv::dnn::blobFromImage(canvas, kDbScale, cv::Size(n.in_w, n.in_h), kDbMeanRgb,
                                          /*swapRB=*/true, /*crop=*/false);
    n.net.setInput(blob);
    cv::Mat out = n.net.forward();
    // Accept [H,W], [1,H,W] or [1,1,H,W]: what matters is one map of H x W.
    if (out.type() != CV_32F || out.total() != static_cast<size_t>(n.in_w) * n.in_h)
        fail(LCV_ELOAD, "DB model output has %zu elements of type %d, expected one %dx%d float map",
             static_cast<size_t>(out.total()), out.type(), n.in_w, n.in_h);
    if (!out.isContinuous()) out = out.clone();
    return cv::Mat(n.in_h, n.in_w, CV_32F, out.ptr<float>()).clone();
}

// DB post-processing on a probability map `prob` (content area only).
// Returns quads in map coordinates.
std::vector<lcv_quad> db_postprocess(const cv::Mat &prob, float thr_bin, float thr_box, float unclip) {
    cv::Mat bin = prob > thr_bin;  // CV_8U, 0 / 255
    std::vector<std::vector<cv::Point>> contours;
    cv::findContours(bin, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_SIMPLE);

    std::vector<lcv_quad> quads;
    const size_t n = std::min(contours.size(), kDbMaxCandidates);
    const cv::Rect bounds(0, 0, prob.cols, prob.rows);
    for (size_t i = 0; i < n; ++i) {
        const std::vector<cv::Point> &c = contours[i];
        cv::RotatedRect rr = cv::minAreaRect(c);
        if (std::min(rr.size.width, rr.size.height) < kDbMinSide) continue;

        // Mean probability inside the contour.
        const cv::Rect br = cv::boundingRect(c) & bounds;
        if (br.empty()) continue;
        cv::Mat mask = cv::Mat::zeros(br.size(), CV_8U);
        std::vector<std::vector<cv::Point>> shifted(1);
        shifted[0].reserve(c.size());
        for (const cv::Point &p : c) shifted[0].push_back(p - br.tl());
        cv::fillPoly(mask, shifted, cv::Scalar(255));
        const double score = cv::mean(prob(br), mask)[0];
        if (score < thr_box) continue;

        // Unclip: offset the rectangle outwards by area * ratio / perimeter
        // (for a rectangle, the min-area rect of the offset polygon is the
        // rectangle grown by that distance on every side).
        const double w = rr.size.width, h = rr.size.height;
        const double perimeter = 2.0 * (w + h);
        if (perimeter <= 0) continue;
        const double d = w * h * unclip / perimeter;
        rr.size.width = static_cast<float>(w + 2 * d);
        rr.size.height = static_cast<float>(h + 2 * d);
        if (std::min(rr.size.width, rr.size.height) < kDbMinSideUnclipped) continue;

        cv::Point2f pts[4];
        rr.points(pts);
        quads.push_back(make_quad(pts, static_cast<float>(score)));
    }
    return quads;
}

// ---- EAST ---------------------------------------------------------------------

// Decode EAST maps (see lcv_east_decode) into quads, scaled by sx / sy.
std::vector<lcv_quad> east_decode(const float *scores, const float *geo, int mh, int mw, float thr,
                                  float nms, float sx, float sy) {
    const size_t plane = static_cast<size_t>(mh) * mw;
    std::vector<cv::RotatedRect> boxes;
    std::vector<float> confs;
    for (int y = 0; y < mh; ++y) {
        for (int x = 0; x < mw; ++x) {
            const size_t i = static_cast<size_t>(y) * mw + x;
            const float score = scores[i];
            if (!(score >= thr)) continue;  // also skips NaN
            const float d_top = geo[i], d_right = geo[plane + i];
            const float d_bottom = geo[2 * plane + i], d_left = geo[3 * plane + i];
            const float angle = geo[4 * plane + i];
            const float h = d_top + d_bottom, w = d_right + d_left;
            if (!(h > 0 && w > 0) || !std::isfinite(angle)) continue;
            const float cos_a = std::cos(angle), sin_a = std::sin(angle);
            // Bottom-right corner of the box, reached from the cell origin
            // along the box's own axes u = (cos, -sin) and v = (sin, cos).
            const cv::Point2f offset(x * 4.0f + cos_a * d_right + sin_a * d_bottom,
                                     y * 4.0f - sin_a * d_right + cos_a * d_bottom);
            const cv::Point2f top_right = offset + cv::Point2f(-sin_a * h, -cos_a * h);
            const cv::Point2f bottom_left = offset + cv::Point2f(-cos_a * w, sin_a * w);
            boxes.emplace_back(0.5f * (top_right + bottom_left), cv::Size2f(w, h),
                               static_cast<float>(-angle * 180.0 / CV_PI));
            confs.push_back(score);
        }
    }
    std::vector<int> keep;
    if (!boxes.empty()) cv::dnn::NMSBoxes(boxes, confs, thr, nms, keep);

    std::vector<lcv_quad> quads;
    quads.reserve(keep.size());
    for (int k : keep) {
        cv::Point2f pts[4];
        boxes[k].points(pts);
        for (cv::Point2f &p : pts) {
            p.x *= sx;
            p.y *= sy;
        }
        quads.push_back(make_quad(pts, confs[k]));
    }
    return quads;
}

// Run EAST; returns the score and geometry maps (copied, continuous).
void east_forward(lcv_net &n, const cv::Mat &canvas, cv::Mat &scores, cv::Mat &geometry) {
    cv::Mat blob = cv::dnn::blobFromImage(canvas, 1.0, cv::Size(n.in_w, n.in_h), kEastMeanRgb,
                                          /*swapRB=*/true, /*crop=*/false);
    n.net.setInput(blob);
    std::vector<cv::Mat> outs;
    n.net.forward(outs, std::vector<cv::String>{kEastScores, kEastGeometry});
    if (outs.size() != 2) fail(LCV_ELOAD, "EAST model returned %zu outputs, expected 2", outs.size());
    const cv::Mat &s = outs[0], &g = outs[1];
    if (s.dims != 4 || g.dims != 4 || s.size[0] != 1 || s.size[1] != 1 || g.size[0] != 1 ||
        g.size[1] != 5 || s.size[2] != g.size[2] || s.size[3] != g.size[3] || s.type() != CV_32F ||
        g.type() != CV_32F)
        fail(LCV_ELOAD, "EAST model outputs must be float 1x1xHxW scores and 1x5xHxW geometry");
    scores = s.clone();
    geometry = g.clone();
}

// Validate a path, pick the importer and read the network.
cv::dnn::Net read_net(const std::string &path, int kind) {
    FILE *f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) fail(LCV_ELOAD, "cannot open model file '%s': %s", path.c_str(), std::strerror(errno));
    std::fclose(f);

    std::string ext;
    const size_t dot = path.find_last_of('.');
    const size_t slash = path.find_last_of('/');
    if (dot != std::string::npos && (slash == std::string::npos || dot > slash)) ext = path.substr(dot + 1);
    for (char &ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));

    try {
        if (ext == "onnx") return cv::dnn::readNetFromONNX(path);
        if (kind == LCV_KIND_EAST && ext == "pb") return cv::dnn::readNetFromTensorflow(path);
    } catch (const cv::Exception &e) {
        fail(LCV_ELOAD, "cannot read model '%s': %s", path.c_str(), e.what());
    }
    fail(LCV_ELOAD, "unsupported model file extension '.%s' for %s (expected %s)", ext.c_str(),
         kind == LCV_KIND_DB ? "DB" : "EAST", kind == LCV_KIND_DB ? ".onnx" : ".pb or .onnx");
}

}  // namespace

// ===========================================================================
// C entry points
// ===========================================================================

extern "C" {

int lcv_image_decode(const unsigned char *bytes, size_t len, lcv_image *out, char *err, size_t errlen) {
    return guarded(err, errlen, "lcv_image_decode", [&] {
        if (out == nullptr) fail(LCV_EINVAL, "out is NULL");
        *out = lcv_image{0, 0, 0, nullptr};
        if (bytes == nullptr || len == 0) fail(LCV_EINVAL, "no input bytes");
        if (len > static_cast<size_t>(std::numeric_limits<int>::max())) fail(LCV_EINVAL, "input too large");
#ifdef LCV_NO_IMGCODECS
        fail(LCV_EUNSUPPORTED, "built without OpenCV imgcodecs (LCV_NO_IMGCODECS): decode images elsewhere");
#else
        const cv::Mat buf(1, static_cast<int>(len), CV_8U, const_cast<unsigned char *>(bytes));
        cv::Mat img;
        try {
            img = cv::imdecode(buf, cv::IMREAD_COLOR);
        } catch (const cv::Exception &e) {
            fail(LCV_EDECODE, "cannot decode image (%zu bytes): %s", len, e.what());
        }
        if (img.empty()) fail(LCV_EDECODE, "cannot decode image (%zu bytes): unknown or corrupt format", len);
        export_image(img, out);
#endif
        return LCV_OK;
    });
}

const char *lcv_version(void) {
    return CV_VERSION;
}

void lcv_image_free(lcv_image *img) {
    if (img == nullptr) return;
    std::free(img->data);
    *img = lcv_image{0, 0, 0, nullptr};
}

int lcv_set_num_threads(int n, char *err, size_t errlen) {
    return guarded(err, errlen, "lcv_set_num_threads", [&] {
        g_threads_user_set.store(true);
        cv::setNumThreads(n <= 0 ? -1 : n);
        return LCV_OK;
    });
}

int lcv_net_load(const char *model_path, int kind, int input_w, int input_h, lcv_net **out, char *err,
                 size_t errlen) {
    return guarded(err, errlen, "lcv_net_load", [&] {
        if (out == nullptr) fail(LCV_EINVAL, "out is NULL");
        *out = nullptr;
        if (model_path == nullptr || model_path[0] == '\0') fail(LCV_EINVAL, "model path is empty");
        if (kind != LCV_KIND_DB && kind != LCV_KIND_EAST) fail(LCV_EINVAL, "unknown detector kind %d", kind);
        if (input_w < 32 || input_h < 32 || input_w > 4096 || input_h > 4096 || input_w % 32 != 0 ||
            input_h % 32 != 0)
            fail(LCV_EINVAL, "input size %dx%d must be multiples of 32 in [32, 4096]", input_w, input_h);
        apply_default_threads();

        auto holder = std::make_unique<lcv_net>();
        holder->kind = kind;
        holder->in_w = input_w;
        holder->in_h = input_h;
        holder->net = read_net(model_path, kind);
        if (holder->net.empty()) fail(LCV_ELOAD, "model '%s' contains no layers", model_path);
        holder->net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
        holder->net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);

        // Warm-up forward pass at the fixed size: fixes the input shape for
        // the life of the net and validates the outputs now.
        const cv::Mat blank(input_h, input_w, CV_8UC3, cv::Scalar::all(0));
        try {
            if (kind == LCV_KIND_DB) {
                (void)db_forward(*holder, blank);
            } else {
                cv::Mat s, g;
                east_forward(*holder, blank, s, g);
            }
        } catch (const cv::Exception &e) {
            fail(LCV_ELOAD, "model '%s' failed its test run at %dx%d: %s", model_path, input_w, input_h,
                 e.what());
        }
        *out = holder.release();
        return LCV_OK;
    });
}

void lcv_net_free(lcv_net *net) { delete net; }

int lcv_detect(lcv_net *net, const lcv_image *img, float threshold_bin, float threshold_box, float nms,
               float unclip, lcv_quad **out, int *count, char *err, size_t errlen) {
    return guarded(err, errlen, "lcv_detect", [&] {
        if (out == nullptr || count == nullptr) fail(LCV_EINVAL, "out or count is NULL");
        *out = nullptr;
        *count = 0;
        if (net == nullptr) fail(LCV_EINVAL, "net is NULL");
        const cv::Mat src = wrap_image(img);
        if (!std::isfinite(threshold_bin) || !std::isfinite(threshold_box) || !std::isfinite(nms) ||
            !std::isfinite(unclip))
            fail(LCV_EINVAL, "thresholds must be finite");

        const cv::Mat bgr = to_bgr(src);
        std::vector<lcv_quad> quads;
        if (net->kind == LCV_KIND_DB) {
            if (unclip < 0) fail(LCV_EINVAL, "unclip ratio must be >= 0");
            const Letterbox lb = letterbox(bgr, net->in_w, net->in_h, pad_for_mean(kDbMeanRgb));
            const cv::Mat prob = db_forward(*net, lb.canvas);
            quads = db_postprocess(prob(cv::Rect(0, 0, lb.content_w, lb.content_h)), threshold_bin,
                                   threshold_box, unclip);
            for (lcv_quad &q : quads)
                for (int i = 0; i < 4; ++i) {
                    q.x[i] = static_cast<float>(q.x[i] * lb.back_x);
                    q.y[i] = static_cast<float>(q.y[i] * lb.back_y);
                }
        } else {
            if (nms < 0 || nms > 1) fail(LCV_EINVAL, "nms threshold must be in [0, 1]");
            const Letterbox lb = letterbox(bgr, net->in_w, net->in_h, pad_for_mean(kEastMeanRgb));
            cv::Mat scores, geometry;
            east_forward(*net, lb.canvas, scores, geometry);
            const int mh = scores.size[2], mw = scores.size[3];
            // Ignore cells that lie in the padding.
            float *s = scores.ptr<float>();
            for (int y = 0; y < mh; ++y)
                for (int x = 0; x < mw; ++x)
                    if (x * 4 >= lb.content_w || y * 4 >= lb.content_h) s[static_cast<size_t>(y) * mw + x] = 0.f;
            quads = east_decode(s, geometry.ptr<float>(), mh, mw, threshold_box, nms,
                                static_cast<float>(lb.back_x), static_cast<float>(lb.back_y));
        }
        for (lcv_quad &q : quads) clip_quad(q, src.cols, src.rows);
        sort_reading_order(quads);
        export_quads(quads, out, count);
        return LCV_OK;
    });
}

void lcv_quads_free(lcv_quad *quads) { std::free(quads); }

int lcv_east_decode(const float *scores, const float *geometry, int map_h, int map_w, float score_threshold,
                    float nms, float scale_x, float scale_y, lcv_quad **out, int *count, char *err,
                    size_t errlen) {
    return guarded(err, errlen, "lcv_east_decode", [&] {
        if (out == nullptr || count == nullptr) fail(LCV_EINVAL, "out or count is NULL");
        *out = nullptr;
        *count = 0;
        if (scores == nullptr || geometry == nullptr) fail(LCV_EINVAL, "scores or geometry is NULL");
        if (map_h <= 0 || map_w <= 0 || map_h > 16384 || map_w > 16384)
            fail(LCV_EINVAL, "invalid map size %dx%d", map_w, map_h);
        if (!std::isfinite(score_threshold) || !(nms >= 0 && nms <= 1))
            fail(LCV_EINVAL, "invalid thresholds (score %g, nms %g)", score_threshold, nms);
        if (!(scale_x > 0 && scale_y > 0 && std::isfinite(scale_x) && std::isfinite(scale_y)))
            fail(LCV_EINVAL, "scales must be positive and finite");
        std::vector<lcv_quad> quads =
            east_decode(scores, geometry, map_h, map_w, score_threshold, nms, scale_x, scale_y);
        sort_reading_order(quads);
        export_quads(quads, out, count);
        return LCV_OK;
    });
}

int lcv_crop_quad(const lcv_image *img, const lcv_quad *q, lcv_image *out, char *err, size_t errlen) {
    return guarded(err, errlen, "lcv_crop_quad", [&] {
        if (out == nullptr) fail(LCV_EINVAL, "out is NULL");
        *out = lcv_image{0, 0, 0, nullptr};
        const cv::Mat src = wrap_image(img);
        if (q == nullptr) fail(LCV_EINVAL, "quad is NULL");
        cv::Point2f p[4];
        for (int i = 0; i < 4; ++i) {
            if (!std::isfinite(q->x[i]) || !std::isfinite(q->y[i])) fail(LCV_EINVAL, "quad has non-finite points");
            p[i] = cv::Point2f(q->x[i], q->y[i]);
        }
        auto dist = [](const cv::Point2f &a, const cv::Point2f &b) { return std::hypot(a.x - b.x, a.y - b.y); };
        // Along-line length (TL-TR / BL-BR) and across-line height (TR-BR / TL-BL).
        const double len = std::max(dist(p[0], p[1]), dist(p[3], p[2]));
        const double hgt = std::max(dist(p[1], p[2]), dist(p[0], p[3]));
        const bool vertical = hgt > 1.5 * len;
        const double out_w = std::max(1.0, std::round(vertical ? hgt : len));
        const double out_h = std::max(1.0, std::round(vertical ? len : hgt));
        if (out_w > kMaxCropSide || out_h > kMaxCropSide || out_w * out_h > kMaxCropPixels)
            fail(LCV_EINVAL, "crop of %.0fx%.0f pixels is too large", out_w, out_h);

        const float W = static_cast<float>(out_w), H = static_cast<float>(out_h);
        const cv::Point2f dst[4] = {{0, 0}, {W, 0}, {W, H}, {0, H}};
        // Vertical run read bottom-to-top: BL becomes the crop's top-left
        // (the warp includes a 90-degree clockwise rotation).
        const cv::Point2f srcq[4] = {vertical ? p[3] : p[0], vertical ? p[0] : p[1],
                                     vertical ? p[1] : p[2], vertical ? p[2] : p[3]};
        const cv::Mat m = cv::getPerspectiveTransform(srcq, dst);
        cv::Mat warped;
        cv::warpPerspective(src, warped, m, cv::Size(static_cast<int>(out_w), static_cast<int>(out_h)),
                            cv::INTER_LINEAR, cv::BORDER_REPLICATE);
        export_image(warped, out);
        return LCV_OK;
    });
}

}  // extern "C"

// ---- line recognition -----------------------------------------------------------

namespace {

const int kAngleWidth = 192;
const int kAngleHeight = 48;

// The crop as a 1 x 3 x height x width blob: resized to `height` keeping the
// aspect ratio (at most `width` wide), (px/255 - 0.5) / 0.5 in BGR order,
// zeros (mid-grey) to the right. *used: the resized crop's width.
cv::Mat line_blob(const cv::Mat &crop, int height, int width, int *used) {
    const cv::Mat bgr = to_bgr(crop);
    const double ratio = static_cast<double>(bgr.cols) / bgr.rows;
    const int w = static_cast<int>(std::clamp(std::ceil(height * ratio), 1.0, static_cast<double>(width)));
    cv::Mat resized;
    cv::resize(bgr, resized, cv::Size(w, height), 0, 0, cv::INTER_LINEAR);
    const int dims[4] = {1, 3, height, width};
    cv::Mat blob(4, dims, CV_32F, cv::Scalar::all(0));
    for (int c = 0; c < 3; ++c) {
        for (int y = 0; y < height; ++y) {
            const unsigned char *src = resized.ptr<unsigned char>(y);
            float *dst = blob.ptr<float>(0, c, y);
            for (int x = 0; x < w; ++x) dst[x] = src[x * 3 + c] / 127.5f - 1.0f;
        }
    }
    if (used != nullptr) *used = w;
    return blob;
}

cv::dnn::Net load_onnx(const std::string &path) {
    cv::dnn::Net net;
    try {
        net = cv::dnn::readNetFromONNX(path);
    } catch (const cv::Exception &e) {
        fail(LCV_ELOAD, "cannot load '%s': %s", path.c_str(), e.what());
    }
    if (net.empty()) fail(LCV_ELOAD, "model '%s' contains no layers", path.c_str());
    net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
    net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
    return net;
}

// The net of width index i, loaded (and test-run, its output shape checked)
// on first use.
cv::dnn::Net &rec_net(lcv_rec &rec, size_t i) {
    cv::dnn::Net &net = rec.nets[i];
    if (!net.empty()) return net;
    cv::dnn::Net fresh = load_onnx(rec.paths[i]);
    const int dims[4] = {1, 3, rec.height, rec.widths[i]};
    fresh.setInput(cv::Mat(4, dims, CV_32F, cv::Scalar::all(0)));
    cv::Mat out;
    try {
        out = fresh.forward();
    } catch (const cv::Exception &e) {
        fail(LCV_ELOAD, "model '%s' failed its test run at %dx%d: %s", rec.paths[i].c_str(), rec.widths[i],
             rec.height, e.what());
    }
    if (out.dims != 3 || out.size[0] != 1 || out.size[1] != rec.widths[i] / 8)
        fail(LCV_ELOAD, "model '%s' gives an output of the wrong shape for width %d", rec.paths[i].c_str(),
             rec.widths[i]);
    if (rec.classes == 0) rec.classes = out.size[2];
    if (out.size[2] != rec.classes || rec.classes < 2)
        fail(LCV_ELOAD, "model '%s' has %d classes, not %d", rec.paths[i].c_str(), out.size[2], rec.classes);
    net = fresh;
    return net;
}

}  // namespace

extern "C" {

int lcv_rec_load(const char *const *model_paths, const int *widths, int count, int height, lcv_rec **out,
                 char *err, size_t errlen) {
    return guarded(err, errlen, "lcv_rec_load", [&] {
        if (out == nullptr) fail(LCV_EINVAL, "out is NULL");
        *out = nullptr;
        if (model_paths == nullptr || widths == nullptr || count <= 0 || count > 64)
            fail(LCV_EINVAL, "need 1 to 64 networks");
        if (height < 8 || height > 256) fail(LCV_EINVAL, "height %d out of range", height);
        apply_default_threads();
        auto rec = std::make_unique<lcv_rec>();
        rec->height = height;
        for (int i = 0; i < count; ++i) {
            if (model_paths[i] == nullptr || model_paths[i][0] == '\0') fail(LCV_EINVAL, "model path %d is empty", i);
            if (widths[i] < 8 || widths[i] > 4096 || widths[i] % 8 != 0 || (i > 0 && widths[i] <= widths[i - 1]))
                fail(LCV_EINVAL, "widths must be increasing multiples of 8 in [8, 4096]");
            FILE *f = std::fopen(model_paths[i], "rb");
            if (f == nullptr) fail(LCV_ELOAD, "cannot read '%s': %s", model_paths[i], std::strerror(errno));
            std::fclose(f);
            rec->paths.emplace_back(model_paths[i]);
            rec->widths.push_back(widths[i]);
        }
        rec->nets.resize(static_cast<size_t>(count));
        (void)rec_net(*rec, 0);
        *out = rec.release();
        return LCV_OK;
    });
}

void lcv_rec_free(lcv_rec *rec) { delete rec; }

int lcv_rec_max_steps(const lcv_rec *rec) { return rec == nullptr ? 0 : rec->widths.back() / 8; }

int lcv_rec_classes(const lcv_rec *rec) { return rec == nullptr ? 0 : rec->classes; }

int lcv_recognize(lcv_rec *rec, const lcv_image *crop, int *classes, float *probs, int capacity, int *steps,
                  float *step_width, char *err, size_t errlen) {
    if (steps != nullptr) *steps = 0;
    return guarded(err, errlen, "lcv_recognize", [&] {
        if (rec == nullptr || classes == nullptr || probs == nullptr || steps == nullptr || step_width == nullptr)
            fail(LCV_EINVAL, "NULL argument");
        if (capacity < lcv_rec_max_steps(rec)) fail(LCV_EINVAL, "capacity %d < %d steps", capacity, lcv_rec_max_steps(rec));
        const cv::Mat src = wrap_image(crop);
        const double ratio = static_cast<double>(src.cols) / src.rows;
        const double wanted = std::ceil(rec->height * ratio);
        size_t index = rec->widths.size() - 1;
        for (size_t i = 0; i < rec->widths.size(); ++i) {
            if (rec->widths[i] >= wanted) {
                index = i;
                break;
            }
        }
        cv::dnn::Net &net = rec_net(*rec, index);
        int used = 0;
        net.setInput(line_blob(src, rec->height, rec->widths[index], &used));
        const cv::Mat out = net.forward();
        const int total = out.size[1], n = out.size[2];
        const int covered = std::clamp((used + 7) / 8, 1, total);
        for (int t = 0; t < covered; ++t) {
            const float *row = out.ptr<float>(0, t);
            int best = 0;
            for (int c = 1; c < n; ++c)
                if (row[c] > row[best]) best = c;
            double sum = 0;
            for (int c = 0; c < n; ++c) sum += std::exp(static_cast<double>(row[c] - row[best]));
            classes[t] = best;
            probs[t] = static_cast<float>(1.0 / sum);
        }
        *steps = covered;
        *step_width = static_cast<float>(8.0 * src.cols / used);
        return LCV_OK;
    });
}

int lcv_angle_load(const char *model_path, lcv_angle **out, char *err, size_t errlen) {
    return guarded(err, errlen, "lcv_angle_load", [&] {
        if (out == nullptr) fail(LCV_EINVAL, "out is NULL");
        *out = nullptr;
        if (model_path == nullptr || model_path[0] == '\0') fail(LCV_EINVAL, "model path is empty");
        apply_default_threads();
        auto angle = std::make_unique<lcv_angle>();
        angle->net = load_onnx(model_path);
        const int dims[4] = {1, 3, kAngleHeight, kAngleWidth};
        angle->net.setInput(cv::Mat(4, dims, CV_32F, cv::Scalar::all(0)));
        cv::Mat result;
        try {
            result = angle->net.forward();
        } catch (const cv::Exception &e) {
            fail(LCV_ELOAD, "model '%s' failed its test run: %s", model_path, e.what());
        }
        if (result.total() != 2) fail(LCV_ELOAD, "model '%s' does not give 2 classes", model_path);
        *out = angle.release();
        return LCV_OK;
    });
}

void lcv_angle_free(lcv_angle *angle) { delete angle; }

int lcv_angle_p180(lcv_angle *angle, const lcv_image *crop, float *p180, char *err, size_t errlen) {
    return guarded(err, errlen, "lcv_angle_p180", [&] {
        if (angle == nullptr || p180 == nullptr) fail(LCV_EINVAL, "NULL argument");
        const cv::Mat src = wrap_image(crop);
        angle->net.setInput(line_blob(src, kAngleHeight, kAngleWidth, nullptr));
        const cv::Mat result = angle->net.forward();
        const float *p = result.ptr<float>();
        *p180 = std::clamp(p[1], 0.0f, 1.0f);
        return LCV_OK;
    });
}

}  // extern "C"
