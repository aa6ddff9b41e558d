// The recogniser's cost against its input width in OpenCV 4.6 DNN, one thread: one forward pass of each
// shipped net (deploy/models/ppocr-v6-rec) on a random input, after one warm-up pass. NOTES.md section 11.
//   g++ -O2 -o time_rec_widths tools/ppocr/time_rec_widths.cpp -I/usr/include/opencv4 -lopencv_dnn -lopencv_core
//   OMP_THREAD_LIMIT=1 ./time_rec_widths [models folder, default deploy/models/ppocr-v6-rec]
#include <opencv2/dnn.hpp>
#include <opencv2/core.hpp>
#include <chrono>
#include <cstdio>
int main(int argc, char **argv) {
    const char *folder = argc > 1 ? argv[1] : "deploy/models/ppocr-v6-rec";
    cv::setNumThreads(1);
    int widths[] = {160, 320, 480, 640, 960};
    for (int w : widths) {
        char path[256]; snprintf(path, sizeof path, "%s/PP-OCRv6_rec_small.opencv46.w%d.latin.logits.onnx", folder, w);
        cv::dnn::Net net = cv::dnn::readNetFromONNX(path);
        int sz[] = {1, 3, 48, w};
        cv::Mat in(4, sz, CV_32F); cv::randu(in, -1, 1);
        net.setInput(in); net.forward();
        int reps = 9600 / w;
        auto t0 = std::chrono::steady_clock::now();
        for (int r = 0; r < reps; r++) { net.setInput(in); net.forward(); }
        double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
        printf("w%4d: %.1f ms per forward, %.2f ms per 100 px of width\n", w, ms, ms * 100 / w);
    }
}
