#ifndef LECTOR_CTESSERACT_SHIM_H
#define LECTOR_CTESSERACT_SHIM_H
#include <tesseract/capi.h>
#include <leptonica/allheaders.h>
#endif
