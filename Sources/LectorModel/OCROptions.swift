/// How a page is read.
public enum PipelineMode: String, Sendable, Codable, CaseIterable {
    /// Classify each page before OCR and pick `document` or `scene` (`PageClassifier`).
    case auto
    /// Tesseract's own page layout analysis: scans, forms, receipts, book pages.
    case document
    /// Text detection (DB or EAST) → each region cropped upright → Tesseract single-line: photos, signs, labels.
    case scene
}

/// The text detector of the scene pipeline.
public enum DetectorKind: String, Sendable, Codable, CaseIterable {
    /// PP-OCRv4 DB, shipped with Lector (the default).
    case db
    /// EAST; its model is fetched separately (`lector models fetch east`).
    case east

    /// The error when this detector's model file is absent, saying how to get it.
    public var modelMissing: OCRError {
        OCRError(.unsupportedOption, self == .east
            ? "the EAST model is not installed: run `lector models fetch east` (or `make models`), or use detector \"db\""
            : "the DB detector's model is missing (it ships in deploy/models/ppocr-v4-det; set LECTOR_DB_MODEL)")
    }
}

/// What reads the text of each line.
public enum RecognizerKind: String, Sendable, Codable, CaseIterable {
    /// Tesseract 5's LSTM, with its own page layout for document pages (the default).
    case tesseract
    /// PP-OCRv6's small recogniser (shipped in deploy/models/ppocr-v6-rec): every page is read by the text
    /// detector, then each region by this recogniser. Latin-script languages only.
    case ppocr

    /// Tesseract codes of the languages whose script the PP-OCR recogniser's Latin character set covers.
    public static let ppocrLanguages: Set<String> = [
        "afr", "cat", "ces", "dan", "deu", "eng", "est", "eus", "fin", "fra", "glg", "hrv", "hun", "ind", "isl", "ita",
        "lat", "lav", "lit", "msa", "nld", "nor", "pol", "por", "ron", "slk", "slv", "spa", "sqi", "swe", "tur",
    ]

    public var modelMissing: OCRError {
        OCRError(.unsupportedOption, "the PP-OCR recogniser's models are missing (they ship in deploy/models/ppocr-v6-rec)")
    }
}

/// A format a job's result is written in. `json` and `txt` are always written; `hocr` and `pdf` are rendered
/// during the recognition only when the job asks for them (most clients never read them).
public enum ResultFormat: String, Sendable, Codable, CaseIterable, Comparable {
    case json, txt, hocr, pdf

    public static func < (a: ResultFormat, b: ResultFormat) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// What a job asks of the engine. Parsed and checked at submit, stored with the job as JSON.
///
/// Old jobs stored only `lang`; the other fields decode to their defaults when absent, except `formats`: a job
/// stored before the option existed was promised every format, so it still gets every one.
public struct OCROptions: Sendable, Codable, Equatable {
    /// Tesseract languages joined by "+", e.g. "eng" or "eng+deu".
    public var lang: String
    public var mode: PipelineMode
    /// Applied in order to every page before OCR.
    public var operations: [PreprocessingOperation]
    public var detector: DetectorKind
    public var recognizer: RecognizerKind
    /// The result's formats, sorted, without repeats; always holds `json` and `txt`.
    public var formats: [ResultFormat] {
        didSet { formats = Self.normalized(formats) }
    }

    /// What a job gets when it names no formats: the two every client reads.
    public static let defaultFormats: [ResultFormat] = [.json, .txt]

    public init(
        lang: String, mode: PipelineMode = .auto, operations: [PreprocessingOperation] = [], detector: DetectorKind = .db,
        formats: [ResultFormat] = OCROptions.defaultFormats, recognizer: RecognizerKind = .tesseract
    ) {
        self.lang = lang
        self.mode = mode
        self.operations = operations
        self.detector = detector
        self.recognizer = recognizer
        self.formats = Self.normalized(formats)
    }

    /// Whether the job asked for `format` (`json` and `txt`: always).
    public func wants(_ format: ResultFormat) -> Bool { formats.contains(format) }

    static func normalized(_ formats: [ResultFormat]) -> [ResultFormat] {
        Set(formats + defaultFormats).sorted()
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        lang = try container.decode(String.self, forKey: .lang)
        mode = try container.decodeIfPresent(PipelineMode.self, forKey: .mode) ?? .auto
        operations = try container.decodeIfPresent([PreprocessingOperation].self, forKey: .operations) ?? []
        detector = try container.decodeIfPresent(DetectorKind.self, forKey: .detector) ?? .db
        recognizer = try container.decodeIfPresent(RecognizerKind.self, forKey: .recognizer) ?? .tesseract
        formats = Self.normalized(try container.decodeIfPresent([ResultFormat].self, forKey: .formats) ?? ResultFormat.allCases)
    }

    /// The most operations one job may ask for.
    public static let maxOperations = 16

    /// The language codes, in order.
    public var languages: [String] { lang.split(separator: "+", omittingEmptySubsequences: false).map(String.init) }

    /// Checks the options against what the engine has installed.
    public func validate(
        availableLanguages: Set<String>, availableDetectors: Set<DetectorKind> = Set(DetectorKind.allCases),
        availableRecognizers: Set<RecognizerKind> = Set(RecognizerKind.allCases)
    ) throws(OCRError) {
        let codes = languages
        guard !codes.isEmpty, codes.count <= 8 else {
            throw OCRError(.unsupportedOption, "lang must name 1 to 8 languages joined by '+', e.g. \"eng+deu\"")
        }
        for code in codes {
            // Codes become file names inside Tesseract: allow only the characters its model names use.
            guard !code.isEmpty, code.count <= 32,
                code.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") })
            else {
                throw OCRError(.unsupportedOption, "lang contains an invalid language code \"\(code.prefix(40))\"")
            }
            guard availableLanguages.contains(code) else {
                let known = availableLanguages.sorted().joined(separator: ", ")
                throw OCRError(.unsupportedOption, "language \"\(code)\" is not installed (installed: \(known))")
            }
        }
        guard operations.count <= Self.maxOperations else {
            throw OCRError(.unsupportedOption, "operations may list at most \(Self.maxOperations) steps")
        }
        if mode != .document || recognizer == .ppocr, !availableDetectors.contains(detector) {
            throw detector.modelMissing
        }
        if recognizer == .ppocr {
            guard availableRecognizers.contains(.ppocr) else { throw recognizer.modelMissing }
            guard !formats.contains(.pdf) else {
                throw OCRError(.unsupportedOption,
                    "recognizer ppocr makes no searchable PDF (the PDF is Tesseract's layout): drop pdf from formats, or use recognizer tesseract")
            }
            guard mode != .document else {
                throw OCRError(.unsupportedOption,
                    "recognizer ppocr reads every page through the text detector: use mode auto or scene, or recognizer tesseract for mode document")
            }
            if let other = codes.first(where: { !RecognizerKind.ppocrLanguages.contains($0) }) {
                throw OCRError(.unsupportedOption,
                    "recognizer ppocr reads Latin-script languages only, not \"\(other)\": use recognizer tesseract")
            }
        }
    }
}

/// One preprocessing step, written `name` or `name:argument` (e.g. `binarize:adaptive`, `scale:1.5`).
public enum PreprocessingOperation: Sendable, Equatable, Codable, CustomStringConvertible {
    /// Straighten a page scanned at a small angle (Leptonica's skew search, up to about 7°).
    case deskew
    /// Turn a page scanned sideways or upside down upright (Tesseract's orientation detection, `osd`).
    case orient
    case grayscale
    /// Black and white: Otsu's global threshold, or Sauvola's local one for uneven lighting.
    case binarize(BinarizeMethod)
    /// Remove specks: a 3×3 median on grey or colour pages, small-component removal on black-and-white ones.
    case denoise
    /// Resize by a factor (0.25 to 4; default 2): upsampling small text helps Tesseract.
    case scale(Double)

    public enum BinarizeMethod: String, Sendable, Equatable, CaseIterable {
        case otsu, adaptive
    }

    public static let names = ["deskew", "orient", "grayscale", "binarize", "denoise", "scale"]

    /// Parses `name` or `name:argument`; the error says what is wrong.
    public init(parsing text: String) throws(OCRError) {
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let name = parts[0], argument = parts.count > 1 ? parts[1] : nil
        func noArgument(_ operation: PreprocessingOperation) throws(OCRError) -> PreprocessingOperation {
            guard argument == nil else { throw OCRError(.unsupportedOption, "operation \(name) takes no argument") }
            return operation
        }
        switch name {
        case "deskew": self = try noArgument(.deskew)
        case "orient": self = try noArgument(.orient)
        case "grayscale": self = try noArgument(.grayscale)
        case "denoise": self = try noArgument(.denoise)
        case "binarize":
            guard let method = BinarizeMethod(rawValue: argument ?? "otsu") else {
                throw OCRError(.unsupportedOption, "binarize takes otsu or adaptive, e.g. \"binarize:adaptive\"")
            }
            self = .binarize(method)
        case "scale":
            let factor = argument.flatMap(Double.init) ?? (argument == nil ? 2 : .nan)
            guard factor.isFinite, factor >= 0.25, factor <= 4 else {
                throw OCRError(.unsupportedOption, "scale takes a factor from 0.25 to 4, e.g. \"scale:2\"")
            }
            self = .scale(factor)
        default:
            throw OCRError(.unsupportedOption,
                "unknown operation \"\(name.prefix(40))\"; allowed: \(Self.names.joined(separator: ", "))")
        }
    }

    public var description: String {
        switch self {
        case .deskew: "deskew"
        case .orient: "orient"
        case .grayscale: "grayscale"
        case .denoise: "denoise"
        case .binarize(let method): "binarize:\(method.rawValue)"
        case .scale(let factor): "scale:\(factor)"
        }
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do {
            try self.init(parsing: text)
        } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.message))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
