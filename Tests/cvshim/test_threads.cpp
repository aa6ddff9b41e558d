// test_threads.cpp - distinct lcv_net handles used concurrently from
// different threads give exactly the results of serial use (the documented
// model: one net per worker thread, never shared).
//
// usage: test_threads DB_MODEL.onnx

#include "lector_cv.h"
#include "check.h"

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <string>
#include <thread>
#include <vector>

namespace {

const int kThreads = 2, kRounds = 4, kSize = 480;

// A synthetic page: a few lines of text drawn with OpenCV's Hershey font.
cv::Mat page(int variant) {
    cv::Mat m(360 + 40 * variant, 640, CV_8UC3, cv::Scalar::all(255));
    for (int line = 0; line < 3 + variant; ++line)
        cv::putText(m, "Line " + std::to_string(line) + " of page " + std::to_string(variant),
                    cv::Point(30, 60 + 70 * line), cv::FONT_HERSHEY_SIMPLEX, 1.2, cv::Scalar::all(0), 2);
    return m;
}

std::vector<lcv_quad> detect(lcv_net *net, cv::Mat &m, int *rc) {
    lcv_image img{m.cols, m.rows, 3, m.data};
    lcv_quad *q = nullptr;
    int n = 0;
    char err[256];
    *rc = lcv_detect(net, &img, 0.3f, 0.5f, 0.f, 1.6f, &q, &n, err, sizeof err);
    std::vector<lcv_quad> out(q, q + n);
    lcv_quads_free(q);
    return out;
}

bool same(const std::vector<lcv_quad> &a, const std::vector<lcv_quad> &b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
        for (int k = 0; k < 4; ++k)
            if (a[i].x[k] != b[i].x[k] || a[i].y[k] != b[i].y[k]) return false;
    return true;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DB_MODEL.onnx\n", argv[0]);
        return 2;
    }
    std::vector<lcv_net *> nets(kThreads, nullptr);
    char err[512];
    for (lcv_net *&n : nets) {
        const int rc = lcv_net_load(argv[1], LCV_KIND_DB, kSize, kSize, &n, err, sizeof err);
        CHECK(rc == LCV_OK, "load: %s", err);
        if (rc != LCV_OK) return check_summary("test_threads");
    }

    // Serial reference, one result per page.
    std::vector<cv::Mat> pages;
    std::vector<std::vector<lcv_quad>> expected;
    for (int t = 0; t < kThreads; ++t) {
        pages.push_back(page(t));
        int rc;
        expected.push_back(detect(nets[0], pages.back(), &rc));
        CHECK(rc == LCV_OK && expected.back().size() == static_cast<size_t>(3 + t),
              "serial page %d: rc %d, %zu quads (expected %d lines)", t, rc, expected.back().size(), 3 + t);
    }

    // Concurrent: thread t uses its own net on page t, several rounds.
    std::vector<int> mismatches(kThreads, 0);
    std::vector<std::thread> workers;
    for (int t = 0; t < kThreads; ++t)
        workers.emplace_back([&, t] {
            for (int r = 0; r < kRounds; ++r) {
                int rc;
                if (!same(detect(nets[t], pages[t], &rc), expected[t]) || rc != LCV_OK) ++mismatches[t];
            }
        });
    for (std::thread &w : workers) w.join();
    for (int t = 0; t < kThreads; ++t)
        CHECK(mismatches[t] == 0, "thread %d: %d of %d rounds differed from the serial result", t, mismatches[t],
              kRounds);
    printf("%d threads x %d rounds on separate nets: results identical to serial\n", kThreads, kRounds);

    for (lcv_net *n : nets) lcv_net_free(n);
    return check_summary("test_threads");
}
