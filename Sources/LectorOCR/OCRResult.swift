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

/// One recognised word.
public struct OCRWord: Sendable, Codable, Equatable {
    public var text: String
    public var box: BoundingBox
    /// 0 to 100.
    public var confidence: Double

    public init(text: String, box: BoundingBox, confidence: Double) {
        self.text = text
        self.box = box
        self.confidence = confidence
    }
}

/// One line of text with its words.
public struct OCRLine: Sendable, Codable, Equatable {
    public var text: String
    public var box: BoundingBox
    public var confidence: Double
    public var words: [OCRWord]

    public init(text: String, box: BoundingBox, confidence: Double, words: [OCRWord]) {
        self.text = text
        self.box = box
        self.confidence = confidence
        self.words = words
    }
}

/// One page: its size, then its lines, then (inside them) its words.
public struct OCRPage: Sendable, Codable, Equatable {
    /// 1-based.
    public var number: Int
    public var width: Int
    public var height: Int
    public var lines: [OCRLine]
    public var text: String

    public init(number: Int, width: Int, height: Int, lines: [OCRLine], text: String) {
        self.number = number
        self.width = width
        self.height = height
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

    public init(engine: String, language: String, pages: [OCRPage]) {
        self.schemaVersion = Self.currentSchemaVersion
        self.engine = engine
        self.language = language
        self.pages = pages
        self.text = pages.map(\.text).joined(separator: "\u{0C}")
    }
}
