/* test_header.c - the public header compiles as strict C99 and the basic
 * no-network entry points behave (NULL-safety of the free functions). */
#include "lector_cv.h"
#include "check.h"

#include <string.h>

int main(void) {
    /* Types are usable from C and the free functions are NULL-safe. */
    lcv_image img;
    memset(&img, 0, sizeof img);
    lcv_image_free(&img);
    lcv_image_free(NULL);
    lcv_quads_free(NULL);
    lcv_net_free(NULL);
    CHECK(img.data == NULL && img.width == 0, "freed image must be zeroed");
    CHECK(sizeof(lcv_quad) == 9 * sizeof(float), "lcv_quad is 9 floats, got %zu bytes", sizeof(lcv_quad));
    CHECK(LCV_OK == 0 && LCV_KIND_DB == 0 && LCV_KIND_EAST == 1, "enum values are part of the ABI");
    return check_summary("test_header");
}
