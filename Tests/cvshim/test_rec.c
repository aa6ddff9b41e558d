/* test_rec.c - the CTC line recogniser and the angle classifier (lcv_rec,
 * lcv_angle): bad arguments fail with a code and a message, never a crash;
 * a line drawn here (a mid-grey bar pattern is no text) and a blank crop
 * decode to class sequences of the right length; a real rendered line reads
 * back as its text when the caller gives one (PPM, from ImageMagick).
 *
 * usage: test_rec MODEL_DIR ANGLE_MODEL [LINE.ppm "EXPECTED"]
 */
#include "lector_cv.h"
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERRLEN 512

static const int kWidths[5] = {160, 320, 480, 640, 960};

/* A binary PPM (P6) as a 3-channel image; channel order does not matter for
 * a black-on-white line. */
static int read_ppm(const char *path, lcv_image *img) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    int w, h, max;
    if (fscanf(f, "P6 %d %d %d", &w, &h, &max) != 3 || max != 255) { fclose(f); return 0; }
    fgetc(f);
    img->width = w; img->height = h; img->channels = 3;
    img->data = (unsigned char *)malloc((size_t)w * h * 3);
    size_t n = fread(img->data, 1, (size_t)w * h * 3, f);
    fclose(f);
    return n == (size_t)w * h * 3;
}

/* Line i of the keys file (class i + 1). */
static char keys[700][8];
static int read_keys(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/PP-OCRv6_rec_small.latin.keys.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int n = 0;
    while (n < 700 && fgets(keys[n], sizeof keys[n], f)) {
        keys[n][strcspn(keys[n], "\n")] = '\0';
        ++n;
    }
    fclose(f);
    return n;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: test_rec MODEL_DIR ANGLE_MODEL [LINE.ppm EXPECTED]\n"); return 2; }
    char err[ERRLEN];
    char paths[5][1024];
    const char *ptrs[5];
    for (int i = 0; i < 5; ++i) {
        snprintf(paths[i], sizeof paths[i], "%s/PP-OCRv6_rec_small.opencv46.w%d.latin.logits.onnx", argv[1], kWidths[i]);
        ptrs[i] = paths[i];
    }
    lcv_rec *rec = (lcv_rec *)1;

    /* Bad arguments. */
    CHECK(lcv_rec_load(NULL, kWidths, 5, 48, &rec, err, sizeof err) == LCV_EINVAL && rec == NULL && err[0], "NULL paths: %s", err);
    int unordered[5] = {320, 160, 480, 640, 960};
    CHECK(lcv_rec_load(ptrs, unordered, 5, 48, &rec, err, sizeof err) == LCV_EINVAL, "unordered widths: %s", err);
    int odd[5] = {161, 320, 480, 640, 960};
    CHECK(lcv_rec_load(ptrs, odd, 5, 48, &rec, err, sizeof err) == LCV_EINVAL, "width not a multiple of 8: %s", err);
    const char *missing[1] = {"/nonexistent/model.onnx"};
    CHECK(lcv_rec_load(missing, kWidths, 1, 48, &rec, err, sizeof err) == LCV_ELOAD && strstr(err, "nonexistent"), "missing file: %s", err);
    /* A file that is not a network of this shape: the v4 detector. */
    const char *wrong[1] = {"../../deploy/models/ppocr-v4-det/ch_PP-OCRv4_det_infer.opencv46.onnx"};
    CHECK(lcv_rec_load(wrong, kWidths, 1, 48, &rec, err, sizeof err) == LCV_ELOAD && rec == NULL, "a detector is no recogniser: %s", err);
    CHECK(lcv_rec_max_steps(NULL) == 0 && lcv_rec_classes(NULL) == 0, "NULL-safe queries");
    lcv_rec_free(NULL);

    int rc = lcv_rec_load(ptrs, kWidths, 5, 48, &rec, err, sizeof err);
    CHECK(rc == LCV_OK && rec != NULL, "load: %d %s", rc, err);
    if (rc != LCV_OK) return check_summary("test_rec");
    int nkeys = read_keys(argv[1]);
    CHECK(lcv_rec_classes(rec) == nkeys + 2, "classes %d = %d characters + blank + space", lcv_rec_classes(rec), nkeys);
    CHECK(lcv_rec_max_steps(rec) == 120, "960 / 8 steps");

    int classes[120];
    float probs[120];
    int steps = -1;
    float step_width = 0;
    lcv_image blank = {100, 20, 1, (unsigned char *)malloc(2000)};
    memset(blank.data, 255, 2000);
    CHECK(lcv_recognize(rec, &blank, classes, probs, 10, &steps, &step_width, err, sizeof err) == LCV_EINVAL, "small capacity: %s", err);
    CHECK(lcv_recognize(rec, NULL, classes, probs, 120, &steps, &step_width, err, sizeof err) == LCV_EINVAL, "NULL crop");
    rc = lcv_recognize(rec, &blank, classes, probs, 120, &steps, &step_width, err, sizeof err);
    /* 100 x 20 -> 240 x 48 in the 320 network: 30 steps, each 100/240*8 px of the crop. */
    CHECK(rc == LCV_OK && steps == 30, "blank crop: rc %d steps %d", rc, steps);
    CHECK(step_width > 3.3f && step_width < 3.4f, "step width %.3f", step_width);
    int emitted = 0;
    for (int t = 0; t < steps; ++t) {
        if (classes[t] != 0) ++emitted;
        CHECK(probs[t] > 0 && probs[t] <= 1.0f, "probability %f", probs[t]);
    }
    CHECK(emitted == 0, "a white crop reads as blanks, %d emitted", emitted);
    /* Extreme shapes: 1 px high (squeezed into the widest net) and 1 px wide. */
    lcv_image thin = {2000, 1, 1, (unsigned char *)calloc(2000, 1)};
    CHECK(lcv_recognize(rec, &thin, classes, probs, 120, &steps, &step_width, err, sizeof err) == LCV_OK && steps == 120, "2000 x 1: %s", err);
    lcv_image narrow = {1, 50, 1, (unsigned char *)calloc(50, 1)};
    CHECK(lcv_recognize(rec, &narrow, classes, probs, 120, &steps, &step_width, err, sizeof err) == LCV_OK && steps == 1, "1 x 50: %s", err);

    lcv_angle *angle = (lcv_angle *)1;
    CHECK(lcv_angle_load("/nonexistent.onnx", &angle, err, sizeof err) == LCV_ELOAD && angle == NULL, "missing classifier: %s", err);
    rc = lcv_angle_load(argv[2], &angle, err, sizeof err);
    CHECK(rc == LCV_OK, "angle load: %s", err);
    lcv_angle_free(NULL);

    if (argc >= 5 && rc == LCV_OK) {
        lcv_image line = {0, 0, 0, NULL};
        int read = read_ppm(argv[3], &line);
        CHECK(read, "read %s (an 8-bit P6 file)", argv[3]);
        rc = !read ? LCV_EINVAL : lcv_recognize(rec, &line, classes, probs, 120, &steps, &step_width, err, sizeof err);
        char text[512] = "";
        int prev = 0;
        for (int t = 0; t < steps && rc == LCV_OK; ++t) {
            int c = classes[t];
            if (c != 0 && c != prev) strcat(text, c <= nkeys ? keys[c - 1] : " ");
            prev = c;
        }
        CHECK(rc == LCV_OK && strcmp(text, argv[4]) == 0, "read '%s', expected '%s'", text, argv[4]);
        float upright = 1, turned = 0;
        if (!read) return check_summary("test_rec");
        CHECK(lcv_angle_p180(angle, &line, &upright, err, sizeof err) == LCV_OK && upright < 0.1f, "upright p180 %f", upright);
        /* 180 degrees: the pixels in reverse order. */
        size_t n = (size_t)line.width * line.height;
        for (size_t i = 0; i < n / 2; ++i)
            for (int c = 0; c < 3; ++c) {
                unsigned char k = line.data[i * 3 + c];
                line.data[i * 3 + c] = line.data[(n - 1 - i) * 3 + c];
                line.data[(n - 1 - i) * 3 + c] = k;
            }
        CHECK(lcv_angle_p180(angle, &line, &turned, err, sizeof err) == LCV_OK && turned > 0.9f, "turned p180 %f", turned);
        free(line.data);
    }
    lcv_angle_free(angle);
    lcv_rec_free(rec);
    free(blank.data);
    free(thin.data);
    free(narrow.data);
    return check_summary("test_rec");
}
