import CTesseract
import Foundation
import LectorModel

extension PagePreview {
    /// Both pictures of one page; nil when Leptonica cannot scale or encode it (a page without a preview is
    /// still read: previews are never a reason for a job to fail).
    init?(page: Pix) {
        guard let preview = try? Self.scaled(page, longSide: Self.longSide),
            let image = Self.jpeg(preview.pix, quality: 85),
            let small = try? Self.scaled(preview.pix, longSide: Self.thumbnailLongSide),
            let thumbnail = Self.jpeg(small.pix, quality: 75)
        else { return nil }
        self.init(image: image, width: preview.pix.width, height: preview.pix.height, thumbnail: thumbnail)
    }

    /// `pix` scaled down to fit `longSide` (the same image when it already fits).
    private static func scaled(_ pix: Pix, longSide: Int) throws(OCRError) -> (pix: Pix, factor: Double) {
        let long = max(pix.width, pix.height)
        guard long > longSide else { return (pix, 1) }
        let factor = Float(longSide) / Float(long)
        // Area mapping averages each output pixel's source area, with no sharpening after it: pixScale's unsharp
        // masking made a scaled receipt's preview cost ~30 ms instead of ~10 (BENCHMARKS.md, P1). It takes 2, 4,
        // 8 and 32 bits and colour maps; a 1-bit page goes through pixScale, which averages it into grey rather
        // than losing strokes, and so does any other depth.
        let areaMapped = [2, 4, 8, 32].contains(pix.depth)
        let scaled = areaMapped ? pixScaleAreaMap(pix.pointer, factor, factor) : pixScale(pix.pointer, factor, factor)
        return (try Pix(owning: scaled, failure: "the page could not be scaled"), Double(factor))
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
