import CTesseract
import Foundation
import LectorModel

/// Chooses the pipeline for a page before OCR, from cheap pixel statistics of a thumbnail (a few milliseconds):
/// a scanned or rendered document is mostly bright, even paper; a photo of a scene is not.
///
/// The rule and how often it is right on real documents and photos are in docs/design/engine.md and BENCHMARKS.md.
enum PageClassifier {
    struct Features: Equatable {
        /// Share of thumbnail pixels with luminance ≥ 150 of 255.
        var bright: Double
        /// Share of thumbnail pixels within 30 grey levels of the page's 90th-percentile luminance ("paper").
        var paper: Double
        /// Darkest and brightest thumbnail luminance: a page whose range is tiny holds no text.
        var darkest: Int = 0
        var brightest: Int = 255
        /// The largest share of dark pixels (at least 60 grey levels, and half the page's contrast, below the
        /// paper tone) in any 6 × 6 tile of the thumbnail: near 1 where the page has a solid dark or mid-tone area
        /// (a band, a box, a logo, a photo) that may hold light text; lower where it has dark text on paper,
        /// whose strokes the thumbnail averages with the paper around them.
        var darkestTile: Double = 1
    }

    struct Decision {
        var mode: PipelineMode
        var features: Features
    }

    static let thumbnailSide = 256

    static func classify(_ pix: Pix) -> Decision {
        guard let features = features(pix) else { return Decision(mode: .document, features: Features(bright: 1, paper: 1)) }
        return Decision(mode: rule(features), features: features)
    }

    /// Document when most of the page is bright *and* much of it is one even paper tone. On ../shared/data the
    /// receipts have bright ≥ 0.915 and paper ≥ 0.807, the photos bright ≤ 0.387 and paper ≤ 0.399; the rule
    /// also holds for greyscale, darkened and over-exposed photos, dimmed scans and pale-yellow paper
    /// (`benchmarks/classify_study.py`). White text on black is taken for a scene, which reads it too.
    static func rule(_ f: Features) -> PipelineMode {
        f.bright >= 0.5 && f.paper >= 0.4 ? .document : .scene
    }

    /// Whether a document page may hold light text on a dark ground, which Tesseract reads only through its
    /// second, inverted reading of low-confidence lines (`tessedit_do_invert`). That reading costs ~5% of a
    /// receipt's recognition and can only help inside a dark area, so pages without one skip it. Conservative:
    /// a tile of the thumbnail that is mostly dark keeps it (on ../shared/data 32 of the 39 receipts skip it;
    /// a white-on-black table header 6 mm high on an A4 page keeps it: `PipelineTests.darkAreaCheck`).
    static func mayHoldLightOnDark(_ features: Features) -> Bool {
        features.darkestTile >= darkTileShare
    }

    static let darkTileShare = 0.6
    static let tileSide = 6

    /// Pages smaller than this on either side cannot hold legible text.
    static let minTextSide = 16

    /// Whether the page certainly holds no text: too small, or of one even tone (the darkest and brightest
    /// points of its thumbnail within 24 grey levels). Conservative: speckle or a single word keeps a page in.
    /// The scene pipeline skips such pages: its detector costs the same for an empty page as for a full one.
    /// `features`: the page's, when the classifier has measured them already.
    static func holdsNoText(_ pix: Pix, features known: Features? = nil) -> Bool {
        if pix.width < minTextSide || pix.height < minTextSide { return true }
        guard let features = known ?? features(pix) else { return false }
        return features.brightest - features.darkest < 24
    }

    static func features(_ pix: Pix) -> Features? {
        // Shrink first (8- and 32-bit pages directly), then make the small copy 32-bit: no full-size copy.
        let factor = min(1, Float(thumbnailSide) / Float(max(1, max(pix.width, pix.height))))
        let direct = (pix.depth == 8 || pix.depth == 32) && pixGetColormap(pix.pointer) == nil
        guard let source = direct ? pix : try? Pix(owning: pixConvertTo8(pix.pointer, 0), failure: "") else { return nil }
        let small = factor < 1 ? try? Pix(owning: pixScaleAreaMap(source.pointer, factor, factor), failure: "") : source
        guard let small, let thumbnail = try? Pix(owning: pixConvertTo32(small.pointer), failure: "") else { return nil }
        return withExtendedLifetime(thumbnail) { measure(thumbnail) }
    }

    private static func measure(_ thumbnail: Pix) -> Features? {
        guard let data = pixGetData(thumbnail.pointer) else { return nil }
        let width = thumbnail.width, height = thumbnail.height, wordsPerLine = Int(pixGetWpl(thumbnail.pointer))
        guard width > 0, height > 0 else { return nil }
        var histogram = [Int](repeating: 0, count: 256)
        var luminance = [UInt8](repeating: 0, count: width * height)
        for y in 0..<height {
            let row = data + y * wordsPerLine
            for x in 0..<width {
                let word = row[x]
                let r = Int((word >> 24) & 0xFF), g = Int((word >> 16) & 0xFF), b = Int((word >> 8) & 0xFF)
                let level = (299 * r + 587 * g + 114 * b) / 1000
                histogram[level] += 1
                luminance[y * width + x] = UInt8(level)
            }
        }
        let total = width * height
        var cumulative = 0, p90 = 255
        for level in 0..<256 {
            cumulative += histogram[level]
            if cumulative * 10 >= total * 9 { p90 = level; break }
        }
        let paperPixels = histogram[max(0, p90 - 30)...min(255, p90 + 30)].reduce(0, +)
        let brightPixels = histogram[150...].reduce(0, +)
        let darkest = histogram.firstIndex { $0 > 0 } ?? 0
        return Features(
            bright: Double(brightPixels) / Double(total), paper: Double(paperPixels) / Double(total),
            darkest: darkest, brightest: histogram.lastIndex { $0 > 0 } ?? 255,
            darkestTile: darkestTile(luminance, width: width, height: height, below: p90 - max(60, (p90 - darkest) / 2)))
    }

    /// The largest share of pixels below `threshold` in any `tileSide`² tile, tiles overlapping by half; a
    /// thumbnail smaller than one tile is one tile.
    private static func darkestTile(_ luminance: [UInt8], width: Int, height: Int, below threshold: Int) -> Double {
        // Integral image of the dark mask: each tile's count in four look-ups.
        let stride = width + 1
        var sums = [Int32](repeating: 0, count: stride * (height + 1))
        for y in 0..<height {
            var row: Int32 = 0
            for x in 0..<width {
                row += Int(luminance[y * width + x]) < threshold ? 1 : 0
                sums[(y + 1) * stride + x + 1] = sums[y * stride + x + 1] + row
            }
        }
        let tileWidth = min(tileSide, width), tileHeight = min(tileSide, height)
        let step = max(1, tileSide / 2)
        var best: Int32 = 0
        // Every step, and the last tile of each row and column (the edges are never skipped).
        func starts(_ length: Int, _ tile: Int) -> [Int] {
            var values = Array(Swift.stride(from: 0, through: length - tile, by: step))
            if values.last != length - tile { values.append(length - tile) }
            return values
        }
        let columns = starts(width, tileWidth)
        for y in starts(height, tileHeight) {
            for x in columns {
                let count = sums[(y + tileHeight) * stride + x + tileWidth] - sums[y * stride + x + tileWidth]
                    - sums[(y + tileHeight) * stride + x] + sums[y * stride + x]
                best = max(best, count)
            }
        }
        return Double(best) / Double(tileWidth * tileHeight)
    }
}
