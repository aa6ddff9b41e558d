/* test_robustness.c - error paths and odd inputs never crash and always
 * report an error code plus a message; detection works on degenerate image
 * shapes (letterboxing); lcv_crop_quad geometry on synthetic images.
 *
 * usage: test_robustness DB_MODEL.onnx
 */
#include "lector_cv.h"
#include "check.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ERRLEN 512

static lcv_image make_image(int w, int h, int ch, unsigned char fill) {
    lcv_image img;
    img.width = w;
    img.height = h;
    img.channels = ch;
    img.data = (unsigned char *)malloc((size_t)w * h * ch);
    memset(img.data, fill, (size_t)w * h * ch);
    return img;
}

/* A minimal 24-bit BMP (bottom-up rows padded to 4 bytes), built by hand so
 * that decoding is tested on bytes whose pixels we know. */
static size_t make_bmp(unsigned char *buf, int w, int h) {
    const int row = (w * 3 + 3) & ~3;
    const uint32_t size = 54 + (uint32_t)(row * h);
    memset(buf, 0, size);
    buf[0] = 'B';
    buf[1] = 'M';
    memcpy(buf + 2, &size, 4);
    buf[10] = 54;                  /* pixel data offset */
    buf[14] = 40;                  /* BITMAPINFOHEADER size */
    memcpy(buf + 18, &w, 4);
    memcpy(buf + 22, &h, 4);
    buf[26] = 1;                   /* planes */
    buf[28] = 24;                  /* bits per pixel */
    for (int y = 0; y < h; ++y)    /* file row 0 is the bottom image row */
        for (int x = 0; x < w; ++x) {
            unsigned char *p = buf + 54 + (size_t)(h - 1 - y) * row + (size_t)x * 3;
            p[0] = (unsigned char)(10 * x);      /* B */
            p[1] = (unsigned char)(20 * y);      /* G */
            p[2] = 200;                          /* R */
        }
    return size;
}

static void test_decode(void) {
    char err[ERRLEN];
    lcv_image img;

    /* Garbage and empty input. */
    unsigned char garbage[1000];
    for (int i = 0; i < 1000; ++i) garbage[i] = (unsigned char)(i * 7919 + 13);
    int rc = lcv_image_decode(garbage, sizeof garbage, &img, err, sizeof err);
    CHECK(rc == LCV_EDECODE, "garbage must fail with EDECODE, got %d", rc);
    CHECK(img.data == NULL && err[0], "no data and a message on failure");
    printf("garbage -> %d \"%s\"\n", rc, err);
    const unsigned char jpeg_magic[] = {0xFF, 0xD8, 0xFF, 0xE0, 0, 16, 'J', 'F', 'I', 'F', 0, 1, 2, 3, 4, 5};
    rc = lcv_image_decode(jpeg_magic, sizeof jpeg_magic, &img, err, sizeof err);
    CHECK(rc != LCV_OK, "a JPEG header without data must fail, got %d", rc);
    printf("truncated JPEG header -> %d \"%s\"\n", rc, err);
    CHECK(lcv_image_decode(garbage, 0, &img, err, sizeof err) == LCV_EINVAL, "empty input");
    CHECK(lcv_image_decode(NULL, 10, &img, err, sizeof err) == LCV_EINVAL, "NULL input");
    CHECK(lcv_image_decode(garbage, 10, NULL, err, sizeof err) == LCV_EINVAL, "NULL out");

    /* A real (hand-made) BMP decodes to the expected BGR pixels. */
    static unsigned char bmp[54 + 16 * 3]; /* rows of 5 px pad to 16 bytes */
    const size_t n = make_bmp(bmp, 5, 3);
    rc = lcv_image_decode(bmp, n, &img, err, sizeof err);
    CHECK(rc == LCV_OK, "BMP decode failed: %s", err);
    if (rc == LCV_OK) {
        CHECK(img.width == 5 && img.height == 3 && img.channels == 3, "BMP size %dx%dx%d", img.width,
              img.height, img.channels);
        const unsigned char *p = img.data + (2 * 5 + 4) * 3; /* x 4, y 2 */
        CHECK(p[0] == 40 && p[1] == 40 && p[2] == 200, "BMP pixel (4,2) = %d,%d,%d", p[0], p[1], p[2]);
        lcv_image_free(&img);
        CHECK(img.data == NULL, "lcv_image_free zeroes the struct");
    }
}

static void test_load(const char *db_model) {
    char err[ERRLEN];
    lcv_net *net = (lcv_net *)1;

    int rc = lcv_net_load("/nonexistent/model.onnx", LCV_KIND_DB, 736, 736, &net, err, sizeof err);
    CHECK(rc == LCV_ELOAD && net == NULL && strstr(err, "cannot open"), "missing file: %d \"%s\"", rc, err);
    printf("missing file -> %d \"%s\"\n", rc, err);

    FILE *f = fopen("build/not_a_model.onnx", "w");
    fputs("this is a text file, not an ONNX protobuf\n", f);
    fclose(f);
    rc = lcv_net_load("build/not_a_model.onnx", LCV_KIND_DB, 736, 736, &net, err, sizeof err);
    CHECK(rc == LCV_ELOAD && err[0], "text file as ONNX: %d \"%s\"", rc, err);
    printf("text file (.onnx) -> %d \"%.200s\"\n", rc, err);
    rc = lcv_net_load("build/not_a_model.onnx", LCV_KIND_EAST, 320, 320, &net, err, sizeof err);
    CHECK(rc == LCV_ELOAD, "text file as EAST ONNX: %d \"%s\"", rc, err);

    f = fopen("build/not_a_model.pb", "w");
    fputs("still not a model\n", f);
    fclose(f);
    rc = lcv_net_load("build/not_a_model.pb", LCV_KIND_EAST, 320, 320, &net, err, sizeof err);
    CHECK(rc == LCV_ELOAD && err[0], "text file as .pb: %d \"%s\"", rc, err);
    printf("text file (.pb) -> %d \"%.200s\"\n", rc, err);
    rc = lcv_net_load("build/not_a_model.pb", LCV_KIND_DB, 320, 320, &net, err, sizeof err);
    CHECK(rc == LCV_ELOAD && strstr(err, "extension"), "DB from .pb: %d \"%s\"", rc, err);

    CHECK(lcv_net_load(db_model, 7, 736, 736, &net, err, sizeof err) == LCV_EINVAL, "bad kind");
    CHECK(lcv_net_load(db_model, LCV_KIND_DB, 700, 736, &net, err, sizeof err) == LCV_EINVAL,
          "size not a multiple of 32");
    CHECK(lcv_net_load(NULL, LCV_KIND_DB, 736, 736, &net, err, sizeof err) == LCV_EINVAL, "NULL path");

    /* The DB model loaded as EAST lacks the EAST outputs: caught at load. */
    rc = lcv_net_load(db_model, LCV_KIND_EAST, 320, 320, &net, err, sizeof err);
    CHECK(rc == LCV_ELOAD && net == NULL, "DB model as EAST must fail at load: %d", rc);
    printf("DB model as EAST -> %d \"%.200s\"\n", rc, err);
}

static void test_detect_shapes(const char *db_model) {
    char err[ERRLEN];
    lcv_net *net = NULL;
    int rc = lcv_net_load(db_model, LCV_KIND_DB, 736, 736, &net, err, sizeof err);
    CHECK(rc == LCV_OK, "DB model load: %s", err);
    if (rc != LCV_OK) return;

    struct { int w, h, ch; } shapes[] = {{1, 1, 3}, {1, 1, 1}, {5000, 300, 3}, {300, 5000, 4}, {736, 736, 1}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; ++i) {
        lcv_image img = make_image(shapes[i].w, shapes[i].h, shapes[i].ch, 255);
        /* Some dark bars so the 5000-wide image is not blank. */
        for (int y = img.height / 3; y < img.height / 3 + img.height / 10 && img.width > 100; ++y)
            for (int x = 20; x < img.width - 20; ++x)
                if ((x / 25) % 3 != 2) memset(img.data + ((size_t)y * img.width + x) * img.channels, 0, img.channels);
        lcv_quad *q = NULL;
        int n = -1;
        rc = lcv_detect(net, &img, 0.3f, 0.5f, 0.4f, 1.6f, &q, &n, err, sizeof err);
        CHECK(rc == LCV_OK && n >= 0, "detect on %dx%dx%d: %d \"%s\"", img.width, img.height, img.channels, rc, err);
        for (int k = 0; k < n; ++k)
            for (int c = 0; c < 4; ++c)
                CHECK(q[k].x[c] >= 0 && q[k].x[c] <= img.width - 1 && q[k].y[c] >= 0 && q[k].y[c] <= img.height - 1,
                      "quad %d corner %d (%.1f,%.1f) outside the image", k, c, q[k].x[c], q[k].y[c]);
        printf("detect %dx%dx%d -> rc %d, %d quads\n", img.width, img.height, img.channels, rc, n);
        lcv_quads_free(q);
        free(img.data);
    }

    /* Bad arguments. */
    lcv_image img = make_image(10, 10, 2, 0);
    lcv_quad *q = NULL;
    int n = 0;
    CHECK(lcv_detect(net, &img, 0.3f, 0.5f, 0.4f, 1.6f, &q, &n, err, sizeof err) == LCV_EINVAL, "2 channels");
    printf("2-channel image -> \"%s\"\n", err);
    img.channels = 3;
    free(img.data);
    img.data = NULL;
    CHECK(lcv_detect(net, &img, 0.3f, 0.5f, 0.4f, 1.6f, &q, &n, err, sizeof err) == LCV_EINVAL, "NULL data");
    CHECK(lcv_detect(NULL, &img, 0.3f, 0.5f, 0.4f, 1.6f, &q, &n, err, sizeof err) == LCV_EINVAL, "NULL net");
    CHECK(lcv_detect(net, NULL, 0.3f, 0.5f, 0.4f, 1.6f, &q, &n, err, sizeof err) == LCV_EINVAL, "NULL image");
    lcv_net_free(net);
}

static void test_crop(void) {
    char err[ERRLEN];
    /* Gray image whose value is its row index: orientation is visible. */
    lcv_image img = make_image(200, 100, 1, 0);
    for (int y = 0; y < 100; ++y) memset(img.data + (size_t)y * 200, y, 200);

    /* Horizontal box: 60 x 20 from (30, 40). */
    lcv_quad q = {{30, 90, 90, 30}, {40, 40, 60, 60}, 1.0f};
    lcv_image out;
    int rc = lcv_crop_quad(&img, &q, &out, err, sizeof err);
    CHECK(rc == LCV_OK, "crop: %s", err);
    if (rc == LCV_OK) {
        CHECK(out.width == 60 && out.height == 20 && out.channels == 1, "crop size %dx%dx%d", out.width,
              out.height, out.channels);
        const int top = out.data[5], bottom = out.data[19 * out.width + 5];
        CHECK(abs(top - 40) <= 1 && abs(bottom - 59) <= 2, "crop rows: top %d bottom %d", top, bottom);
        lcv_image_free(&out);
    }

    /* Tall box (20 x 80): treated as a bottom-to-top line and rotated
     * clockwise: output 80 x 20, image bottom (large values) on the left. */
    lcv_quad v = {{50, 70, 70, 50}, {10, 10, 90, 90}, 1.0f};
    rc = lcv_crop_quad(&img, &v, &out, err, sizeof err);
    CHECK(rc == LCV_OK, "vertical crop: %s", err);
    if (rc == LCV_OK) {
        CHECK(out.width == 80 && out.height == 20, "vertical crop size %dx%d", out.width, out.height);
        const int left = out.data[10 * out.width + 0], right = out.data[10 * out.width + 79];
        CHECK(left > 85 && right < 15, "vertical crop reads bottom-to-top: left %d right %d", left, right);
        lcv_image_free(&out);
    }

    /* Degenerate and absurd quads. */
    lcv_quad point = {{5, 5, 5, 5}, {5, 5, 5, 5}, 1.0f};
    rc = lcv_crop_quad(&img, &point, &out, err, sizeof err);
    printf("crop of a point -> rc %d %s\n", rc, rc ? err : "");
    if (rc == LCV_OK) lcv_image_free(&out);
    lcv_quad huge = {{0, 1e9f, 1e9f, 0}, {0, 0, 1e9f, 1e9f}, 1.0f};
    CHECK(lcv_crop_quad(&img, &huge, &out, err, sizeof err) == LCV_EINVAL, "huge crop must be refused");
    lcv_quad nan = {{0, NAN, 1, 0}, {0, 0, 1, 1}, 1.0f};
    CHECK(lcv_crop_quad(&img, &nan, &out, err, sizeof err) == LCV_EINVAL, "NaN quad must be refused");
    free(img.data);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DB_MODEL.onnx\n", argv[0]);
        return 2;
    }
    test_decode();
    test_load(argv[1]);
    test_detect_shapes(argv[1]);
    test_crop();
    return check_summary("test_robustness");
}
