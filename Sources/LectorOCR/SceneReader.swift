import COpenCV
import CTesseract
import Foundation
import LectorModel

/// The scene pipeline for one page: detect text regions, warp each upright, read it as a single line (with
/// Tesseract, or with the PP-OCR recogniser when the job asked for it), map the words back onto the page, and
/// merge regions of one row into lines.
struct SceneReader {
    let detector: TextDetector
    let tesseract: TesseractHandle
    var recognizer: LineRecognizer? = nil

    /// Lines the PP-OCR recogniser reads with a lower mean probability than this are dropped (RapidOCR's
    /// `text_score`), and so are words below it: texture the detector took for text.
    static let minimumRecognizerConfidence = 50.0

    /// Words Tesseract reads with less confidence than this are dropped: on a photo they are mostly texture
    /// that the detector took for text (chosen with `make eval`, see BENCHMARKS.md).
    static let minimumWordConfidence = 40.0
    /// Line images shorter than this are upsampled before recognition (Tesseract reads ~20-40 px text best).
    static let minimumLineHeight = 40

    func read(_ pix: Pix, pageNumber: Int, cancellation: OCRCancellation) throws(OCRError) -> OCRPage {
        let width = pix.width, height = pix.height
        var bgr = try pix.bgr()
        var lines: [OCRLine] = []
        try bgr.withUnsafeMutableBufferPointer { buffer throws(OCRError) in
            var image = lcv_image(width: Int32(width), height: Int32(height), channels: 3, data: buffer.baseAddress)
            let quads = try detector.detect(&image)
            for quad in quads {
                try cancellation.check()
                if let line = try readRegion(quad, in: &image, cancellation: cancellation) { lines.append(line) }
            }
        }
        lines = Self.mergeRows(lines)
        return OCRPage(number: pageNumber, width: width, height: height, mode: .scene, lines: lines,
                       text: lines.map(\.text).joined(separator: "\n"))
    }

    private func readRegion(_ quad: TextQuad, in image: inout lcv_image, cancellation: OCRCancellation) throws(OCRError) -> OCRLine? {
        var raw = quad.raw
        var crop = lcv_image()
        var error = [CChar](repeating: 0, count: 256)
        guard lcv_crop_quad(&image, &raw, &crop, &error, error.count) == LCV_OK, let pixels = crop.data else {
            return nil  // a degenerate region (e.g. too large a crop); the rest of the page is still read
        }
        defer { lcv_image_free(&crop) }
        let cropWidth = Int(crop.width), cropHeight = Int(crop.height)
        guard cropWidth >= 4, cropHeight >= 4 else { return nil }
        if let recognizer { return try readRegion(quad, crop: &crop, with: recognizer) }
        var line = try Pix.fromPacked(pixels, width: cropWidth, height: cropHeight, channels: Int(crop.channels))
        let scale = cropHeight < Self.minimumLineHeight ? min(4, Double(Self.minimumLineHeight) / Double(cropHeight)) : 1
        if scale > 1 { line = try Pix(owning: pixScale(line.pointer, Float(scale), Float(scale)), failure: "a text region could not be scaled") }
        // A margin of continued edge pixels: Tesseract misreads glyphs that touch the image's border.
        let border = max(4, line.height / 4)
        line = try Pix(owning: pixAddContinuedBorder(line.pointer, Int32(border), Int32(border), Int32(border), Int32(border)),
                       failure: "a text region could not be padded")
        guard let read = try tesseract.recognizeLine(line.pointer, cancellation: cancellation) else { return nil }

        // Crop pixels (u, v) → page pixels, bilinear between the quad's corners in the crop's orientation.
        let corners = quad.cropCorners
        func toPage(_ x: Int, _ y: Int) -> Point {
            let u = min(1, max(0, (Double(x - border) / scale) / Double(cropWidth)))
            let v = min(1, max(0, (Double(y - border) / scale) / Double(cropHeight)))
            let top = (x: corners[0].x + (corners[1].x - corners[0].x) * u, y: corners[0].y + (corners[1].y - corners[0].y) * u)
            let bottom = (x: corners[3].x + (corners[2].x - corners[3].x) * u, y: corners[3].y + (corners[2].y - corners[3].y) * u)
            return Point(x: Int((top.x + (bottom.x - top.x) * v).rounded()), y: Int((top.y + (bottom.y - top.y) * v).rounded()))
        }
        let words = read.words.filter { $0.confidence >= Self.minimumWordConfidence && !$0.text.isEmpty }.map { word in
            let b = word.box
            let polygon = [toPage(b.x, b.y), toPage(b.x + b.width, b.y), toPage(b.x + b.width, b.y + b.height), toPage(b.x, b.y + b.height)]
            return OCRWord(text: word.text, box: BoundingBox(around: polygon), confidence: word.confidence, polygon: polygon)
        }
        guard !words.isEmpty else { return nil }
        // Corners in reading order (top-left of the text as read first), as for the words.
        let polygon = corners.map { Point(x: Int($0.x.rounded()), y: Int($0.y.rounded())) }
        return OCRLine(text: words.map(\.text).joined(separator: " "), box: BoundingBox(around: polygon),
                       confidence: Self.mean(words.map(\.confidence)), words: words, polygon: polygon)
    }

    /// One region read by the PP-OCR recogniser: turned first when the angle classifier finds it upside down;
    /// each word's extent along the crop (from CTC's time steps) mapped back between the quad's corners.
    private func readRegion(_ quad: TextQuad, crop: inout lcv_image, with recognizer: LineRecognizer) throws(OCRError) -> OCRLine? {
        var corners = quad.cropCorners
        if try recognizer.isUpsideDown(&crop) {
            Self.turnHalfway(&crop)
            corners = [corners[2], corners[3], corners[0], corners[1]]
        }
        guard let read = try recognizer.read(&crop), read.confidence >= Self.minimumRecognizerConfidence else { return nil }
        let cropWidth = Double(crop.width)
        func toPage(_ u: Double, _ v: Double) -> Point {
            let u = min(1, max(0, u / cropWidth))
            let top = (x: corners[0].x + (corners[1].x - corners[0].x) * u, y: corners[0].y + (corners[1].y - corners[0].y) * u)
            let bottom = (x: corners[3].x + (corners[2].x - corners[3].x) * u, y: corners[3].y + (corners[2].y - corners[3].y) * u)
            return Point(x: Int((top.x + (bottom.x - top.x) * v).rounded()), y: Int((top.y + (bottom.y - top.y) * v).rounded()))
        }
        let words = read.words.filter { $0.confidence >= Self.minimumRecognizerConfidence }.map { word in
            let polygon = [toPage(word.x0, 0), toPage(word.x1, 0), toPage(word.x1, 1), toPage(word.x0, 1)]
            return OCRWord(text: word.text, box: BoundingBox(around: polygon), confidence: word.confidence, polygon: polygon)
        }
        guard !words.isEmpty else { return nil }
        let polygon = corners.map { Point(x: Int($0.x.rounded()), y: Int($0.y.rounded())) }
        return OCRLine(text: words.map(\.text).joined(separator: " "), box: BoundingBox(around: polygon),
                       confidence: Self.mean(words.map(\.confidence)), words: words, polygon: polygon)
    }

    /// Turns a packed image by 180° in place: its pixels in reverse order.
    static func turnHalfway(_ image: inout lcv_image) {
        guard let data = image.data else { return }
        let channels = Int(image.channels), count = Int(image.width) * Int(image.height)
        var front = 0, back = count - 1
        while front < back {
            for c in 0..<channels {
                let kept = data[front * channels + c]
                data[front * channels + c] = data[back * channels + c]
                data[back * channels + c] = kept
            }
            front += 1
            back -= 1
        }
    }

    /// Reading order, and one line per row: regions whose vertical extents overlap by half the smaller height
    /// form a row, ordered left to right; neighbours in a row closer than about one text height are merged
    /// (the detector splits a line at wide gaps). Regions tilted by more than ~10° are left alone.
    static func mergeRows(_ lines: [OCRLine]) -> [OCRLine] {
        var rows: [[OCRLine]] = []
        for line in lines.sorted(by: { $0.box.y + $0.box.height / 2 < $1.box.y + $1.box.height / 2 }) {
            if let index = rows.indices.last(where: { sameRow(rows[$0].last!, line) }) {
                rows[index].append(line)
            } else {
                rows.append([line])
            }
        }
        var merged: [OCRLine] = []
        for row in rows {
            var current: OCRLine?
            for line in row.sorted(by: { $0.box.x < $1.box.x }) {
                guard let previous = current else { current = line; continue }
                let gap = line.box.x - (previous.box.x + previous.box.width)
                let height = min(previous.box.height, line.box.height)
                if isLevel(previous), isLevel(line), gap <= height * 3 / 2 {
                    let box = BoundingBox(around: previous.box.corners + line.box.corners)
                    let words = previous.words + line.words
                    current = OCRLine(text: previous.text + " " + line.text, box: box,
                                      confidence: mean(words.map(\.confidence)), words: words)
                } else {
                    merged.append(previous)
                    current = line
                }
            }
            if let current { merged.append(current) }
        }
        return merged
    }

    private static func sameRow(_ a: OCRLine, _ b: OCRLine) -> Bool {
        let overlap = min(a.box.y + a.box.height, b.box.y + b.box.height) - max(a.box.y, b.box.y)
        return Double(overlap) >= 0.5 * Double(min(a.box.height, b.box.height))
    }

    private static func isLevel(_ line: OCRLine) -> Bool {
        let p = line.polygon
        guard p.count == 4 else { return true }
        let angle = atan2(Double(p[1].y - p[0].y), Double(p[1].x - p[0].x))
        return abs(angle) < 10 * .pi / 180
    }

    static func mean(_ values: [Double]) -> Double {
        values.isEmpty ? 0 : ((values.reduce(0, +) / Double(values.count)) * 100).rounded() / 100
    }
}

extension TextQuad {
    var raw: lcv_quad {
        lcv_quad(x: (Float(points[0].x), Float(points[1].x), Float(points[2].x), Float(points[3].x)),
                 y: (Float(points[0].y), Float(points[1].y), Float(points[2].y), Float(points[3].y)), score: Float(score))
    }

    /// The page points that `lcv_crop_quad` puts at the crop's top-left, top-right, bottom-right and bottom-left
    /// corners: the quad's own corners, or for a region much taller than wide (a line read bottom to top) the
    /// corners turned by one.
    var cropCorners: [(x: Double, y: Double)] {
        func distance(_ a: (x: Double, y: Double), _ b: (x: Double, y: Double)) -> Double { hypot(a.x - b.x, a.y - b.y) }
        let p = points
        let length = max(distance(p[0], p[1]), distance(p[3], p[2]))
        let height = max(distance(p[1], p[2]), distance(p[0], p[3]))
        return height > 1.5 * length ? [p[3], p[0], p[1], p[2]] : p
    }
}
