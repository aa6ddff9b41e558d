#ifndef LECTOR_EMBEDDED_H
#define LECTOR_EMBEDDED_H

#include <stddef.h>

/// Sources/LectorAPI/openapi.json, byte for byte, compiled in by C23's #embed (no committed copy, no generator:
/// the compiler records the file as a dependency, so editing it rebuilds this target).
const unsigned char *lector_openapi_json(void);
size_t lector_openapi_json_size(void);

#endif
