import Foundation

/// An axis-aligned box in page pixels, origin at the top left.
public struct BoundingBox: Sendable, Codable, Equatable {
    public var x: Int
    public var y: Int
    public var width: Int
    public var height: Int

    public init(x: Int, y: Int, width: Int, height: Int) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
    }
}

extension BoundingBox {
    /// Its four corners, clockwise from the top left.
    public var corners: [Point] {
        [Point(x: x, y: y), Point(x: x + width, y: y), Point(x: x + width, y: y + height), Point(x: x, y: y + height)]
    }

    /// The box around some points.
    public init(around points: [Point]) {
        let xs = points.map(\.x), ys = points.map(\.y)
        let x = xs.min() ?? 0, y = ys.min() ?? 0
        self.init(x: x, y: y, width: (xs.max() ?? 0) - x, height: (ys.max() ?? 0) - y)
    }
}

/// A point in page pixels, written `[x, y]` in JSON.
public struct Point: Sendable, Codable, Equatable {
    public var x: Int
    public var y: Int

    public init(x: Int, y: Int) {
        self.x = x
        self.y = y
    }

    public init(from decoder: any Decoder) throws {
        var container = try decoder.unkeyedContainer()
        x = try container.decode(Int.self)
        y = try container.decode(Int.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.unkeyedContainer()
        try container.encode(x)
        try container.encode(y)
    }
}

/// One recognised word.
public struct OCRWord: Sendable, Codable, Equatable {
    public var text: String
    /// The axis-aligned box around `polygon`.
    public var box: BoundingBox
    /// Four corners clockwise from the top left of the word as read: rotated for scene text, the box's corners
    /// for the document pipeline.
    public var polygon: [Point]
    /// 0 to 100.
    public var confidence: Double

    public init(text: String, box: BoundingBox, confidence: Double, polygon: [Point]? = nil) {
        self.text = text
        self.box = box
        self.polygon = polygon ?? box.corners
        self.confidence = confidence
    }
}

/// One line of text with its words.
public struct OCRLine: Sendable, Codable, Equatable {
    public var text: String
    public var box: BoundingBox
    /// As for words: the detected region for scene text, the box's corners otherwise.
    public var polygon: [Point]
    public var confidence: Double
    public var words: [OCRWord]

    public init(text: String, box: BoundingBox, confidence: Double, words: [OCRWord], polygon: [Point]? = nil) {
        self.text = text
        self.box = box
        self.polygon = polygon ?? box.corners
        self.confidence = confidence
        self.words = words
    }
}

/// One page: its size, then its lines, then (inside them) its words.
public struct OCRPage: Sendable, Codable, Equatable {
    /// 1-based.
    public var number: Int
    /// The page's size after preprocessing: every box and polygon is in these pixels.
    public var width: Int
    public var height: Int
    /// The pipeline that read the page: "document" or "scene" (with `auto`, what the classifier chose).
    public var mode: PipelineMode?
    public var lines: [OCRLine]
    public var text: String

    public init(number: Int, width: Int, height: Int, mode: PipelineMode? = nil, lines: [OCRLine], text: String) {
        self.number = number
        self.width = width
        self.height = height
        self.mode = mode
        self.lines = lines
        self.text = text
    }
}

/// The result of one document, written as `result.json`; `text` is also written as `result.txt`.
///
/// `schemaVersion` changes whenever a field changes meaning or disappears; adding a field does not change it.
public struct OCRResult: Sendable, Codable, Equatable {
    public static let currentSchemaVersion = 1

    public var schemaVersion: Int
    /// The engine and its version, e.g. "tesseract 5.3.0".
    public var engine: String
    public var language: String
    /// The attempt of the job that produced this result (set by the worker; absent from `lector ocr`).
    public var attempt: Int?
    public var pages: [OCRPage]
    /// The text of every page, pages separated by a form feed.
    public var text: String
    /// The other output formats, written next to `result.json`; not part of the JSON.
    public var renderings: Renderings
    /// How long each page took and which pipeline read it (for metrics); not part of the JSON.
    public var pageTimings: [PageTiming] = []
    /// Where the engine's time went (logs and benchmarks); not part of the JSON.
    public var stages = StageTimes()

    public init(engine: String, language: String, pages: [OCRPage], renderings: Renderings = Renderings()) {
        self.schemaVersion = Self.currentSchemaVersion
        self.engine = engine
        self.language = language
        self.pages = pages
        self.text = pages.map(\.text).joined(separator: "\u{0C}")
        self.renderings = renderings
    }

    private enum CodingKeys: String, CodingKey {
        case schemaVersion, engine, language, attempt, pages, text
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        schemaVersion = try container.decode(Int.self, forKey: .schemaVersion)
        engine = try container.decode(String.self, forKey: .engine)
        language = try container.decode(String.self, forKey: .language)
        attempt = try container.decodeIfPresent(Int.self, forKey: .attempt)
        pages = try container.decode([OCRPage].self, forKey: .pages)
        text = try container.decode(String.self, forKey: .text)
        renderings = Renderings()
    }
}

/// The time one page took, and the pipeline that read it.
public struct PageTiming: Sendable, Equatable {
    public var mode: PipelineMode
    public var duration: Duration

    public init(mode: PipelineMode, duration: Duration) {
        self.mode = mode
        self.duration = duration
    }
}

/// A result in the formats other than JSON and text.
public struct Renderings: Sendable, Equatable {
    /// hOCR (XHTML with boxes and confidences) of every page.
    public var hocr: Data?
    /// A searchable PDF from Tesseract's PDF renderer: the page images with an invisible text layer. Made only
    /// when every page went through the document pipeline (the renderer lays out what Tesseract's own page
    /// analysis found); nil otherwise.
    public var pdf: Data?
    /// Each page's preview and thumbnail, in page order (nil for a page Leptonica could not encode; empty
    /// when the engine makes none, as the no-op engine).
    public var previews: [PagePreview?]

    public init(hocr: Data? = nil, pdf: Data? = nil, previews: [PagePreview?] = []) {
        self.hocr = hocr
        self.pdf = pdf
        self.previews = previews
    }
}

/// Seconds spent in each stage of one job, summed over its pages: the engine's stages (`decode`, `preprocess`,
/// `preview` for the page's JPEG preview and thumbnail, `classify`, `recognize`, `hocr`, `pdf`, `scene` for the
/// whole scene pipeline), the slot's (`slot`: the hop to the engine's thread; `engine`: the engine's time
/// outside its stages) and the worker's (`claim`, `read`, `return`: the hop back from the engine's thread,
/// `encode`, `stage`, `end`). The worker logs them with each job (BENCHMARKS.md, P1, sums them) and records
/// them in `lector_job_stage_seconds`. Beside these wall times, `engineCPU`: the CPU time of the engine's
/// thread during its calls.
public struct StageTimes: Sendable, Equatable, CustomStringConvertible {
    /// Stage names in the order a job meets them.
    public static let order = [
        "claim", "read", "slot", "decode", "preprocess", "preview", "classify", "recognize", "scene", "hocr", "pdf", "engine", "return",
        "encode", "stage", "end",
    ]

    public private(set) var seconds: [String: Double] = [:]
    /// CPU seconds of the slot's thread while the engine read the document (`CLOCK_THREAD_CPUTIME_ID`; the
    /// slot measures it, `EngineSlot`): what the document cost, whatever else the machine ran meanwhile. Not a
    /// stage (it overlaps them), so not in `total`.
    public private(set) var engineCPU: Double = 0

    public init() {}

    public mutating func addEngineCPU(_ seconds: Double) {
        engineCPU += seconds
    }

    public mutating func add(_ stage: String, _ duration: Duration) {
        let (whole, fraction) = duration.components
        seconds[stage, default: 0] += Double(whole) + Double(fraction) / 1e18
    }

    /// Runs `body`, adding its time to `stage`.
    public mutating func measure<T, E: Error>(_ stage: String, _ body: () throws(E) -> T) throws(E) -> T {
        let started = ContinuousClock.now
        defer { add(stage, ContinuousClock.now - started) }
        return try body()
    }

    /// The sum of every stage, in seconds.
    public var total: Double { seconds.values.reduce(0, +) }

    public mutating func merge(_ other: StageTimes) {
        for (stage, value) in other.seconds { seconds[stage, default: 0] += value }
        engineCPU += other.engineCPU
    }

    /// "read=0.0004 decode=0.0311 …" (seconds) in `order`.
    public var description: String {
        let known = Self.order.filter { seconds[$0] != nil }
        let other = seconds.keys.filter { !Self.order.contains($0) }.sorted()
        return (known + other).map { "\($0)=" + String(format: "%.4f", seconds[$0]!) }.joined(separator: " ")
    }
}

/// A page's picture for people: the page as the engine read it (after preprocessing), halved until its long side
/// is at most `PagePreview.longSide` pixels (a JPEG page that fits, read as it is, is its own preview), and a
/// thumbnail, both JPEG. Boxes in `result.json` are
/// in the page's pixels (`OCRPage.width` × `height`); scale them by `width / page.width` to draw them over
/// the preview.
public struct PagePreview: Sendable, Equatable {
    /// The preview's longest side, in pixels (never enlarged: a smaller page keeps its size).
    public static let longSide = 1600
    /// The thumbnail's longest side.
    public static let thumbnailLongSide = 240

    public var image: Data
    public var width: Int
    public var height: Int
    public var thumbnail: Data

    public init(image: Data, width: Int, height: Int, thumbnail: Data) {
        self.image = image
        self.width = width
        self.height = height
        self.thumbnail = thumbnail
    }
}
