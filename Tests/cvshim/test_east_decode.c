/* test_east_decode.c - lcv_east_decode on HAND-BUILT EAST maps (no network).
 *
 * A 16x16 map (a 64x64 network input) carries two boxes:
 *   A: axis-aligned, left 6, top 8, right 30, bottom 20
 *   B: rotated: centre (44, 44), 24 x 10, tilted 20 degrees (rising to the right)
 * Every cell whose origin (4x, 4y) lies inside a box gets a score and the
 * EAST geometry (distances to the box's top/right/bottom/left edges + angle)
 * that describes that box, so each box is predicted by many cells; NMS must
 * collapse them to exactly one quad per box, with corners within 1 px.
 * Written in C on purpose: it also proves the header is plain C.
 */
#include "lector_cv.h"
#include "check.h"

#include <stdlib.h>
#include <string.h>

#define MH 16
#define MW 16
#define PLANE (MH * MW)

typedef struct {
    float cx, cy, w, h, angle; /* angle in radians, EAST convention */
} box;

/* Box corners TL, TR, BR, BL. The EAST box axes are u = (cos, -sin) (along
 * the text) and v = (sin, cos) (down across it). */
static void box_corners(const box *b, float x[4], float y[4]) {
    const float c = cosf(b->angle), s = sinf(b->angle);
    const float ux = c, uy = -s, vx = s, vy = c;
    const float su[4] = {-1, 1, 1, -1}, sv[4] = {-1, -1, 1, 1};
    for (int i = 0; i < 4; ++i) {
        x[i] = b->cx + su[i] * b->w / 2 * ux + sv[i] * b->h / 2 * vx;
        y[i] = b->cy + su[i] * b->w / 2 * uy + sv[i] * b->h / 2 * vy;
    }
}

/* Fill the cells covered by `b` with `score` and b's geometry. */
static void paint_box(float *scores, float *geo, const box *b, float score) {
    const float c = cosf(b->angle), s = sinf(b->angle);
    for (int y = 0; y < MH; ++y) {
        for (int x = 0; x < MW; ++x) {
            const float px = 4.0f * x - b->cx, py = 4.0f * y - b->cy;
            const float a = px * c - py * s; /* along u */
            const float v = px * s + py * c; /* along v */
            if (fabsf(a) >= b->w / 2 || fabsf(v) >= b->h / 2) continue;
            const int i = y * MW + x;
            /* Scores vary a little so NMS has a definite winner. */
            scores[i] = score - 0.001f * (float)((x + y) % 5);
            geo[0 * PLANE + i] = b->h / 2 + v; /* top */
            geo[1 * PLANE + i] = b->w / 2 - a; /* right */
            geo[2 * PLANE + i] = b->h / 2 - v; /* bottom */
            geo[3 * PLANE + i] = b->w / 2 + a; /* left */
            geo[4 * PLANE + i] = b->angle;
        }
    }
}

/* Largest corner distance between a quad and expected corners (scaled). */
static float corner_error(const lcv_quad *q, const float ex[4], const float ey[4], float sx, float sy) {
    float worst = 0;
    for (int i = 0; i < 4; ++i) {
        const float d = hypotf(q->x[i] - ex[i] * sx, q->y[i] - ey[i] * sy);
        if (d > worst) worst = d;
    }
    return worst;
}

static void print_quads(const lcv_quad *q, int n) {
    for (int k = 0; k < n; ++k)
        printf("  quad %d score %.3f: (%.1f,%.1f) (%.1f,%.1f) (%.1f,%.1f) (%.1f,%.1f)\n", k, q[k].score, q[k].x[0],
               q[k].y[0], q[k].x[1], q[k].y[1], q[k].x[2], q[k].y[2], q[k].x[3], q[k].y[3]);
}

int main(void) {
    static float scores[PLANE], geo[5 * PLANE];
    memset(scores, 0, sizeof scores);
    memset(geo, 0, sizeof geo);

    const box a = {18, 14, 24, 12, 0.0f};
    const box b = {44, 44, 24, 10, 20.0f * 3.14159265f / 180.0f};
    int cells_a = 0, cells_b = 0;
    paint_box(scores, geo, &a, 0.95f);
    for (int i = 0; i < PLANE; ++i) cells_a += scores[i] > 0;
    paint_box(scores, geo, &b, 0.90f);
    for (int i = 0; i < PLANE; ++i) cells_b += scores[i] > 0;
    cells_b -= cells_a;
    printf("cells: box A %d, box B %d\n", cells_a, cells_b);
    CHECK(cells_a >= 4 && cells_b >= 4, "each box must be predicted by several cells (%d, %d)", cells_a, cells_b);

    /* Noise that must be ignored: a low score with junk geometry, a NaN score. */
    scores[15 * MW + 0] = 0.3f;
    geo[0 * PLANE + 15 * MW] = 100;
    scores[0 * MW + 15] = NAN;

    float ax[4], ay[4], bx[4], by[4];
    box_corners(&a, ax, ay);
    box_corners(&b, bx, by);

    const float scales[2][2] = {{1.0f, 1.0f}, {2.0f, 3.0f}};
    for (int s = 0; s < 2; ++s) {
        const float sx = scales[s][0], sy = scales[s][1];
        lcv_quad *q = NULL;
        int n = -1;
        char err[256];
        int rc = lcv_east_decode(scores, geo, MH, MW, 0.5f, 0.4f, sx, sy, &q, &n, err, sizeof err);
        CHECK(rc == LCV_OK, "decode failed: %s", err);
        printf("scale %.0fx%.0f: %d quads\n", sx, sy, n);
        print_quads(q, n);
        CHECK(n == 2, "NMS must leave exactly one quad per box, got %d", n);
        if (rc == LCV_OK && n == 2) {
            /* Reading order: A (top) first. */
            float ea = corner_error(&q[0], ax, ay, sx, sy), eb = corner_error(&q[1], bx, by, sx, sy);
            CHECK(ea <= 1.0f * fmaxf(sx, sy), "box A corners off by %.2f px", ea);
            CHECK(eb <= 1.0f * fmaxf(sx, sy), "box B corners off by %.2f px", eb);
            CHECK(q[0].score > 0.94f && q[1].score > 0.89f, "scores %.3f %.3f", q[0].score, q[1].score);
        }
        lcv_quads_free(q);
    }

    /* With NMS disabled (threshold 1.0 keeps everything that is not identical)
     * there are many more boxes: proves the collapse above came from NMS. */
    {
        lcv_quad *q = NULL;
        int n = 0;
        int rc = lcv_east_decode(scores, geo, MH, MW, 0.5f, 1.0f, 1, 1, &q, &n, NULL, 0);
        CHECK(rc == LCV_OK && n > 2, "without NMS expected many quads, got %d", n);
        printf("nms=1.0: %d quads (one per cell)\n", n);
        lcv_quads_free(q);
    }

    /* Threshold above every score: nothing, and out == NULL. */
    {
        lcv_quad *q = (lcv_quad *)1;
        int n = -1;
        int rc = lcv_east_decode(scores, geo, MH, MW, 0.99f, 0.4f, 1, 1, &q, &n, NULL, 0);
        CHECK(rc == LCV_OK && n == 0 && q == NULL, "expected no quads (rc %d, n %d)", rc, n);
    }

    /* Argument errors come back as codes with a message. */
    {
        lcv_quad *q = NULL;
        int n = 0;
        char err[256] = "";
        CHECK(lcv_east_decode(NULL, geo, MH, MW, 0.5f, 0.4f, 1, 1, &q, &n, err, sizeof err) == LCV_EINVAL,
              "NULL scores must fail");
        CHECK(err[0] != '\0', "error message expected");
        printf("NULL scores -> \"%s\"\n", err);
        CHECK(lcv_east_decode(scores, geo, 0, MW, 0.5f, 0.4f, 1, 1, &q, &n, err, sizeof err) == LCV_EINVAL,
              "zero map size must fail");
        CHECK(lcv_east_decode(scores, geo, MH, MW, 0.5f, 1.5f, 1, 1, &q, &n, err, sizeof err) == LCV_EINVAL,
              "nms > 1 must fail");
        CHECK(lcv_east_decode(scores, geo, MH, MW, 0.5f, 0.4f, 1, 1, NULL, &n, err, 4) == LCV_EINVAL,
              "NULL out must fail");
        CHECK(strlen(err) == 3, "message must be truncated to errlen-1, got \"%s\"", err);
    }
    return check_summary("test_east_decode");
}
