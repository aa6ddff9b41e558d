import CTesseract
import LectorModel

/// Applies a job's preprocessing operations to one page, in order, with Leptonica (and Tesseract's orientation
/// detection for `orient`). Every step returns a new image; the page's boxes are then in the processed pixels.
struct Preprocessor {
    let limits: OCRLimits
    /// A Tesseract handle loaded with `osd`, created on first use.
    let orientationDetector: () throws(OCRError) -> TesseractHandle

    func apply(_ operations: [PreprocessingOperation], to page: Pix) throws(OCRError) -> Pix {
        var pix = page
        for operation in operations { pix = try apply(operation, to: pix) }
        return pix
    }

    private func apply(_ operation: PreprocessingOperation, to pix: Pix) throws(OCRError) -> Pix {
        let failure = "preprocessing failed at \(operation)"
        switch operation {
        case .deskew:
            // Leptonica binarises a reduced copy, searches ±7° and rotates by the angle it finds (if any).
            return try Pix(owning: pixDeskew(pix.pointer, 0), failure: failure)
        case .orient:
            return try orient(pix)
        case .grayscale:
            return try Pix(owning: pixConvertTo8(pix.pointer, 0), failure: failure)
        case .binarize(let method):
            if pix.depth == 1 { return pix }
            let gray = try Pix(owning: pixConvertTo8(pix.pointer, 0), failure: failure)
            var binary: UnsafeMutablePointer<PIX>?
            switch method {
            case .otsu:
                // One tile the size of the page: Otsu's global threshold.
                let status = pixOtsuAdaptiveThreshold(
                    gray.pointer, Int32(max(16, gray.width)), Int32(max(16, gray.height)), 0, 0, 0, nil, &binary)
                guard status == 0 else { throw OCRError(.unreadableDocument, failure) }
            case .adaptive:
                // Sauvola over a 51-pixel window (smaller on tiny pages): follows uneven lighting and shadows.
                // Its buffers take ~19 bytes per pixel, so large pages are done in tiles of about 4 Mpx.
                let half = min(25, (min(gray.width, gray.height) - 3) / 2)
                guard half >= 2 else { return try Pix(owning: pixConvertTo1(gray.pointer, 128), failure: failure) }
                let tiles = max(1, Int((Double(gray.pixelCount) / 4_000_000).squareRoot().rounded(.up)))
                let nx = min(tiles, max(1, gray.width / (2 * half + 3))), ny = min(tiles, max(1, gray.height / (2 * half + 3)))
                guard pixSauvolaBinarizeTiled(gray.pointer, Int32(half), 0.34, Int32(nx), Int32(ny), nil, &binary) == 0 else {
                    throw OCRError(.unreadableDocument, failure)
                }
            }
            return try Pix(owning: binary, failure: failure)
        case .denoise:
            if pix.depth == 1 {
                // Leptonica keeps an image and a box per component: count them first, so that a page of a
                // few million dots cannot take gigabytes.
                var components: Int32 = 0
                guard pixCountConnComp(pix.pointer, 8, &components) == 0 else { throw OCRError(.unreadableDocument, failure) }
                guard components <= Self.maxComponents else {
                    throw OCRError(.limitExceeded, "denoise: the page has \(components) separate marks, over the limit of \(Self.maxComponents)")
                }
                // Drop connected specks smaller than 3 × 3 pixels.
                return try Pix(owning: pixSelectBySize(pix.pointer, 3, 3, 8, Int32(L_SELECT_IF_EITHER),
                                                       Int32(L_SELECT_IF_GTE), nil), failure: failure)
            }
            // A 3 × 3 median on grey or colour (no colour map, 8 or 32 bits per pixel).
            let plain = pix.depth == 32 || (pix.depth == 8 && pixGetColormap(pix.pointer) == nil)
                ? pix : try Pix(owning: pixConvertTo8(pix.pointer, 0), failure: failure)
            return try Pix(owning: pixMedianFilter(plain.pointer, 3, 3), failure: failure)
        case .scale(let factor):
            let width = Double(pix.width) * factor, height = Double(pix.height) * factor
            guard width * height <= Double(limits.maxPagePixels), width <= Double(1 << 20), height <= Double(1 << 20) else {
                throw OCRError(.limitExceeded, "scale:\(factor) would make the page \(Int(width)) × \(Int(height)) pixels, over the limit of \(limits.maxPagePixels) pixels per page")
            }
            guard width >= 1, height >= 1 else { throw OCRError(.unreadableDocument, "scale:\(factor) leaves no pixels") }
            return try Pix(owning: pixScale(pix.pointer, Float(factor), Float(factor)), failure: failure)
        }
    }

    /// Tesseract's orientation and script detection (the `osd` model); rotates by the detected quarter turns when
    /// the detector is confident enough, and leaves the page alone otherwise (too little text to tell).
    private func orient(_ pix: Pix) throws(OCRError) -> Pix {
        let osd = try orientationDetector()
        TessBaseAPISetImage2(osd.pointer, pix.pointer)
        if pixGetXRes(pix.pointer) < 70 { TessBaseAPISetSourceResolution(osd.pointer, 300) }
        defer { TessBaseAPIClear(osd.pointer) }
        var degrees: Int32 = 0, confidence: Float = 0, scriptConfidence: Float = 0
        var script: UnsafePointer<CChar>?
        guard TessBaseAPIDetectOrientationScript(osd.pointer, &degrees, &confidence, &script, &scriptConfidence) != 0,
            confidence >= Self.minimumOrientationConfidence, degrees % 360 != 0
        else { return pix }
        // `degrees` is how far the page is turned clockwise; turn it back.
        let quarters = (4 - Int32(degrees / 90) % 4) % 4
        return try Pix(owning: pixRotateOrth(pix.pointer, quarters), failure: "preprocessing failed at orient")
    }

    /// Most connected components `denoise` handles on a black-and-white page (a dense page of text has ~100,000).
    static let maxComponents: Int32 = 2_000_000

    /// Below this OSD confidence a page is left as it is (OCRmyPDF's default threshold is in the same range).
    static let minimumOrientationConfidence: Float = 2
}
