// test_db_real.cpp - the DB detector (PP-OCRv4 det) on real data, through the C API.
//
//   * ICDAR 2015 scene photos: detections per image, time per image, and the
//     fraction of legible ground-truth words (transcription != "###") that
//     are covered by some detected quad (intersection >= 50% of the word).
//   * SROIE receipts: same coverage measure against the line boxes.
//   * A line of text rendered by ImageMagick, horizontal and rotated to read
//     bottom-to-top: one quad must cover it, its crop (lcv_crop_quad) must be
//     a wide, upright single-line image, and (if Tesseract is installed)
//     `tesseract --psm 7` must read it back exactly.
//
// usage: test_db_real MODEL.onnx SCENE_DIR RECEIPT_DIR INPUT_SIZE (N or WxH)
//            [--scenes N] [--receipts N] [--bin T] [--box T] [--unclip R] [--no-assert] [--vis DIR]
// The environment variable CONVERT names ImageMagick's convert (default /usr/bin/convert).
// --vis writes annotated images to DIR for eyeballing (derived from the data
// sets: keep them out of the repository).

#include "lector_cv.h"
#include "check.h"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
    std::string model, scenes, receipts, vis;
    int width = 736, height = 736;
    int n_scenes = 10, n_receipts = 3;
    float thr_bin = 0.3f, thr_box = 0.5f, unclip = 1.6f;
    bool assert_quality = true;
};

struct GtBox {
    std::vector<cv::Point2f> poly;
    bool legible;
};

struct Stats {
    int images = 0, quads = 0, gt_legible = 0, gt_covered = 0, quads_on_gt = 0;
    std::vector<double> ms;
};

std::vector<unsigned char> read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<unsigned char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

std::vector<std::string> list_dir(const std::string &dir, const std::string &suffix) {
    std::vector<std::string> names;
    if (DIR *d = opendir(dir.c_str())) {
        while (dirent *e = readdir(d)) {
            const std::string n = e->d_name;
            if (n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
                names.push_back(n);
        }
        closedir(d);
    }
    return names;
}

// ICDAR / SROIE ground truth: x1,y1,...,x4,y4,transcription (may contain
// commas). Strips a UTF-8 BOM and CR.
std::vector<GtBox> read_gt(const std::string &path) {
    std::vector<GtBox> out;
    std::ifstream f(path);
    std::string line;
    while (std::getline(f, line)) {
        if (line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        std::stringstream ss(line);
        std::string tok;
        float v[8];
        int k = 0;
        while (k < 8 && std::getline(ss, tok, ',')) v[k++] = std::strtof(tok.c_str(), nullptr);
        if (k < 8) continue;
        std::string text;
        std::getline(ss, text);
        GtBox g;
        for (int i = 0; i < 4; ++i) g.poly.emplace_back(v[2 * i], v[2 * i + 1]);
        g.legible = text != "###";
        out.push_back(g);
    }
    return out;
}

std::vector<cv::Point2f> quad_poly(const lcv_quad &q) {
    std::vector<cv::Point2f> p;
    for (int i = 0; i < 4; ++i) p.emplace_back(q.x[i], q.y[i]);
    return p;
}

double intersection(std::vector<cv::Point2f> a, std::vector<cv::Point2f> b) {
    std::vector<cv::Point2f> hull_a, hull_b, inter;
    cv::convexHull(a, hull_a);  // GT polygons are not always convex or clockwise
    cv::convexHull(b, hull_b);
    return cv::intersectConvexConvex(hull_a, hull_b, inter, true);
}

double poly_area(std::vector<cv::Point2f> p) {
    std::vector<cv::Point2f> hull;
    cv::convexHull(p, hull);
    return cv::contourArea(hull);
}

// Detect on one encoded image; returns quads and adds timing to `st`.
std::vector<lcv_quad> run_detect(lcv_net *net, const Options &o, const std::string &path, lcv_image &img, Stats &st) {
    std::vector<unsigned char> bytes = read_file(path);
    char err[512];
    if (lcv_image_decode(bytes.data(), bytes.size(), &img, err, sizeof err) != LCV_OK) {
        CHECK(false, "decode %s: %s", path.c_str(), err);
        return {};
    }
    lcv_quad *q = nullptr;
    int n = 0;
    const auto t0 = Clock::now();
    const int rc = lcv_detect(net, &img, o.thr_bin, o.thr_box, 0.f, o.unclip, &q, &n, err, sizeof err);
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    CHECK(rc == LCV_OK, "detect %s: %s", path.c_str(), err);
    std::vector<lcv_quad> out(q, q + n);
    lcv_quads_free(q);
    st.images++;
    st.quads += n;
    st.ms.push_back(ms);
    return out;
}

// Coverage of ground truth by detections.
void score(const std::vector<GtBox> &gt, const std::vector<lcv_quad> &quads, Stats &st, int &legible, int &covered) {
    legible = covered = 0;
    for (const GtBox &g : gt) {
        if (!g.legible) continue;
        ++legible;
        const double area = std::max(1.0, poly_area(g.poly));
        for (const lcv_quad &q : quads)
            if (intersection(g.poly, quad_poly(q)) >= 0.5 * area) {
                ++covered;
                break;
            }
    }
    for (const lcv_quad &q : quads) {
        const double qa = std::max(1.0, poly_area(quad_poly(q)));
        double hit = 0;
        for (const GtBox &g : gt) hit += intersection(g.poly, quad_poly(q));
        if (hit >= 0.3 * qa) st.quads_on_gt++;
    }
    st.gt_legible += legible;
    st.gt_covered += covered;
}

void visualise(const Options &o, const std::string &name, const lcv_image &img, const std::vector<GtBox> &gt,
               const std::vector<lcv_quad> &quads) {
    if (o.vis.empty()) return;
    cv::Mat m(img.height, img.width, CV_8UC(img.channels), img.data);
    m = m.clone();
    for (const GtBox &g : gt) {
        std::vector<cv::Point> p;
        for (const auto &pt : g.poly) p.emplace_back(cvRound(pt.x), cvRound(pt.y));
        cv::polylines(m, p, true, g.legible ? cv::Scalar(0, 255, 0) : cv::Scalar(128, 128, 128), 1);
    }
    for (const lcv_quad &q : quads) {
        std::vector<cv::Point> p;
        for (int i = 0; i < 4; ++i) p.emplace_back(cvRound(q.x[i]), cvRound(q.y[i]));
        cv::polylines(m, p, true, cv::Scalar(0, 0, 255), 2);
        cv::circle(m, p[0], 3, cv::Scalar(255, 0, 0), -1);  // top-left corner
    }
    cv::imwrite(o.vis + "/" + name + ".jpg", m);
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

void report(const char *what, const Stats &st) {
    printf("%s: %d images, %d quads (%.1f/image), legible GT covered %d/%d = %.3f, quads on GT %d/%d = %.3f, "
           "detect ms median %.0f min %.0f max %.0f\n",
           what, st.images, st.quads, st.images ? double(st.quads) / st.images : 0.0, st.gt_covered, st.gt_legible,
           st.gt_legible ? double(st.gt_covered) / st.gt_legible : 0.0, st.quads_on_gt, st.quads,
           st.quads ? double(st.quads_on_gt) / st.quads : 0.0, median(st.ms),
           st.ms.empty() ? 0.0 : *std::min_element(st.ms.begin(), st.ms.end()),
           st.ms.empty() ? 0.0 : *std::max_element(st.ms.begin(), st.ms.end()));
}

void test_scenes(lcv_net *net, const Options &o) {
    std::vector<std::string> names = list_dir(o.scenes + "/images", ".jpg");
    auto num = [](const std::string &n) { return std::atoi(n.c_str() + n.find('_') + 1); };
    std::sort(names.begin(), names.end(), [&](const std::string &a, const std::string &b) { return num(a) < num(b); });
    if (static_cast<int>(names.size()) > o.n_scenes) names.resize(o.n_scenes);
    if (o.n_scenes <= 0) return;
    CHECK(!names.empty(), "no scene images in %s/images", o.scenes.c_str());
    Stats st;
    for (const std::string &n : names) {
        lcv_image img{};
        std::vector<lcv_quad> quads = run_detect(net, o, o.scenes + "/images/" + n, img, st);
        const std::vector<GtBox> gt = read_gt(o.scenes + "/gt/gt_" + n.substr(0, n.size() - 4) + ".txt");
        int legible, covered;
        score(gt, quads, st, legible, covered);
        printf("  %-12s %4dx%-4d quads %3zu  legible words covered %2d/%2d  %6.0f ms\n", n.c_str(), img.width,
               img.height, quads.size(), covered, legible, st.ms.back());
        visualise(o, n.substr(0, n.size() - 4), img, gt, quads);
        lcv_image_free(&img);
    }
    report("scenes", st);
    if (o.assert_quality && st.gt_legible > 0) {
        const double recall = double(st.gt_covered) / st.gt_legible;
        CHECK(recall >= 0.7, "scene word coverage %.3f below 0.7", recall);
    }
}

void test_receipts(lcv_net *net, const Options &o) {
    std::vector<std::string> names = list_dir(o.receipts + "/images", ".jpg");
    std::sort(names.begin(), names.end());
    if (static_cast<int>(names.size()) > o.n_receipts) names.resize(o.n_receipts);
    if (o.n_receipts <= 0) return;
    CHECK(!names.empty(), "no receipt images in %s/images", o.receipts.c_str());
    Stats st;
    for (const std::string &n : names) {
        lcv_image img{};
        std::vector<lcv_quad> quads = run_detect(net, o, o.receipts + "/images/" + n, img, st);
        const std::vector<GtBox> gt = read_gt(o.receipts + "/boxes/" + n.substr(0, n.size() - 4) + ".csv");
        int legible, covered;
        score(gt, quads, st, legible, covered);
        printf("  %-12s %4dx%-4d quads %3zu  GT lines covered %2d/%2d  %6.0f ms\n", n.c_str(), img.width, img.height,
               quads.size(), covered, legible, st.ms.back());
        visualise(o, "receipt_" + n.substr(0, n.size() - 4), img, gt, quads);
        lcv_image_free(&img);
    }
    report("receipts", st);
    if (o.assert_quality && st.gt_legible > 0) {
        const double recall = double(st.gt_covered) / st.gt_legible;
        CHECK(recall >= 0.8, "receipt line coverage %.3f below 0.8", recall);
    }
}

// If Tesseract is installed, read a crop in single-line mode and compare.
// (Optional end-to-end check: the shim itself does not depend on Tesseract.)
void check_tesseract(const std::string &png, const char *expected) {
    if (std::system("command -v tesseract >/dev/null 2>&1") != 0) {
        printf("  (tesseract not installed: skipping the read-back of %s)\n", png.c_str());
        return;
    }
    const std::string cmd = "OMP_THREAD_LIMIT=1 tesseract " + png + " - --psm 7 2>/dev/null";
    std::string text;
    if (FILE *p = popen(cmd.c_str(), "r")) {
        char buf[256];
        while (std::fgets(buf, sizeof buf, p)) text += buf;
        pclose(p);
    }
    while (!text.empty() && (text.back() == '\n' || text.back() == '\f' || text.back() == ' ')) text.pop_back();
    printf("  tesseract --psm 7 %s: \"%s\"\n", png.c_str(), text.c_str());
    CHECK(text == expected, "tesseract read \"%s\", expected \"%s\"", text.c_str(), expected);
}

// ImageMagick renders "Hello detection" (horizontal, and rotated to read
// bottom-to-top); exactly one quad must cover it and its crop must be an
// upright line.
void test_rendered(lcv_net *net, const Options &o, bool vertical) {
    const char *env = std::getenv("CONVERT");
    const std::string convert = env && *env ? env : "/usr/bin/convert";
    const std::string png = vertical ? "build/hello_vertical.png" : "build/hello.png";
    const std::string crop_png = vertical ? "build/hello_vertical_crop.png" : "build/hello_crop.png";
    const std::string cmd = convert +
                            (vertical ? " -size 200x800 xc:white -font DejaVu-Sans -pointsize 48 -fill black"
                                        " -annotate 270x270+120+700 'Hello detection' "
                                      : " -size 800x200 xc:white -font DejaVu-Sans -pointsize 48 -fill black"
                                        " -annotate +40+120 'Hello detection' ") +
                            png;
    const int sys = std::system(cmd.c_str());
    CHECK(sys == 0, "'%s' failed (%d)", cmd.c_str(), sys);
    if (sys != 0) return;

    Stats st;
    lcv_image img{};
    std::vector<lcv_quad> quads = run_detect(net, o, png, img, st);
    if (img.data == nullptr) return;

    // Bounding box of the ink, from the image itself.
    cv::Mat m(img.height, img.width, CV_8UC3, img.data), gray, ink;
    cv::cvtColor(m, gray, cv::COLOR_BGR2GRAY);
    cv::findNonZero(gray < 128, ink);
    const cv::Rect text = cv::boundingRect(ink);
    const std::vector<cv::Point2f> text_poly = {cv::Point2f(text.tl()), cv::Point2f(text.br().x, text.y),
                                                cv::Point2f(text.br()), cv::Point2f(text.x, text.br().y)};
    printf("rendered %s: ink box x %d..%d y %d..%d, %zu quads, %.0f ms\n", png.c_str(), text.x, text.br().x, text.y,
           text.br().y, quads.size(), st.ms.back());
    int covering = -1;
    for (size_t i = 0; i < quads.size(); ++i) {
        const lcv_quad &q = quads[i];
        printf("  quad score %.3f: (%.1f,%.1f) (%.1f,%.1f) (%.1f,%.1f) (%.1f,%.1f)\n", q.score, q.x[0], q.y[0], q.x[1],
               q.y[1], q.x[2], q.y[2], q.x[3], q.y[3]);
        const double inter = intersection(text_poly, quad_poly(q));
        if (inter >= 0.9 * text.area() && poly_area(quad_poly(q)) <= 2.5 * text.area()) covering = int(i);
    }
    CHECK(quads.size() == 1, "expected one quad for one text line, got %zu", quads.size());
    CHECK(covering >= 0, "no quad covers >= 90%% of the rendered text line (and is < 2.5x its area)");
    if (covering >= 0) {
        lcv_image crop{};
        char err[512];
        const int rc = lcv_crop_quad(&img, &quads[covering], &crop, err, sizeof err);
        CHECK(rc == LCV_OK, "crop: %s", err);
        if (rc == LCV_OK) {
            printf("  crop %dx%d\n", crop.width, crop.height);
            const int text_h = vertical ? text.width : text.height;
            CHECK(crop.width > 4 * crop.height && crop.height >= text_h, "crop %dx%d is not a text line",
                  crop.width, crop.height);
            cv::imwrite(crop_png, cv::Mat(crop.height, crop.width, CV_8UC3, crop.data));
            lcv_image_free(&crop);
            check_tesseract(crop_png, "Hello detection");
        }
    }
    lcv_image_free(&img);
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr,
                "usage: %s MODEL.onnx SCENE_DIR RECEIPT_DIR INPUT_SIZE [--scenes N] [--receipts N] [--bin T] "
                "[--box T] [--unclip R] [--no-assert] [--vis DIR]\n",
                argv[0]);
        return 2;
    }
    Options o;
    o.model = argv[1];
    o.scenes = argv[2];
    o.receipts = argv[3];
    // INPUT_SIZE is N (square) or WxH.
    if (std::sscanf(argv[4], "%dx%d", &o.width, &o.height) != 2) o.width = o.height = std::atoi(argv[4]);
    for (int i = 5; i < argc; ++i) {
        const std::string a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : "0";
        if (a == "--scenes") o.n_scenes = std::atoi(next), ++i;
        else if (a == "--receipts") o.n_receipts = std::atoi(next), ++i;
        else if (a == "--bin") o.thr_bin = std::strtof(next, nullptr), ++i;
        else if (a == "--box") o.thr_box = std::strtof(next, nullptr), ++i;
        else if (a == "--unclip") o.unclip = std::strtof(next, nullptr), ++i;
        else if (a == "--vis") o.vis = next, ++i;
        else if (a == "--no-assert") o.assert_quality = false;
        else { fprintf(stderr, "unknown option %s\n", a.c_str()); return 2; }
    }
    printf("DB %dx%d, bin %.2f box %.2f unclip %.2f\n", o.width, o.height, o.thr_bin, o.thr_box, o.unclip);

    char err[512];
    lcv_net *net = nullptr;
    const auto t0 = Clock::now();
    const int rc = lcv_net_load(o.model.c_str(), LCV_KIND_DB, o.width, o.height, &net, err, sizeof err);
    printf("load (incl. one warm-up pass): %.0f ms\n",
           std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    CHECK(rc == LCV_OK, "load %s: %s", o.model.c_str(), err);
    if (rc != LCV_OK) return check_summary("test_db_real");

    test_scenes(net, o);
    test_receipts(net, o);
    test_rendered(net, o, false);
    test_rendered(net, o, true);
    lcv_net_free(net);
    return check_summary("test_db_real");
}
