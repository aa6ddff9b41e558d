import CTesseract
import LectorModel

/// Owns one Leptonica image; `deinit` destroys it.
///
/// Leptonica functions return new images (or NULL on failure); `Pix(owning:)` takes one over and turns NULL
/// into an `OCRError` naming the step that failed.
final class Pix {
    let pointer: UnsafeMutablePointer<PIX>

    init(owning pointer: UnsafeMutablePointer<PIX>?, failure: @autoclosure () -> String) throws(OCRError) {
        guard let pointer else { throw OCRError(.unreadableDocument, failure()) }
        self.pointer = pointer
    }

    deinit {
        var pix: UnsafeMutablePointer<PIX>? = pointer
        pixDestroy(&pix)
    }

    var width: Int { Int(pixGetWidth(pointer)) }
    var height: Int { Int(pixGetHeight(pointer)) }
    var depth: Int { Int(pixGetDepth(pointer)) }
    var pixelCount: Int { width * height }

    /// The image as tightly packed 8-bit BGR, for OpenCV.
    func bgr() throws(OCRError) -> [UInt8] {
        let rgb = try Pix(owning: pixConvertTo32(pointer), failure: "the page could not be converted to colour")
        return try withExtendedLifetime(rgb) { () throws(OCRError) -> [UInt8] in
            let width = rgb.width, height = rgb.height
            let wordsPerLine = Int(pixGetWpl(rgb.pointer))
            guard let data = pixGetData(rgb.pointer) else { throw OCRError(.unreadableDocument, "the page has no pixels") }
            var out = [UInt8](repeating: 0, count: width * height * 3)
            out.withUnsafeMutableBufferPointer { buffer in
                for y in 0..<height {
                    let row = data + y * wordsPerLine
                    var o = y * width * 3
                    for x in 0..<width {
                        // Leptonica's 32-bit pixel is one word: red in the top byte, then green, blue, alpha.
                        let word = row[x]
                        buffer[o] = UInt8(truncatingIfNeeded: word >> 8)
                        buffer[o + 1] = UInt8(truncatingIfNeeded: word >> 16)
                        buffer[o + 2] = UInt8(truncatingIfNeeded: word >> 24)
                        o += 3
                    }
                }
            }
            return out
        }
    }

    /// An image from packed 8-bit pixels with 1 (grey) or 3 (BGR) channels.
    static func fromPacked(_ pixels: UnsafePointer<UInt8>, width: Int, height: Int, channels: Int) throws(OCRError) -> Pix {
        let pix = try Pix(owning: pixCreate(Int32(width), Int32(height), 32), failure: "could not allocate a \(width) × \(height) image")
        let wordsPerLine = Int(pixGetWpl(pix.pointer))
        guard let data = pixGetData(pix.pointer) else { throw OCRError(.engineFailure, "could not allocate an image") }
        for y in 0..<height {
            let row = data + y * wordsPerLine
            let source = pixels + y * width * channels
            for x in 0..<width {
                let b, g, r: UInt32
                if channels == 1 {
                    b = UInt32(source[x]); g = b; r = b
                } else {
                    b = UInt32(source[x * channels]); g = UInt32(source[x * channels + 1]); r = UInt32(source[x * channels + 2])
                }
                row[x] = r << 24 | g << 16 | b << 8 | 0xFF
            }
        }
        return pix
    }
}
