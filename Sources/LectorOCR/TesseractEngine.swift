import CTesseract
import Foundation

/// Builds `TesseractEngine`s.
public struct TesseractEngineFactory: OCREngineFactory {
    /// Tesseract's model folder; nil for the one Tesseract was built with.
    public let dataPath: String?
    public let limits: OCRLimits

    public init(dataPath: String?, limits: OCRLimits) {
        self.dataPath = dataPath
        self.limits = limits
    }

    /// Leptonica decodes these. PDF needs a rasteriser and is refused for now. GIF is refused because
    /// Leptonica's header reader decodes every frame before it reports a size, so the pixel limit could not be
    /// checked before the memory is spent.
    public var supportedTypes: Set<DocumentType> { [.png, .jpeg, .tiff, .bmp, .webp, .pnm] }

    public func availableLanguages() throws(OCRError) -> Set<String> {
        let handle = try TesseractHandle(dataPath: dataPath, language: nil)
        return handle.availableLanguages()
    }

    public func makeEngine() throws(OCRError) -> any OCREngine {
        TesseractEngine(dataPath: dataPath, limits: limits)
    }

    /// "tesseract 5.3.0".
    public static var version: String { "tesseract \(String(cString: TessVersion()))" }
}

/// Full-page recognition with Tesseract 5's LSTM engine and its own page layout analysis.
///
/// Holds one `TessBaseAPI` handle, re-initialised only when a job asks for other languages. Not thread-safe:
/// one per worker slot, used from that slot's thread only.
public final class TesseractEngine: OCREngine {
    private let dataPath: String?
    private let limits: OCRLimits
    private var handle: TesseractHandle?

    public init(dataPath: String?, limits: OCRLimits) {
        self.dataPath = dataPath
        self.limits = limits
        // Leptonica writes decoding errors to stderr; we report them through OCRError instead.
        _ = setMsgSeverity(Int32(L_SEVERITY_NONE))
    }

    public func recognize(
        _ document: OCRDocument, options: OCROptions, cancellation: OCRCancellation
    ) throws(OCRError) -> OCRResult {
        let handle = try handle(for: options.lang)
        let images = try PageImages(document: document, limits: limits)
        var pages: [OCRPage] = []
        for index in 0..<images.count {
            if cancellation.isCancelled { throw OCRError(.cancelled, "recognition was cancelled") }
            let pix = try images.page(index)
            defer { var p: UnsafeMutablePointer<PIX>? = pix; pixDestroy(&p) }
            pages.append(try handle.recognize(pix, pageNumber: index + 1, cancellation: cancellation))
        }
        return OCRResult(engine: TesseractEngineFactory.version, language: options.lang, pages: pages)
    }

    private func handle(for language: String) throws(OCRError) -> TesseractHandle {
        if let handle, handle.language == language { return handle }
        handle = nil
        let fresh = try TesseractHandle(dataPath: dataPath, language: language)
        handle = fresh
        return fresh
    }
}

/// Owns one `TessBaseAPI*`; `deinit` ends and frees it.
final class TesseractHandle {
    let pointer: OpaquePointer
    let language: String

    init(dataPath: String?, language: String?) throws(OCRError) {
        guard let pointer = TessBaseAPICreate() else {
            throw OCRError(.engineFailure, "could not create a Tesseract instance")
        }
        self.pointer = pointer
        self.language = language ?? "eng"
        let status: Int32 = dataPath.withOptionalCString { path in
            language.withOptionalCString { lang in TessBaseAPIInit3(pointer, path, lang) }
        }
        guard status == 0 else {
            // deinit frees the handle: every stored property is set, so a throwing init still runs it.
            throw OCRError(.unsupportedOption, "Tesseract could not load language \"\(self.language)\"")
        }
        _ = TessBaseAPISetVariable(pointer, "debug_file", "/dev/null")
        TessBaseAPISetPageSegMode(pointer, PSM_AUTO)
    }

    deinit {
        TessBaseAPIEnd(pointer)
        TessBaseAPIDelete(pointer)
    }

    func availableLanguages() -> Set<String> {
        guard let list = TessBaseAPIGetAvailableLanguagesAsVector(pointer) else { return [] }
        defer { TessDeleteTextArray(list) }
        var languages: Set<String> = []
        var index = 0
        while let entry = list[index] {
            let name = String(cString: entry)
            if name != "osd" { languages.insert(name) }
            index += 1
        }
        return languages
    }

    func recognize(
        _ pix: UnsafeMutablePointer<PIX>, pageNumber: Int, cancellation: OCRCancellation
    ) throws(OCRError) -> OCRPage {
        let width = Int(pixGetWidth(pix))
        let height = Int(pixGetHeight(pix))
        TessBaseAPISetImage2(pointer, pix)
        // Scans often carry no resolution; Tesseract then guesses and logs. 300 dpi is the common case.
        if pixGetXRes(pix) < 70 { TessBaseAPISetSourceResolution(pointer, 300) }
        defer { TessBaseAPIClear(pointer) }
        // Tesseract calls the monitor's cancel function as it goes; it reads our flag.
        let monitor = TessMonitorCreate()
        defer { TessMonitorDelete(monitor) }
        let context = Unmanaged.passUnretained(cancellation).toOpaque()
        TessMonitorSetCancelThis(monitor, context)
        TessMonitorSetCancelFunc(monitor) { context, _ in
            guard let context else { return false }
            return Unmanaged<OCRCancellation>.fromOpaque(context).takeUnretainedValue().isCancelled
        }
        let status = withExtendedLifetime(cancellation) { TessBaseAPIRecognize(pointer, monitor) }
        if cancellation.isCancelled { throw OCRError(.cancelled, "recognition was cancelled") }
        guard status == 0 else {
            throw OCRError(.unreadableDocument, "Tesseract could not recognise page \(pageNumber)")
        }
        var lines: [OCRLine] = []
        if let iterator = TessBaseAPIGetIterator(pointer) {
            defer { TessResultIteratorDelete(iterator) }
            let page = TessResultIteratorGetPageIterator(iterator)
            repeat {
                if TessPageIteratorIsAtBeginningOf(page, RIL_TEXTLINE) != 0 {
                    let text = Self.text(iterator, RIL_TEXTLINE).trimmingCharacters(in: .whitespacesAndNewlines)
                    lines.append(OCRLine(
                        text: text, box: Self.box(page, RIL_TEXTLINE),
                        confidence: Self.confidence(iterator, RIL_TEXTLINE), words: []))
                }
                let word = Self.text(iterator, RIL_WORD)
                if !word.isEmpty, !lines.isEmpty {
                    lines[lines.count - 1].words.append(OCRWord(
                        text: word, box: Self.box(page, RIL_WORD), confidence: Self.confidence(iterator, RIL_WORD)))
                }
            } while TessResultIteratorNext(iterator, RIL_WORD) != 0
        }
        lines.removeAll { $0.words.isEmpty && $0.text.isEmpty }
        return OCRPage(
            number: pageNumber, width: width, height: height, lines: lines,
            text: lines.map(\.text).joined(separator: "\n"))
    }

    private static func text(_ iterator: OpaquePointer, _ level: TessPageIteratorLevel) -> String {
        guard let raw = TessResultIteratorGetUTF8Text(iterator, level) else { return "" }
        defer { TessDeleteText(raw) }
        return String(cString: raw)
    }

    private static func confidence(_ iterator: OpaquePointer, _ level: TessPageIteratorLevel) -> Double {
        (Double(TessResultIteratorConfidence(iterator, level)) * 100).rounded() / 100
    }

    private static func box(_ page: OpaquePointer?, _ level: TessPageIteratorLevel) -> BoundingBox {
        var left: Int32 = 0, top: Int32 = 0, right: Int32 = 0, bottom: Int32 = 0
        _ = TessPageIteratorBoundingBox(page, level, &left, &top, &right, &bottom)
        return BoundingBox(x: Int(left), y: Int(top), width: Int(right - left), height: Int(bottom - top))
    }
}

/// Decodes the pages of a document with Leptonica, checking page count and pixel limits from the headers
/// before any pixel buffer is allocated.
struct PageImages {
    let document: OCRDocument
    let count: Int

    init(document: OCRDocument, limits: OCRLimits) throws(OCRError) {
        self.document = document
        guard !document.data.isEmpty else { throw OCRError(.unreadableDocument, "the document is empty") }
        var pages = 1
        if document.type == .tiff {
            pages = 0
            // Count pages by reading headers; stop one past the limit.
            while pages <= limits.maxPages, Self.tiffHeader(document.data, page: pages) != nil { pages += 1 }
            guard pages > 0 else {
                throw OCRError(.unreadableDocument, "not a readable TIFF image: its header could not be decoded")
            }
            guard pages <= limits.maxPages else {
                throw OCRError(.limitExceeded, "the document has more than \(limits.maxPages) pages")
            }
            for page in 0..<pages {
                if let (w, h) = Self.tiffHeader(document.data, page: page) {
                    try Self.checkPixels(w, h, page: page + 1, limits: limits)
                }
            }
        } else if document.type == .bmp {
            // Leptonica's header reader decodes a whole BMP; read the size from the header ourselves first.
            let bytes = [UInt8](document.data.prefix(26))
            guard bytes.count == 26 else {
                throw OCRError(.unreadableDocument, "not a readable BMP image: its header is truncated")
            }
            func int32(_ offset: Int) -> Int32 {
                Int32(bitPattern: UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8
                    | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24)
            }
            let width = Int(int32(18)), height = Int(int32(22)).magnitude
            try Self.checkPixels(width, Int(height), page: 1, limits: limits)
            try Self.checkHeader(document, limits: limits)
        } else {
            try Self.checkHeader(document, limits: limits)
        }
        self.count = pages
    }

    private static func checkHeader(_ document: OCRDocument, limits: OCRLimits) throws(OCRError) {
        do {
            var format: Int32 = 0, w: Int32 = 0, h: Int32 = 0, bps: Int32 = 0, spp: Int32 = 0, cmap: Int32 = 0
            let status = document.data.withUnsafeBytes { raw in
                pixReadHeaderMem(raw.bindMemory(to: UInt8.self).baseAddress, raw.count, &format, &w, &h, &bps, &spp, &cmap)
            }
            guard status == 0 else {
                throw OCRError(.unreadableDocument,
                    "not a readable \(document.type.rawValue.uppercased()) image: its header could not be decoded")
            }
            try Self.checkPixels(Int(w), Int(h), page: 1, limits: limits)
        }
    }

    func page(_ index: Int) throws(OCRError) -> UnsafeMutablePointer<PIX> {
        let pix = document.data.withUnsafeBytes { raw -> UnsafeMutablePointer<PIX>? in
            let base = raw.bindMemory(to: UInt8.self).baseAddress
            return document.type == .tiff ? pixReadMemTiff(base, raw.count, Int32(index)) : pixReadMem(base, raw.count)
        }
        guard let pix else {
            throw OCRError(.unreadableDocument,
                "not a readable \(document.type.rawValue.uppercased()) image: page \(index + 1) could not be decoded (truncated or corrupt)")
        }
        return pix
    }

    private static func tiffHeader(_ data: Data, page: Int) -> (Int, Int)? {
        var w: Int32 = 0, h: Int32 = 0, bps: Int32 = 0, spp: Int32 = 0, res: Int32 = 0, cmap: Int32 = 0, format: Int32 = 0
        let status = data.withUnsafeBytes { raw in
            readHeaderMemTiff(raw.bindMemory(to: UInt8.self).baseAddress, raw.count, Int32(page), &w, &h, &bps, &spp, &res, &cmap, &format)
        }
        return status == 0 ? (Int(w), Int(h)) : nil
    }

    private static func checkPixels(_ width: Int, _ height: Int, page: Int, limits: OCRLimits) throws(OCRError) {
        guard width > 0, height > 0 else {
            throw OCRError(.unreadableDocument, "page \(page) has no pixels (\(width) × \(height))")
        }
        guard width.multipliedReportingOverflow(by: height).partialValue <= limits.maxPagePixels,
            width <= 1 << 20, height <= 1 << 20
        else {
            throw OCRError(.limitExceeded,
                "page \(page) is \(width) × \(height) pixels, over the limit of \(limits.maxPagePixels) pixels per page")
        }
    }
}

extension Optional where Wrapped == String {
    fileprivate func withOptionalCString<R>(_ body: (UnsafePointer<CChar>?) -> R) -> R {
        switch self {
        case .some(let string): string.withCString { body($0) }
        case .none: body(nil)
        }
    }
}
