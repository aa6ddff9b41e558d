/* tesseract_variants.c - one Tesseract handle decoding and recognising receipts the ways Lector's document
 * pipeline could, for instruction counts (BENCHMARKS.md, P1, seventh run). Not part of the product.
 *
 *   cc -O2 benchmarks/tesseract_variants.c -o /tmp/tv $(pkg-config --cflags --libs tesseract) -llept
 *   OMP_THREAD_LIMIT=1 valgrind --tool=callgrind --toggle-collect=work /tmp/tv MODE OUTDIR IMAGE...
 *
 * MODE is a sum of: 4 = no original image after SetImage (lines are cut from Tesseract's grey page), 2 = no
 * inverted second reading (tessedit_do_invert=0), 1 = JPEG decoded to luminance only, 8 = the page made grey
 * before Tesseract sees it. 0 is what the CLI does. Each image's text goes to OUTDIR/NAME.txt.
 */
#include <leptonica/allheaders.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tesseract/capi.h>

static l_uint8 *buffer;
static size_t length;

__attribute__((noinline)) void work(TessBaseAPI *api, int mode, const char *output) {
    PIX *pix = (mode & 1) ? pixReadMemJpeg(buffer, length, 0, 1, NULL, L_JPEG_READ_LUMINANCE) : pixReadMem(buffer, length);
    if (mode & 8) {
        PIX *grey = pixConvertRGBToLuminance(pix);
        pixDestroy(&pix);
        pix = grey;
    }
    TessBaseAPISetPageSegMode(api, PSM_AUTO);
    TessBaseAPISetImage2(api, pix);
    if (pixGetXRes(pix) < 70) TessBaseAPISetSourceResolution(api, 300);
    TessBaseAPISetVariable(api, "tessedit_do_invert", (mode & 2) ? "0" : "1");
    if (mode & 4) TessBaseAPISetInputImage(api, NULL);
    TessBaseAPIRecognize(api, NULL);
    char *text = TessBaseAPIGetUTF8Text(api);
    FILE *file = fopen(output, "w");
    if (file) {
        fputs(text, file);
        fclose(file);
    }
    TessDeleteText(text);
    TessBaseAPIClear(api);
    pixDestroy(&pix);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODE OUTDIR IMAGE...\n", argv[0]);
        return 2;
    }
    int mode = atoi(argv[1]);
    TessBaseAPI *api = TessBaseAPICreate();
    if (TessBaseAPIInit3(api, NULL, "eng") != 0) return 1;
    TessBaseAPISetVariable(api, "debug_file", "/dev/null");
    for (int i = 3; i < argc; i++) {
        FILE *file = fopen(argv[i], "rb");
        if (!file) return 1;
        fseek(file, 0, SEEK_END);
        length = (size_t)ftell(file);
        fseek(file, 0, SEEK_SET);
        buffer = malloc(length);
        if (fread(buffer, 1, length, file) != length) return 1;
        fclose(file);
        const char *name = strrchr(argv[i], '/') ? strrchr(argv[i], '/') + 1 : argv[i];
        char output[4096];
        snprintf(output, sizeof output, "%s/%s.txt", argv[2], name);
        work(api, mode, output);
        free(buffer);
    }
    TessBaseAPIEnd(api);
    TessBaseAPIDelete(api);
    return 0;
}
