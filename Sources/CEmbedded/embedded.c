#include "lector_embedded.h"

#pragma clang diagnostic ignored "-Wc23-extensions"

static const unsigned char openapi_json[] = {
#embed "../LectorAPI/openapi.json"
};

const unsigned char *lector_openapi_json(void) { return openapi_json; }
size_t lector_openapi_json_size(void) { return sizeof(openapi_json); }
