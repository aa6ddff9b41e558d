// test_tiny_east.cpp - lcv_net_load(kind=EAST, .onnx) + lcv_detect end to end
// on the tiny EAST-shaped network written by tests/make_tiny_east.py.
//
// The network outputs a high score wherever its input is bright, and its
// geometry map describes BOX_A in the left half and BOX_B (rotated 20
// degrees) in the right half of its 128x128 input. We paint those boxes white
// on black in a 256x192 image (letterboxed to 128x96 + padding, scale 0.5),
// and expect exactly those two boxes back in original coordinates.
//
// usage: test_tiny_east tiny_east.onnx

#include "lector_cv.h"
#include "check.h"

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <vector>

namespace {

struct Box {
    float cx, cy, w, h, deg;  // network-input coordinates; keep in sync with make_tiny_east.py
};
const Box kBoxA{32, 24, 48, 24, 0};
const Box kBoxB{92, 60, 48, 16, 20};
const int kNetSize = 128;
const float kScale = 2.0f;  // original image = network content x 2

// Corners TL, TR, BR, BL of a box in original coordinates (EAST convention:
// u = (cos, -sin) along the text, v = (sin, cos) across it).
std::vector<cv::Point2f> corners(const Box &b) {
    const float a = b.deg * static_cast<float>(CV_PI) / 180.f, c = std::cos(a), s = std::sin(a);
    const cv::Point2f u(c, -s), v(s, c), ctr(b.cx, b.cy);
    const float su[4] = {-1, 1, 1, -1}, sv[4] = {-1, -1, 1, 1};
    std::vector<cv::Point2f> p;
    for (int i = 0; i < 4; ++i) p.push_back((ctr + su[i] * b.w / 2 * u + sv[i] * b.h / 2 * v) * kScale);
    return p;
}

void paint(cv::Mat &img, const Box &b) {
    std::vector<cv::Point> poly;
    for (const cv::Point2f &p : corners(b)) poly.emplace_back(cvRound(p.x), cvRound(p.y));
    cv::fillConvexPoly(img, poly, cv::Scalar::all(255));
}

float corner_error(const lcv_quad &q, const std::vector<cv::Point2f> &e) {
    float worst = 0;
    for (int i = 0; i < 4; ++i) worst = std::max(worst, std::hypot(q.x[i] - e[i].x, q.y[i] - e[i].y));
    return worst;
}

// Run detection on `img`; returns the quads (empty on error, recorded as a failure).
std::vector<lcv_quad> detect(lcv_net *net, cv::Mat &img) {
    lcv_image li{img.cols, img.rows, img.channels(), img.data};
    lcv_quad *q = nullptr;
    int n = 0;
    char err[512];
    const int rc = lcv_detect(net, &li, 0.3f, 0.5f, 0.4f, 1.5f, &q, &n, err, sizeof err);
    CHECK(rc == LCV_OK, "lcv_detect: %s", err);
    std::vector<lcv_quad> out(q, q + n);
    lcv_quads_free(q);
    for (const lcv_quad &k : out)
        printf("  quad score %.3f: (%.1f,%.1f) (%.1f,%.1f) (%.1f,%.1f) (%.1f,%.1f)\n", k.score, k.x[0], k.y[0], k.x[1],
               k.y[1], k.x[2], k.y[2], k.x[3], k.y[3]);
    return out;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s tiny_east.onnx\n", argv[0]);
        return 2;
    }
    char err[512];
    lcv_net *net = nullptr;
    int rc = lcv_net_load(argv[1], LCV_KIND_EAST, kNetSize, kNetSize, &net, err, sizeof err);
    CHECK(rc == LCV_OK, "load %s: %s", argv[1], err);
    if (rc != LCV_OK) return check_summary("test_tiny_east");

    // Both boxes painted.
    cv::Mat img(static_cast<int>(96 * kScale), static_cast<int>(kNetSize * kScale), CV_8UC3, cv::Scalar::all(0));
    paint(img, kBoxA);
    paint(img, kBoxB);
    printf("both boxes, %dx%d image:\n", img.cols, img.rows);
    std::vector<lcv_quad> q = detect(net, img);
    CHECK(q.size() == 2, "expected 2 quads, got %zu", q.size());
    if (q.size() == 2) {
        const float ea = corner_error(q[0], corners(kBoxA)), eb = corner_error(q[1], corners(kBoxB));
        CHECK(ea <= 2.0f, "box A off by %.2f px", ea);
        CHECK(eb <= 2.0f, "box B off by %.2f px", eb);
        CHECK(q[0].score > 0.9f && q[1].score > 0.9f, "scores %.3f %.3f", q[0].score, q[1].score);
    }

    // Only box A painted: the scores really come from the image.
    img.setTo(cv::Scalar::all(0));
    paint(img, kBoxA);
    printf("box A only:\n");
    q = detect(net, img);
    CHECK(q.size() == 1 && corner_error(q[0], corners(kBoxA)) <= 2.0f, "expected box A alone, got %zu quads",
          q.size());

    // Black image: nothing (and the mean-coloured padding must not fire).
    img.setTo(cv::Scalar::all(0));
    printf("black image:\n");
    q = detect(net, img);
    CHECK(q.empty(), "expected no quads on a black image, got %zu", q.size());

    // Repeated calls on the same net give identical results (fixed input size).
    paint(img, kBoxB);
    std::vector<lcv_quad> r1 = detect(net, img), r2 = detect(net, img);
    CHECK(r1.size() == 1 && r2.size() == 1 && corner_error(r1[0], corners(kBoxB)) <= 2.0f &&
              std::fabs(r1[0].x[0] - r2[0].x[0]) < 1e-4f,
          "repeatable box B (%zu, %zu quads)", r1.size(), r2.size());

    lcv_net_free(net);
    return check_summary("test_tiny_east");
}
