import Foundation
import LectorModel
import LectorOCR
import Testing

@Suite("Text detection through OpenCV DNN")
struct DetectorTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let dbModel = root.appendingPathComponent("deploy/models/ppocr-v4-det/ch_PP-OCRv4_det_infer.opencv46.onnx").path
    static let tinyEAST = root.appendingPathComponent("Tests/cvshim/tiny_east.onnx").path

    /// Renders one line of text with ImageMagick as packed BGR bytes.
    static func renderBGR(_ text: String, width: Int, height: Int, x: Int, y: Int) throws -> [UInt8] {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("lector-\(UUID().uuidString).bgr")
        defer { try? FileManager.default.removeItem(at: output) }
        try TestImages.runTool(TestImages.convert, [
            "-size", "\(width)x\(height)", "xc:white", "-font", "DejaVu-Sans", "-pointsize", "48", "-fill", "black",
            "-annotate", "+\(x)+\(y)", text, "-depth", "8", "bgr:\(output.path)",
        ])
        return Array(try Data(contentsOf: output))
    }

    @Test("the shipped DB detector finds the one line of a rendered image, in the image's coordinates")
    func dbFindsLine() throws {
        let detector = try TextDetector(modelPath: Self.dbModel, kind: .db)
        // Wider than the network's input: the detector scales it down and maps the quad back.
        let bgr = try Self.renderBGR("Hello detection", width: 1400, height: 300, x: 500, y: 180)
        let quads = try detector.detect(bgr: bgr, width: 1400, height: 300)
        #expect(quads.count == 1, "\(quads)")
        let box = try #require(quads.first?.boundingBox)
        // ImageMagick puts the ink at x 504...859, y 143...181 (`convert ... -trim info:`).
        #expect(box.x >= 470 && box.x <= 510, "\(box)")
        #expect(box.x + box.width >= 855 && box.x + box.width <= 890, "\(box)")
        #expect(box.y >= 120 && box.y <= 150, "\(box)")
        #expect(box.y + box.height >= 180 && box.y + box.height <= 210, "\(box)")
        #expect(try detector.detect(bgr: [UInt8](repeating: 255, count: 300 * 100 * 3), width: 300, height: 100).isEmpty)
    }

    @Test("EAST geometry is decoded from hand-built maps, duplicates merged by NMS")
    func eastDecoder() throws {
        // One axis-aligned box from (20, 24) to (60, 44) in network pixels; cell (x, y) sits at (4x, 4y).
        let size = 16
        var scores = [Float](repeating: 0, count: size * size)
        var geometry = [Float](repeating: 0, count: 5 * size * size)
        for y in 7...10 {
            for x in 6...14 {
                let cell = y * size + x
                scores[cell] = 0.9
                geometry[0 * size * size + cell] = Float(4 * y - 24)  // top
                geometry[1 * size * size + cell] = Float(60 - 4 * x)  // right
                geometry[2 * size * size + cell] = Float(44 - 4 * y)  // bottom
                geometry[3 * size * size + cell] = Float(4 * x - 20)  // left
            }
        }
        let quads = try TextDetector.decodeEAST(scores: scores, geometry: geometry, mapHeight: size, mapWidth: size, scaleX: 2, scaleY: 2)
        #expect(quads.count == 1, "\(quads)")
        let box = try #require(quads.first?.boundingBox)
        #expect(abs(box.x - 40) <= 2 && abs(box.y - 48) <= 2, "\(box)")
        #expect(abs(box.width - 80) <= 3 && abs(box.height - 40) <= 3, "\(box)")
    }

    @Test("a network with EAST's tensor names loads and its boxes come out where it puts them")
    func tinyEASTNetwork() throws {
        // Tests/cvshim/make_tiny_east.py builds this network (input 128 x 128): its score map is high where the
        // image is bright, and its geometry describes box A (centre 32, 24; 48 x 24; upright) in the left half.
        let detector = try TextDetector(modelPath: Self.tinyEAST, kind: .east, inputWidth: 128, inputHeight: 128)
        #expect(try detector.detect(bgr: [UInt8](repeating: 0, count: 128 * 128 * 3), width: 128, height: 128).isEmpty)
        var image = [UInt8](repeating: 0, count: 128 * 128 * 3)
        for y in 12..<36 { for x in 8..<56 { for c in 0..<3 { image[(y * 128 + x) * 3 + c] = 255 } } }
        let quads = try detector.detect(bgr: image, width: 128, height: 128)
        #expect(quads.count == 1, "\(quads)")
        let box = try #require(quads.first?.boundingBox)
        #expect(abs(box.x - 8) <= 2 && abs(box.y - 12) <= 2, "\(box)")
        #expect(abs(box.width - 48) <= 3 && abs(box.height - 24) <= 3, "\(box)")
    }

    @Test("a missing or broken model is an error, not a crash")
    func badModels() throws {
        #expect(throws: OCRError.self) { try TextDetector(modelPath: "/nonexistent/model.onnx", kind: .db) }
        let text = FileManager.default.temporaryDirectory.appendingPathComponent("lector-\(UUID().uuidString).onnx")
        try Data("not a model".utf8).write(to: text)
        defer { try? FileManager.default.removeItem(at: text) }
        #expect(throws: OCRError.self) { try TextDetector(modelPath: text.path, kind: .db) }
        #expect(throws: OCRError.self) { try TextDetector(modelPath: text.path, kind: .east) }
    }
}
