/*
 * lector_cv.h - C API over OpenCV 4.6 DNN for TEXT DETECTION and CTC LINE
 * RECOGNITION.
 *
 * Pure C header (usable from C, C++ and Swift through a module map). The
 * implementation is C++17 (src/lector_cv.cpp) and links only
 * opencv_dnn, opencv_imgproc, opencv_imgcodecs and opencv_core (imgcodecs is
 * optional: build with -DLCV_NO_IMGCODECS to drop it).
 *
 * Conventions
 *   - Every fallible function returns an int status: LCV_OK (0) on success,
 *     one of the LCV_E* codes otherwise. On failure a NUL-terminated message
 *     is written into the caller's buffer `err` (at most `errlen` bytes,
 *     truncated if needed; `err` may be NULL / `errlen` 0 to ignore it).
 *     On failure, output handles/arrays are set to NULL, counts to 0 and
 *     output images zeroed, so there is nothing to free.
 *   - No C++ exception ever escapes an entry point.
 *   - Memory returned by the library (image pixels, quad arrays) is owned by
 *     the caller and must be released with the matching lcv_*_free function.
 *
 * Threading
 *   - An lcv_net wraps a cv::dnn::Net, which is NOT thread-safe: one lcv_net
 *     must be used by one thread at a time (one net per worker slot). Distinct
 *     nets may be used concurrently from different threads.
 *   - All other functions are re-entrant.
 *   - The first call to lcv_net_load() calls cv::setNumThreads(1) (once per
 *     process, unless lcv_set_num_threads() was called before) so that
 *     OpenCV's internal thread pool does not oversubscribe small machines when
 *     the service runs several workers. This is a PROCESS-WIDE OpenCV setting.
 *
 * Coordinates
 *   - Quads are in ORIGINAL image pixel coordinates (x right, y down), points
 *     ordered top-left, top-right, bottom-right, bottom-left (clockwise on
 *     screen; the first edge is the one whose direction is closest to +x).
 */
#ifndef LECTOR_CV_H
#define LECTOR_CV_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes --------------------------------------------------------- */
enum {
    LCV_OK = 0,
    LCV_EINVAL = 1,    /* bad argument (NULL pointer, bad size, bad kind, ...) */
    LCV_ELOAD = 2,     /* model file missing / unreadable / not a usable model */
    LCV_EDECODE = 3,   /* image bytes could not be decoded */
    LCV_ENOMEM = 4,    /* allocation failed */
    LCV_ECV = 5,       /* OpenCV raised an error (message has the details) */
    LCV_EINTERNAL = 6, /* any other unexpected failure */
    LCV_EUNSUPPORTED = 7 /* feature not compiled in (lcv_image_decode with LCV_NO_IMGCODECS) */
};

/* ---- detector kinds -------------------------------------------------------- */
enum {
    LCV_KIND_DB = 0,   /* PaddleOCR DB (e.g. PP-OCRv4 det), ONNX, 1-channel probability map */
    LCV_KIND_EAST = 1  /* EAST: TensorFlow .pb or ONNX with the EAST tensor names */
};

/* ---- images ---------------------------------------------------------------- */

/* An 8-bit image: row-major, tightly packed (row stride = width * channels).
 * channels: 1 (gray), 3 (BGR) or 4 (BGRA). */
typedef struct {
    int width;
    int height;
    int channels;
    unsigned char *data;
} lcv_image;

/* Decode an encoded image (JPEG, PNG, TIFF, BMP, WebP... whatever the
 * installed imgcodecs supports) into a 3-channel BGR image. EXIF orientation
 * is applied. Release with lcv_image_free(). Returns LCV_EUNSUPPORTED when
 * the library was built with -DLCV_NO_IMGCODECS (no opencv_imgcodecs). */
int lcv_image_decode(const unsigned char *bytes, size_t len, lcv_image *out,
                     char *err, size_t errlen);

/* Free pixels allocated by this library (lcv_image_decode, lcv_crop_quad) and
 * zero the struct. Do NOT call it on images whose data the caller owns.
 * NULL-safe. */
void lcv_image_free(lcv_image *img);

/* The OpenCV version this library was built against, e.g. "4.6.0" (a static
 * string; never NULL). */
const char *lcv_version(void);

/* ---- detection network ----------------------------------------------------- */

typedef struct lcv_net lcv_net;

/* Load a detector.
 *   model_path  LCV_KIND_DB: .onnx; LCV_KIND_EAST: .pb (TensorFlow) or .onnx
 *               (chosen by file extension).
 *   input_w/h   the network's ONE fixed input size, multiples of 32 in
 *               [32, 4096]. Every image is scaled (down only; never up) and
 *               padded to it, and boxes are mapped back. (OpenCV 4.6 returns
 *               all-zero maps if a Net's input size changes after its first
 *               forward pass, hence one fixed size per net.)
 * The net is run once on a blank input while loading, so an unusable model
 * fails here rather than at the first lcv_detect(). */
int lcv_net_load(const char *model_path, int kind, int input_w, int input_h,
                 lcv_net **out, char *err, size_t errlen);

/* Free a net. NULL-safe. */
void lcv_net_free(lcv_net *net);

/* Override the process-wide OpenCV thread count (default set by the first
 * lcv_net_load: 1). n <= 0 lets OpenCV choose. */
int lcv_set_num_threads(int n, char *err, size_t errlen);

/* ---- detection ------------------------------------------------------------- */

/* A detected text region (rotated quadrilateral) and its confidence. */
typedef struct {
    float x[4];
    float y[4];
    float score;
} lcv_quad;

/* Detect text regions.
 *   DB:   threshold_bin  binarisation threshold of the probability map (~0.3)
 *         threshold_box  minimum mean probability inside a region (~0.5..0.6)
 *         nms            ignored
 *         unclip         box expansion ratio (~1.5..2.0); each side moves out
 *                        by area * unclip / perimeter
 *   EAST: threshold_bin  ignored
 *         threshold_box  per-cell score threshold (~0.5)
 *         nms            IoU threshold of rotated-box NMS (~0.4)
 *         unclip         ignored
 * On success *out is a malloc'ed array of *count quads (NULL when count is 0),
 * sorted top-to-bottom then left-to-right (by top-left corner); free it with
 * lcv_quads_free(). Not thread-safe per net (see above). */
int lcv_detect(lcv_net *net, const lcv_image *img,
               float threshold_bin, float threshold_box, float nms, float unclip,
               lcv_quad **out, int *count, char *err, size_t errlen);

/* Free a quad array returned by this library. NULL-safe. */
void lcv_quads_free(lcv_quad *quads);

/* EAST post-processing on raw maps, without a network (exposed for tests and
 * for callers running EAST elsewhere).
 *   scores    map_h * map_w floats (row-major)
 *   geometry  5 planes of map_h * map_w: distances to top, right, bottom,
 *             left edges (network-input pixels), then the angle (radians)
 *   Cell (x, y) sits at network-input pixel (4x, 4y). Output coordinates are
 *   network-input coordinates multiplied by scale_x / scale_y. */
int lcv_east_decode(const float *scores, const float *geometry, int map_h, int map_w,
                    float score_threshold, float nms, float scale_x, float scale_y,
                    lcv_quad **out, int *count, char *err, size_t errlen);

/* ---- cropping ---------------------------------------------------------------- */

/* Perspective-warp the quad to an upright rectangle for a single-line
 * recogniser (e.g. Tesseract PSM 7). The output is width = |TL-TR| by
 * height = |TR-BR| (rounded, >= 1). When that would be more than 1.5 times
 * taller than wide, the region is taken to be a line running bottom-to-top
 * (text rotated counter-clockwise, e.g. a line tilted beyond 45 degrees) and
 * the crop is rotated 90 degrees clockwise so it reads left-to-right; the
 * output is then |TR-BR| wide and |TL-TR| high. Same channel count as the
 * input. Release with lcv_image_free(). */
int lcv_crop_quad(const lcv_image *img, const lcv_quad *q, lcv_image *out,
                  char *err, size_t errlen);

/* ---- line recognition (CTC, e.g. PP-OCRv6 rec rewritten by tools/ppocr) ---- */

typedef struct lcv_rec lcv_rec;

/* Load a CTC line recogniser made of `count` ONNX networks, one per fixed
 * input width: model_paths[i] takes 1 x 3 x `height` x widths[i] (widths
 * strictly increasing multiples of 8, at most 4096) and gives
 * 1 x widths[i]/8 x num_classes LOGITS (no softmax; class 0 is the CTC
 * blank). The smallest network is loaded and test-run here; the others on
 * their first use (their files must be readable now). Like lcv_net, one
 * lcv_rec must be used by one thread at a time. */
int lcv_rec_load(const char *const *model_paths, const int *widths, int count, int height,
                 lcv_rec **out, char *err, size_t errlen);

void lcv_rec_free(lcv_rec *rec); /* NULL-safe */

/* The number of time steps of the widest network (the capacity that
 * lcv_recognize needs), and the number of classes. */
int lcv_rec_max_steps(const lcv_rec *rec);
int lcv_rec_classes(const lcv_rec *rec);

/* Recognise one upright line crop (1, 3 or 4 channels; 3 and 4 are BGR(A)).
 * The crop is resized to `height` rows keeping its aspect ratio (bilinear),
 * normalised to (px/255 - 0.5) / 0.5 in BGR order, and right-padded with 0
 * to the smallest width that fits it (squeezed to the widest when none
 * does). For each of the *steps time steps that cover the crop, classes[t]
 * is the most likely class and probs[t] its probability (softmax over the
 * step's logits); `capacity` must be >= lcv_rec_max_steps(). One step covers
 * *step_width pixels of the crop (its own width / *steps, at most). */
int lcv_recognize(lcv_rec *rec, const lcv_image *crop, int *classes, float *probs, int capacity,
                  int *steps, float *step_width, char *err, size_t errlen);

/* ---- text angle (0 or 180 degrees) --------------------------------------- */

typedef struct lcv_angle lcv_angle;

/* Load a 2-class text-angle classifier (ONNX, input 1 x 3 x 48 x 192,
 * output 1 x 2 probabilities of 0 and 180 degrees; e.g. PaddleOCR's
 * ch_ppocr_mobile_v2.0_cls rewritten by tools/ppocr/rewrite_cls.py). */
int lcv_angle_load(const char *model_path, lcv_angle **out, char *err, size_t errlen);

void lcv_angle_free(lcv_angle *angle); /* NULL-safe */

/* The probability that the crop is upside down (preprocessed as for
 * lcv_recognize, at 48 x 192). */
int lcv_angle_p180(lcv_angle *angle, const lcv_image *crop, float *p180, char *err, size_t errlen);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LECTOR_CV_H */
