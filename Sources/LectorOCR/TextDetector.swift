import COpenCV
import Foundation
import LectorModel

/// A text region found by a detector: a rotated quadrilateral in image pixels, corners clockwise from the
/// top left, and the detector's confidence (0 to 1).
public struct TextQuad: Sendable, Equatable {
    public var points: [(x: Double, y: Double)]
    public var score: Double

    public static func == (a: TextQuad, b: TextQuad) -> Bool {
        a.score == b.score && a.points.elementsEqual(b.points) { $0.x == $1.x && $0.y == $1.y }
    }

    /// The axis-aligned box around the quad.
    public var boundingBox: BoundingBox {
        let xs = points.map(\.x), ys = points.map(\.y)
        let x = Int(xs.min() ?? 0), y = Int(ys.min() ?? 0)
        return BoundingBox(x: x, y: y, width: Int((xs.max() ?? 0).rounded(.up)) - x, height: Int((ys.max() ?? 0).rounded(.up)) - y)
    }

    init(_ quad: lcv_quad) {
        let xs = [quad.x.0, quad.x.1, quad.x.2, quad.x.3], ys = [quad.y.0, quad.y.1, quad.y.2, quad.y.3]
        self.points = zip(xs, ys).map { (Double($0), Double($1)) }
        self.score = Double(quad.score)
    }
}

/// A text detector over OpenCV's DNN module (the `COpenCV` C++ target; no C++ exception ever reaches Swift).
///
/// Owns one `cv::dnn::Net`, which is not thread-safe: like a Tesseract handle, one detector per worker slot,
/// used from that slot's thread only. The network has one fixed input size; images are scaled down and
/// padded to it, and quads come back in the image's own pixels.
public final class TextDetector {
    public enum Kind: Sendable {
        /// PP-OCRv4 DB (ONNX): line-level regions. Thresholds: binarisation 0.3, box 0.5, unclip 1.6.
        case db
        /// EAST (TensorFlow .pb, or ONNX with EAST's tensor names): score 0.5, NMS 0.4.
        case east
    }

    private let net: OpaquePointer
    public let kind: Kind

    public init(modelPath: String, kind: Kind, inputWidth: Int = 960, inputHeight: Int = 960) throws(OCRError) {
        var handle: OpaquePointer?
        var error = [CChar](repeating: 0, count: 512)
        let status = lcv_net_load(modelPath, kind == .db ? Int32(LCV_KIND_DB) : Int32(LCV_KIND_EAST),
                                  Int32(inputWidth), Int32(inputHeight), &handle, &error, error.count)
        guard status == LCV_OK, let handle else {
            throw OCRError(.engineFailure, "the text detector could not load \(modelPath): \(cMessage(error))")
        }
        self.net = handle
        self.kind = kind
    }

    deinit { lcv_net_free(net) }

    /// Detects text in a tightly packed 8-bit BGR image.
    public func detect(bgr: [UInt8], width: Int, height: Int) throws(OCRError) -> [TextQuad] {
        guard bgr.count == width * height * 3 else { throw OCRError(.unreadableDocument, "image buffer size mismatch") }
        return try bgr.withUnsafeBufferPointer { buffer throws(OCRError) -> [TextQuad] in
            var image = lcv_image(width: Int32(width), height: Int32(height), channels: 3,
                                  data: UnsafeMutablePointer(mutating: buffer.baseAddress))
            return try detect(&image)
        }
    }

    func detect(_ image: inout lcv_image) throws(OCRError) -> [TextQuad] {
        var quads: UnsafeMutablePointer<lcv_quad>?
        var count: Int32 = 0
        var error = [CChar](repeating: 0, count: 512)
        let status = kind == .db
            ? lcv_detect(net, &image, 0.3, 0.5, 0, 1.6, &quads, &count, &error, error.count)
            : lcv_detect(net, &image, 0, 0.5, 0.4, 0, &quads, &count, &error, error.count)
        guard status == LCV_OK else {
            throw OCRError(.engineFailure, "text detection failed: \(cMessage(error))")
        }
        defer { lcv_quads_free(quads) }
        return (0..<Int(count)).map { TextQuad(quads![$0]) }
    }

    /// EAST's post-processing on raw maps (geometry: 5 planes of mapHeight × mapWidth), without a network.
    public static func decodeEAST(
        scores: [Float], geometry: [Float], mapHeight: Int, mapWidth: Int, scoreThreshold: Float = 0.5,
        nms: Float = 0.4, scaleX: Float = 1, scaleY: Float = 1
    ) throws(OCRError) -> [TextQuad] {
        guard scores.count == mapHeight * mapWidth, geometry.count == 5 * mapHeight * mapWidth else {
            throw OCRError(.engineFailure, "EAST maps have the wrong size")
        }
        var quads: UnsafeMutablePointer<lcv_quad>?
        var count: Int32 = 0
        var error = [CChar](repeating: 0, count: 512)
        let status = lcv_east_decode(scores, geometry, Int32(mapHeight), Int32(mapWidth), scoreThreshold, nms,
                                     scaleX, scaleY, &quads, &count, &error, error.count)
        guard status == LCV_OK else { throw OCRError(.engineFailure, "EAST decoding failed: \(cMessage(error))") }
        defer { lcv_quads_free(quads) }
        return (0..<Int(count)).map { TextQuad(quads![$0]) }
    }

}

/// A NUL-terminated message written by the C library into `buffer`.
func cMessage(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
