import COpenCV
import Foundation
import LectorModel

/// One line read by `LineRecognizer`: its text, and each word's extent along the crop.
struct RecognizedLine: Equatable {
    struct Word: Equatable {
        var text: String
        /// Left and right edges in the crop's pixels.
        var x0: Double
        var x1: Double
        /// 0–100: the mean probability of its characters.
        var confidence: Double
    }

    var words: [Word]
    /// 0–100: the mean probability of all its characters.
    var confidence: Double
    var text: String { words.map(\.text).joined(separator: " ") }
}

/// PP-OCRv6's small line recogniser (CTC over a Latin character set) and PaddleOCR's text-angle classifier, over
/// OpenCV's DNN module (`lcv_rec`, `lcv_angle`). The shipped models and how they were made are in
/// `deploy/models/ppocr-v6-rec` and `deploy/models/ppocr-cls` (`tools/ppocr`).
///
/// One network per input width (160 to 960 px at a height of 48), each loaded on first use; a crop goes to the
/// narrowest that holds it (less padding reads better and costs less). Not thread-safe: one per worker slot.
final class LineRecognizer {
    static let height = 48
    static let widths = [160, 320, 480, 640, 960]
    /// A crop the classifier finds upside down with at least this probability is turned (RapidOCR's rule).
    static let turnAbove: Float = 0.9

    private let rec: OpaquePointer
    private let angle: OpaquePointer?
    /// Class i (1…) is `characters[i - 1]`; class 0 is CTC's blank and the class after the last character a space.
    private let characters: [String]
    private var classes: [Int32]
    private var probabilities: [Float]

    init(models: RecognizerModels) throws(OCRError) {
        guard let folder = models.folder, let keys = try? String(contentsOfFile: models.keysPath(in: folder), encoding: .utf8) else {
            throw RecognizerKind.ppocr.modelMissing
        }
        // One character per line; the file ends with a newline.
        var characters = keys.components(separatedBy: "\n").map { $0.hasSuffix("\r") ? String($0.dropLast()) : $0 }
        if characters.last == "" { characters.removeLast() }
        let paths = Self.widths.map { models.networkPath(in: folder, width: $0) }
        var handle: OpaquePointer?
        var error = [CChar](repeating: 0, count: 512)
        let status = withCStrings(paths) { pointers in
            Self.widths.map(Int32.init).withUnsafeBufferPointer { widths in
                lcv_rec_load(pointers, widths.baseAddress, Int32(paths.count), Int32(Self.height), &handle, &error, error.count)
            }
        }
        guard status == LCV_OK, let handle else {
            throw OCRError(.engineFailure, "the PP-OCR recogniser could not load: \(cMessage(error))")
        }
        guard Int(lcv_rec_classes(handle)) == characters.count + 2 else {
            lcv_rec_free(handle)
            throw OCRError(.engineFailure, "the PP-OCR recogniser's character list does not match its network")
        }
        var angleHandle: OpaquePointer?
        if let anglePath = models.anglePath, FileManager.default.isReadableFile(atPath: anglePath) {
            guard lcv_angle_load(anglePath, &angleHandle, &error, error.count) == LCV_OK else {
                lcv_rec_free(handle)
                throw OCRError(.engineFailure, "the text-angle classifier could not load: \(cMessage(error))")
            }
        }
        self.rec = handle
        self.angle = angleHandle
        self.characters = characters
        let capacity = Int(lcv_rec_max_steps(handle))
        self.classes = [Int32](repeating: 0, count: capacity)
        self.probabilities = [Float](repeating: 0, count: capacity)
    }

    deinit {
        lcv_rec_free(rec)
        lcv_angle_free(angle)
    }

    /// Whether the upright crop reads upside down (the classifier's p(180) ≥ 0.9); false without a classifier.
    func isUpsideDown(_ crop: inout lcv_image) throws(OCRError) -> Bool {
        guard let angle else { return false }
        var p180: Float = 0
        var error = [CChar](repeating: 0, count: 512)
        guard lcv_angle_p180(angle, &crop, &p180, &error, error.count) == LCV_OK else {
            throw OCRError(.engineFailure, "text angle classification failed: \(cMessage(error))")
        }
        return p180 >= Self.turnAbove
    }

    /// Reads one upright line crop: greedy CTC (each step's most likely class, repeats collapsed, blanks
    /// dropped), words split at spaces, each word's extent from the time steps of its first and last
    /// characters. Nil when nothing was read.
    func read(_ crop: inout lcv_image) throws(OCRError) -> RecognizedLine? {
        var steps: Int32 = 0
        var stepWidth: Float = 0
        var error = [CChar](repeating: 0, count: 512)
        let capacity = Int32(classes.count)
        let status = classes.withUnsafeMutableBufferPointer { classes in
            probabilities.withUnsafeMutableBufferPointer { probabilities in
                lcv_recognize(rec, &crop, classes.baseAddress, probabilities.baseAddress, capacity, &steps, &stepWidth,
                              &error, error.count)
            }
        }
        guard status == LCV_OK else { throw OCRError(.engineFailure, "line recognition failed: \(cMessage(error))") }
        return Self.decode(classes: classes.prefix(Int(steps)).map(Int.init), probabilities: Array(probabilities.prefix(Int(steps))),
                           stepWidth: Double(stepWidth), cropWidth: Double(crop.width), characters: characters)
    }

    /// Greedy CTC decoding of per-step classes (see `read`). A character is emitted at the first step of its run;
    /// its probability there is its confidence. A word spans from half a step before its first character's step
    /// to half a step past its last one, so neighbouring words never overlap.
    static func decode(
        classes: [Int], probabilities: [Float], stepWidth: Double, cropWidth: Double, characters: [String]
    ) -> RecognizedLine? {
        let space = characters.count + 1
        var words: [RecognizedLine.Word] = []
        var current: (text: String, first: Int, last: Int, probabilities: [Float])?
        var all: [Float] = []
        func close() {
            guard let word = current else { return }
            current = nil
            let x0 = max(0, (Double(word.first) - 0.5) * stepWidth)
            let x1 = min(cropWidth, (Double(word.last) + 1.5) * stepWidth)
            words.append(.init(text: word.text, x0: x0, x1: max(x1, x0 + 1), confidence: percent(word.probabilities)))
        }
        var previous = 0
        for (step, cls) in classes.enumerated() {
            defer { previous = cls }
            guard cls != 0, cls != previous else { continue }
            all.append(probabilities[step])
            if cls == space || cls > space {
                close()
                continue
            }
            let character = characters[cls - 1]
            if character.allSatisfy(\.isWhitespace) { close(); continue }
            if current == nil { current = (character, step, step, [probabilities[step]]) } else {
                current!.text += character
                current!.last = step
                current!.probabilities.append(probabilities[step])
            }
        }
        close()
        guard !words.isEmpty else { return nil }
        return RecognizedLine(words: words, confidence: percent(all))
    }

    private static func percent(_ values: [Float]) -> Double {
        guard !values.isEmpty else { return 0 }
        return (Double(values.reduce(0, +)) / Double(values.count) * 10_000).rounded() / 100
    }
}

/// Where the PP-OCR recogniser's files are: a folder with one network per width and the character list, and
/// the angle classifier (optional: without it, no crop is turned).
public struct RecognizerModels: Sendable, Equatable {
    public var folder: String?
    public var anglePath: String?

    public init(folder: String?, anglePath: String?) {
        self.folder = folder
        self.anglePath = anglePath
    }

    public static let folderRelativePath = "deploy/models/ppocr-v6-rec"
    public static let angleRelativePath = "deploy/models/ppocr-cls/ch_ppocr_mobile_v2.0_cls_mobile.opencv46.onnx"

    /// The character list's file name inside `folder`.
    public static let keysFileName = "PP-OCRv6_rec_small.latin.keys.txt"

    func networkPath(in folder: String, width: Int) -> String {
        "\(folder)/PP-OCRv6_rec_small.opencv46.w\(width).latin.logits.onnx"
    }

    func keysPath(in folder: String) -> String { "\(folder)/\(Self.keysFileName)" }

    /// The networks and the character list: what the recogniser cannot run without.
    private var required: [String] {
        guard let folder else { return [] }
        return LineRecognizer.widths.map { networkPath(in: folder, width: $0) } + [keysPath(in: folder)]
    }

    /// Every file the recogniser reads (for the engine's identity).
    var files: [String] { required + [anglePath].compactMap { $0 } }

    /// Whether every network and the character list are readable.
    public var isAvailable: Bool {
        folder != nil && required.allSatisfy { FileManager.default.isReadableFile(atPath: $0) }
    }
}

/// Calls `body` with a C array of the strings (valid only inside it).
private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    let pointers = copies.map { UnsafePointer($0) }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
