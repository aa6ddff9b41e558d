import CTesseract
import Foundation
import LectorModel

extension PagePreview {
    /// Both pictures of one page; nil when Leptonica cannot scale or encode it (a page without a preview is
    /// still read: previews are never a reason for a job to fail).
    ///
    /// `jpeg`: the page's own file when it is a JPEG the page was decoded from as it is (no preprocessing). When
    /// that file fits the preview's size and a browser shows it as Leptonica decoded it (baseline or progressive,
    /// grey or RGB, no EXIF: browsers apply an EXIF orientation, Lector's boxes do not), it is the preview: the
    /// original's quality at no cost (25 of the 39 receipts; re-encoding was a third of a receipt's preview).
    init?(page: Pix, jpeg: Data? = nil) {
        if let jpeg, Self.servesAsIs(jpeg, width: page.width, height: page.height) {
            guard let small = try? Self.scaled(page, longSide: Self.thumbnailLongSide),
                let thumbnail = Self.jpeg(small, quality: 75)
            else { return nil }
            self.init(image: jpeg, width: page.width, height: page.height, thumbnail: thumbnail)
            return
        }
        guard let preview = try? Self.halved(page, toFit: Self.longSide),
            let image = Self.jpeg(preview, quality: 85),
            let small = try? Self.scaled(preview, longSide: Self.thumbnailLongSide),
            let thumbnail = Self.jpeg(small, quality: 75)
        else { return nil }
        self.init(image: image, width: preview.width, height: preview.height, thumbnail: thumbnail)
    }

    /// `pix` halved (each output pixel the average of 2 × 2) until it fits `longSide`: between half and all of it
    /// on the long side (the same image when it already fits). Halving costs a fifth of scaling to the exact size
    /// (1.7 against 8.9 ms on the 14 receipts longer than 1600 px, and less to encode: BENCHMARKS.md, P1).
    private static func halved(_ pix: Pix, toFit longSide: Int) throws(OCRError) -> Pix {
        var current = pix
        while max(current.width, current.height) > longSide {
            current = try half(current)
        }
        return current
    }

    /// `pix` scaled down to fit `longSide` exactly (the same image when it already fits): halved while it stays
    /// at least that long, then interpolated or area-averaged (no sharpening: pixScale's unsharp masking cost 3×).
    private static func scaled(_ pix: Pix, longSide: Int) throws(OCRError) -> Pix {
        var current = pix
        while max(current.width, current.height) / 2 >= longSide {
            current = try half(current)
        }
        let long = max(current.width, current.height)
        guard long > longSide else { return current }
        let factor = Float(longSide) / Float(long)
        // Leptonica interpolates down to 0.7 and averages areas below it (each warns outside its range).
        let scaled: UnsafeMutablePointer<PIX>? =
            if factor >= 0.7, [8, 32].contains(current.depth), pixGetColormap(current.pointer) == nil {
                pixScaleLI(current.pointer, factor, factor)
            } else if factor < 0.7, [2, 4, 8, 32].contains(current.depth) {
                pixScaleAreaMap(current.pointer, factor, factor)
            } else {
                pixScale(current.pointer, factor, factor)
            }
        return try Pix(owning: scaled, failure: "the page could not be scaled")
    }

    /// Half the size, each output pixel the average of 2 × 2: a 1-bit page becomes grey (strokes kept, not lost
    /// to sampling); 2, 4, 8 and 32 bits (and colour maps) are averaged as they are; any other depth goes through
    /// pixScale.
    private static func half(_ pix: Pix) throws(OCRError) -> Pix {
        let halved: UnsafeMutablePointer<PIX>? = switch pix.depth {
        case 1: pixScaleToGray2(pix.pointer)
        case 2, 4, 8, 32: pixScaleAreaMap2(pix.pointer)
        default: pixScale(pix.pointer, 0.5, 0.5)
        }
        return try Pix(owning: halved, failure: "the page could not be scaled")
    }

    /// Whether the page's own JPEG file can be its `width` × `height` preview: it fits the preview's size, holds
    /// at most a byte per pixel (a file padded with large segments, or saved near quality 100, is encoded again
    /// rather than stored twice and sent whole to every viewer) and `showsAsDecoded`.
    static func servesAsIs(_ jpeg: Data, width: Int, height: Int) -> Bool {
        max(width, height) <= longSide && jpeg.count <= width * height && showsAsDecoded(jpeg, width: width, height: height)
    }

    /// Whether a browser shows `jpeg` as a `width` × `height` picture the way Leptonica decoded it: a JPEG frame
    /// of that size with 1 or 3 components (a CMYK JPEG is shown differently by different browsers), and no
    /// EXIF segment (its orientation would turn the picture under the boxes). Reads the markers up to the frame.
    static func showsAsDecoded(_ jpeg: Data, width: Int, height: Int) -> Bool {
        jpeg.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) -> Bool in
            guard bytes.count > 4, bytes[0] == 0xFF, bytes[1] == 0xD8 else { return false }
            var i = 2
            while i + 4 <= bytes.count {
                guard bytes[i] == 0xFF else { return false }
                let marker = bytes[i + 1]
                if marker == 0xFF { i += 1; continue }  // fill byte
                let length = Int(bytes[i + 2]) << 8 | Int(bytes[i + 3])
                guard length >= 2, i + 2 + length <= bytes.count else { return false }
                let body = i + 4
                if marker == 0xE1, length >= 8, bytes[body..<body + 6].elementsEqual("Exif\0\0".utf8) { return false }
                // Start of frame: baseline (C0), extended (C1) or progressive (C2), Huffman-coded, 8 bits.
                if marker == 0xC0 || marker == 0xC1 || marker == 0xC2 {
                    guard length >= 8 else { return false }
                    let precision = bytes[body]
                    let frameHeight = Int(bytes[body + 1]) << 8 | Int(bytes[body + 2])
                    let frameWidth = Int(bytes[body + 3]) << 8 | Int(bytes[body + 4])
                    let components = bytes[body + 5]
                    return precision == 8 && frameWidth == width && frameHeight == height && (components == 1 || components == 3)
                }
                // Any other frame type (lossless, arithmetic-coded) or the scan before a frame: re-encode.
                if (0xC3...0xCF).contains(marker) && marker != 0xC4 && marker != 0xC8 && marker != 0xCC { return false }
                if marker == 0xDA || marker == 0xD9 { return false }
                i += 2 + length
            }
            return false
        }
    }

    /// JPEG: 8-bit grey and 32-bit colour as they are; any other depth, or a colour map, through 32 bits first
    /// (the picture is small by now).
    private static func jpeg(_ pix: Pix, quality: Int32) -> Data? {
        var source = pix
        if (pix.depth != 8 && pix.depth != 32) || pixGetColormap(pix.pointer) != nil {
            guard let converted = try? Pix(owning: pixConvertTo32(pix.pointer), failure: "") else { return nil }
            source = converted
        }
        var bytes: UnsafeMutablePointer<UInt8>?
        var size = 0
        let status = withExtendedLifetime(source) { pixWriteMemJpeg(&bytes, &size, source.pointer, quality, 0) }
        guard status == 0, let bytes else { return nil }
        defer { free(bytes) }
        return Data(bytes: bytes, count: size)
    }
}
