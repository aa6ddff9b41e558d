import COpenCV
import CTesseract
import LectorModel
import NIOConcurrencyHelpers
import Foundation

/// Where the text detectors' models are. A missing file means that detector is unavailable.
public struct DetectorModels: Sendable, Equatable {
    public var db: String?
    public var east: String?
    /// The PP-OCR recogniser's files (`recognizer: ppocr`).
    public var recognizer: RecognizerModels

    public init(db: String?, east: String?, recognizer: RecognizerModels = RecognizerModels(folder: nil, anglePath: nil)) {
        self.db = db
        self.east = east
        self.recognizer = recognizer
    }

    /// The shipped DB model and a fetched EAST model, looked up under the working directory and under the
    /// folder two levels above the executable (the repository root for `.build/release/lector`).
    public static func discover(db: String? = nil, east: String? = nil) -> DetectorModels {
        func find(_ explicit: String?, _ relative: String) -> String? {
            if let explicit, !explicit.isEmpty { return explicit }
            let executable = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath()
            let candidates = [
                FileManager.default.currentDirectoryPath + "/" + relative,
                executable.deletingLastPathComponent().appendingPathComponent("../../\(relative)").standardized.path,
                executable.deletingLastPathComponent().appendingPathComponent("../../../\(relative)").standardized.path,
            ]
            return candidates.first { FileManager.default.isReadableFile(atPath: $0) } ?? candidates[0]
        }
        // The recogniser's folder: where its character list is found.
        let keys = RecognizerModels.folderRelativePath + "/" + RecognizerModels.keysFileName
        let folder = ((find(nil, keys) ?? keys) as NSString).deletingLastPathComponent
        return DetectorModels(db: find(db, Self.dbRelativePath), east: find(east, Self.eastRelativePath),
                              recognizer: RecognizerModels(folder: folder, anglePath: find(nil, RecognizerModels.angleRelativePath)))
    }

    public static let dbRelativePath = "deploy/models/ppocr-v4-det/ch_PP-OCRv4_det_infer.opencv46.onnx"
    public static let eastRelativePath = "deploy/models/east/frozen_east_text_detection.pb"

    func path(for kind: DetectorKind) -> String? {
        switch kind {
        case .db: db
        case .east: east
        }
    }

    /// The detectors whose model file is readable.
    public var available: Set<DetectorKind> {
        Set(DetectorKind.allCases.filter { kind in path(for: kind).map { FileManager.default.isReadableFile(atPath: $0) } ?? false })
    }
}

/// Builds `TesseractEngine`s.
public struct TesseractEngineFactory: OCREngineFactory {
    /// Tesseract's model folder; nil for the one Tesseract was built with.
    public let dataPath: String?
    public let limits: OCRLimits
    public let models: DetectorModels
    /// PDF pages are rasterised at this resolution (dots per inch).
    public let pdfDPI: Int

    public init(dataPath: String?, limits: OCRLimits, models: DetectorModels = .discover(), pdfDPI: Int = 300) {
        self.dataPath = dataPath
        self.limits = limits
        self.models = models
        self.pdfDPI = pdfDPI
    }

    /// Leptonica decodes the images, poppler's `pdftoppm` rasterises PDFs (when installed). GIF is refused
    /// because Leptonica's header reader decodes every frame before it reports a size, so the pixel limit could
    /// not be checked before the memory is spent.
    public var supportedTypes: Set<DocumentType> {
        var types: Set<DocumentType> = [.png, .jpeg, .tiff, .bmp, .webp, .pnm]
        if PDFRasterizer.isInstalled { types.insert(.pdf) }
        return types
    }

    public func availableLanguages() throws(OCRError) -> Set<String> {
        let handle = try TesseractHandle(dataPath: dataPath, language: nil)
        return handle.availableLanguages()
    }

    /// The versions of Tesseract, Leptonica, OpenCV and poppler, Lector's pipeline revision, the PDF resolution,
    /// and a digest of the contents of every model file (Tesseract's language models, the detectors): two hosts
    /// with the same libraries and the same models have the same identity, whatever their files' times.
    public func identity() throws(OCRError) -> String {
        let handle = try TesseractHandle(dataPath: dataPath, language: nil)
        let folder = URL(fileURLWithPath: handle.dataPath, isDirectory: true)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        var paths = names.filter { $0.hasSuffix(".traineddata") }.sorted().map { folder.appendingPathComponent($0).path }
        paths += [models.db, models.east].compactMap { $0 } + models.recognizer.files
        let digest = ModelDigest.of(paths)
        let leptonica: String = {
            guard let text = getLeptonicaVersion() else { return "unknown" }
            defer { lept_free(text) }
            return String(cString: text)
        }()
        return "\(Self.version); \(leptonica); opencv \(String(cString: lcv_version())); \(PDFRasterizer.version); "
            + "lector-pipeline \(OCREngineRevision.pipeline); dpi \(pdfDPI); models \(digest)"
    }

    /// Tesseract always; PP-OCR when its models are installed.
    public var availableRecognizers: Set<RecognizerKind> {
        models.recognizer.isAvailable ? [.tesseract, .ppocr] : [.tesseract]
    }

    public func makeEngine() throws(OCRError) -> any OCREngine {
        TesseractEngine(dataPath: dataPath, limits: limits, models: models, pdfDPI: pdfDPI)
    }

    /// "tesseract 5.3.0".
    public static var version: String { "tesseract \(String(cString: TessVersion()))" }
}

/// Lector's engine: per page, preprocessing, then the document pipeline (Tesseract's own page layout) or the
/// scene pipeline (text detection, then Tesseract on each region), chosen by the job or by `PageClassifier`.
///
/// Holds one `TessBaseAPI` handle (re-initialised only when a job asks for other languages), an `osd` handle and
/// the detectors, each created on first use. Not thread-safe: one per worker slot, used from that slot's thread.
public final class TesseractEngine: OCREngine {
    private let dataPath: String?
    private let limits: OCRLimits
    private let models: DetectorModels
    private let pdfDPI: Int
    private var handle: TesseractHandle?
    private var osd: TesseractHandle?
    private var detectors: [DetectorKey: TextDetector] = [:]
    private var lineRecognizer: LineRecognizer?
    /// How many detector networks are loaded now (tests check that empty pages load none).
    var loadedDetectors: Int { detectors.count }

    public init(dataPath: String?, limits: OCRLimits, models: DetectorModels = .discover(), pdfDPI: Int = 300) {
        self.dataPath = dataPath
        self.limits = limits
        self.models = models
        self.pdfDPI = pdfDPI
        // Leptonica writes decoding errors to stderr; we report them through OCRError instead.
        _ = setMsgSeverity(Int32(L_SEVERITY_NONE))
    }

    public func recognize(
        _ document: OCRDocument, options: OCROptions, cancellation: OCRCancellation
    ) throws(OCRError) -> OCRResult {
        cancellation.startBudget(limits.maxDocumentTime)
        var stages = StageTimes()
        let handle = try handle(for: options.lang)
        // Headers first (and for a PDF, pdfinfo): part of decoding.
        let images = try stages.measure("decode") { () throws(OCRError) in
            try PageImages(document: document, limits: limits, pdfDPI: pdfDPI)
        }
        var decodedPixels = 0
        let preprocessor = Preprocessor(limits: limits) { () throws(OCRError) -> TesseractHandle in
            try self.orientationHandle()
        }
        var pages: [OCRPage] = []
        // hOCR and the searchable PDF only when the job asked for them (most clients read JSON or text; together
        // they cost ~14 ms of a receipt's ~400: BENCHMARKS.md, P1).
        let wantsHOCR = options.wants(.hocr)
        var hocrPages: [String] = []
        // The searchable PDF: started at the first page read by the document pipeline, given up at the first
        // scene page (Tesseract's renderer lays out only its own page analysis).
        var pdf: PDFRendering?
        var pdfPossible = options.wants(.pdf)
        var timings: [PageTiming] = []
        cancellation.reportProgress(done: 0, total: images.count)
        var previews: [PagePreview?] = []
        for index in 0..<images.count {
            try cancellation.check()
            defer { cancellation.reportProgress(done: index + 1, total: images.count) }
            let output = try readPage(
                index, of: images, handle: handle, preprocessor: preprocessor, options: options, wantsHOCR: wantsHOCR,
                pdf: &pdf, pdfPossible: &pdfPossible, decodedPixels: &decodedPixels, stages: &stages, cancellation: cancellation)
            pages.append(output.page)
            previews.append(output.preview)
            timings.append(output.timing)
            if let hocr = output.hocr { hocrPages.append(hocr) }
        }
        let hocr = wantsHOCR
            ? stages.measure("hocr") { Data(HOCR.document(pages: hocrPages, engine: TesseractEngineFactory.version, language: options.lang).utf8) }
            : nil
        var pdfBytes: Data?
        if let pdf { pdfBytes = stages.measure("pdf") { pdf.finish() } }
        var result = OCRResult(engine: TesseractEngineFactory.version, language: options.lang, pages: pages,
                               renderings: Renderings(hocr: hocr, pdf: pdfBytes, previews: previews))
        result.pageTimings = timings
        result.stages = stages
        return result
    }

    /// A document's page count from its headers (PDF: `pdfinfo`), with the page and pixel limits checked: the
    /// worker splits a document of several pages into page tasks (docs/design/queue.md, "Page tasks").
    public func pageCount(_ document: OCRDocument) throws(OCRError) -> Int? {
        try PageImages(document: document, limits: limits, pdfDPI: pdfDPI).count
    }

    /// Reads page `index` (from 0) alone, exactly as `recognize` reads it within the document: the page, its
    /// hOCR, a one-page searchable PDF (when asked for and the document pipeline read it) and its preview.
    public func recognizePage(
        _ document: OCRDocument, index: Int, options: OCROptions, cancellation: OCRCancellation
    ) throws(OCRError) -> PageReading {
        cancellation.startBudget(limits.maxDocumentTime)
        var stages = StageTimes()
        let handle = try handle(for: options.lang)
        let images = try stages.measure("decode") { () throws(OCRError) in
            try PageImages(document: document, limits: limits, pdfDPI: pdfDPI, only: index)
        }
        guard images.count > index else {
            throw OCRError(.unreadableDocument, "the document has \(images.count) pages, not \(index + 1)")
        }
        let preprocessor = Preprocessor(limits: limits) { () throws(OCRError) -> TesseractHandle in
            try self.orientationHandle()
        }
        var pdf: PDFRendering?
        var pdfPossible = options.wants(.pdf)
        var decodedPixels = 0
        let output = try readPage(
            index, of: images, handle: handle, preprocessor: preprocessor, options: options, wantsHOCR: options.wants(.hocr),
            pdf: &pdf, pdfPossible: &pdfPossible, decodedPixels: &decodedPixels, stages: &stages, cancellation: cancellation)
        var pdfBytes: Data?
        if let pdf { pdfBytes = stages.measure("pdf") { pdf.finish() } }
        return PageReading(engine: TesseractEngineFactory.version, page: output.page, hocr: output.hocr, pdf: pdfBytes, preview: output.preview, timing: output.timing, stages: stages)
    }

    /// One page of `recognize`: decode, preprocess, preview, classify, then the document or the scene pipeline.
    /// `pdf` is the searchable PDF being built (started here at the first document page, dropped at a scene page).
    private func readPage(
        _ index: Int, of images: PageImages, handle: TesseractHandle, preprocessor: Preprocessor, options: OCROptions,
        wantsHOCR: Bool, pdf: inout PDFRendering?, pdfPossible: inout Bool, decodedPixels: inout Int,
        stages: inout StageTimes, cancellation: OCRCancellation
    ) throws(OCRError) -> (page: OCRPage, hocr: String?, preview: PagePreview?, timing: PageTiming) {
        let pageStarted = ContinuousClock.now
        let decoded = try stages.measure("decode") { () throws(OCRError) in try images.page(index, cancellation: cancellation) }
        decodedPixels += decoded.width * decoded.height
        guard decodedPixels <= limits.maxDocumentPixels else { throw PageImages.documentPixelsExceeded(limits) }
        let pix = try stages.measure("preprocess") { () throws(OCRError) in try preprocessor.apply(options.operations, to: decoded) }
        // The page as it is read, so that its boxes fit it once scaled; a JPEG read as it is may be its own preview.
        let jpeg = images.document.type == .jpeg && pix === decoded ? images.document.data : nil
        let preview = stages.measure("preview") { PagePreview(page: pix, jpeg: jpeg) }
        // PP-OCR reads every page through the detector: Tesseract's layout is not used.
        var mode = options.recognizer == .ppocr ? .scene : options.mode
        // The classifier's thumbnail statistics also answer the blank-page check below: measured once.
        var features: PageClassifier.Features?
        if mode == .auto {
            let decision = stages.measure("classify") { PageClassifier.classify(pix) }
            mode = decision.mode
            features = decision.features
        }
        func timing() -> PageTiming { PageTiming(mode: mode == .scene ? .scene : .document, duration: ContinuousClock.now - pageStarted) }
        switch mode {
        case .auto, .document:
            if pdfPossible, pdf == nil {
                pdf = try PDFRendering(dataPath: handle.dataPath, title: "")
                pdfPossible = pdf != nil
            }
            var inspectTimes = StageTimes()
            var hocr: String?
            var renderer = pdf
            // The thumbnail statistics, when `auto` has not measured them: a few milliseconds (P1: `classify`).
            if features == nil { features = stages.measure("classify") { PageClassifier.features(pix) } }
            let invertedReading = features.map(PageClassifier.mayHoldLightOnDark) ?? true
            let started = ContinuousClock.now
            let page = try handle.recognize(
                pix.pointer, pageNumber: index + 1, invertedReading: invertedReading, cancellation: cancellation
            ) { api in
                if wantsHOCR { inspectTimes.measure("hocr") { hocr = TesseractHandle.hocr(api, pageIndex: index) } }
                if let current = renderer {
                    let added = inspectTimes.measure("pdf") { current.add(api) }
                    if !added { renderer = nil }
                }
            }
            if renderer == nil, pdf != nil { pdf = nil; pdfPossible = false }
            stages.add("recognize", ContinuousClock.now - started)
            // The renderers ran inside the recognition's time: move theirs out of it.
            for (stage, seconds) in inspectTimes.seconds {
                stages.add(stage, .seconds(seconds))
                stages.add("recognize", .seconds(-seconds))
            }
            return (page, hocr, preview, timing())
        case .scene:
            pdf = nil
            pdfPossible = false
            // An empty or tiny page costs the detector as much as a full one: skip it.
            if PageClassifier.holdsNoText(pix, features: features) {
                let page = OCRPage(number: index + 1, width: pix.width, height: pix.height, mode: .scene, lines: [], text: "")
                return (page, wantsHOCR ? HOCR.page(page) : nil, preview, timing())
            }
            let page = try stages.measure("scene") { () throws(OCRError) -> OCRPage in
                let reader = SceneReader(detector: try detector(options.detector, for: pix), tesseract: handle,
                                         recognizer: options.recognizer == .ppocr ? try recognizer() : nil)
                return try reader.read(pix, pageNumber: index + 1, cancellation: cancellation)
            }
            let hocr = wantsHOCR ? stages.measure("hocr") { HOCR.page(page) } : nil
            return (page, hocr, preview, timing())
        }
    }

    /// Loads the Tesseract model of `language` (~0.15 s for `eng`, on the slot's thread) before the first job:
    /// otherwise each slot's first job paid for it, inside the time a client waits (BENCHMARKS.md, P1).
    public func prepare(language: String) throws(OCRError) {
        _ = try handle(for: language)
    }

    /// Whether the Tesseract handle of `language` is loaded (tests).
    func isPrepared(_ language: String) -> Bool { handle?.language == language }

    private func handle(for language: String) throws(OCRError) -> TesseractHandle {
        if let handle, handle.language == language { return handle }
        handle = nil
        let fresh = try TesseractHandle(dataPath: dataPath, language: language)
        handle = fresh
        return fresh
    }

    private func recognizer() throws(OCRError) -> LineRecognizer {
        if let lineRecognizer { return lineRecognizer }
        guard models.recognizer.isAvailable else { throw RecognizerKind.ppocr.modelMissing }
        let fresh = try LineRecognizer(models: models.recognizer)
        lineRecognizer = fresh
        return fresh
    }

    private func orientationHandle() throws(OCRError) -> TesseractHandle {
        if let osd { return osd }
        do {
            let fresh = try TesseractHandle(dataPath: dataPath, language: "osd")
            TessBaseAPISetPageSegMode(fresh.pointer, PSM_OSD_ONLY)
            osd = fresh
            return fresh
        } catch {
            throw OCRError(.unsupportedOption, "orient needs Tesseract's orientation model (osd.traineddata, Debian package tesseract-ocr-osd), which is not installed")
        }
    }

    private struct DetectorKey: Hashable {
        let kind: DetectorKind
        let width: Int
        let height: Int
    }

    /// A detector whose fixed input suits the page's shape: 960 × 960, or 960 × 544 for landscape pages (and
    /// the reverse for portrait ones), which costs about half as much for the same resolution of the page.
    /// Only the last one used is kept.
    private func detector(_ kind: DetectorKind, for pix: Pix) throws(OCRError) -> TextDetector {
        let aspect = Double(pix.width) / Double(max(1, pix.height))
        let (width, height) = aspect >= 1.5 ? (960, 544) : aspect <= 1 / 1.5 ? (544, 960) : (960, 960)
        let key = DetectorKey(kind: kind, width: width, height: height)
        if let detector = detectors[key] { return detector }
        // One network per slot at a time: each holds 150-250 MB of buffers for its input size, so a slot that
        // sees landscape and portrait pages swaps (a load is ~0.3 s) rather than keeping both.
        detectors.removeAll()
        guard let path = models.path(for: kind), FileManager.default.isReadableFile(atPath: path) else {
            throw kind.modelMissing
        }
        let detector = try TextDetector(modelPath: path, kind: kind == .db ? .db : .east, inputWidth: width, inputHeight: height)
        detectors[key] = detector
        return detector
    }
}

/// A digest of model files' contents (FNV-1a, 64 bits, over each file's name and bytes): a change detector, not a
/// defence (the operator installs the models). Each file is read once per process, while its inode, size and
/// modification time stay the same.
enum ModelDigest {
    private struct Key: Hashable {
        let path: String
        let inode: UInt64
        let size: Int64
        let modified: Int64
    }

    private static let cache = NIOLockedValueBox<[Key: UInt64]>([:])

    static func of(_ paths: [String]) -> String {
        var combined: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ byte: UInt8) { combined = (combined ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        for path in paths {
            var info = stat()
            guard stat(path, &info) == 0 else { continue }
            let key = Key(path: path, inode: UInt64(info.st_ino), size: Int64(info.st_size),
                          modified: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec))
            let fileHash: UInt64
            if let cached = cache.withLockedValue({ $0[key] }) {
                fileHash = cached
            } else {
                guard let data = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) else { continue }
                var hash: UInt64 = 0xcbf2_9ce4_8422_2325
                data.withUnsafeBytes { bytes in
                    for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
                }
                cache.withLockedValue { $0[key] = hash }
                fileHash = hash
            }
            for byte in (path as NSString).lastPathComponent.utf8 { mix(byte) }
            withUnsafeBytes(of: fileHash.littleEndian) { for byte in $0 { mix(byte) } }
        }
        return String(combined, radix: 16)
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

    /// The folder Tesseract loaded its models from (also holds `pdf.ttf` for the PDF renderer).
    var dataPath: String { TessBaseAPIGetDatapath(pointer).map { String(cString: $0) } ?? "" }

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

    /// Reads a page with Tesseract's own layout analysis. `inspect` sees the handle while the page's results are
    /// still in it (for the hOCR and PDF renderers). `invertedReading`: whether Tesseract reads each line of low
    /// confidence a second time, inverted (`tessedit_do_invert`; only light text on a dark ground needs it).
    func recognize(
        _ pix: UnsafeMutablePointer<PIX>, pageNumber: Int, invertedReading: Bool = true, cancellation: OCRCancellation,
        inspect: (OpaquePointer) -> Void = { _ in }
    ) throws(OCRError) -> OCRPage {
        let width = Int(pixGetWidth(pix))
        let height = Int(pixGetHeight(pix))
        TessBaseAPISetPageSegMode(pointer, PSM_AUTO)
        _ = TessBaseAPISetVariable(pointer, "tessedit_do_invert", invertedReading ? "1" : "0")
        TessBaseAPISetImage2(pointer, pix)
        // The page is thresholded as given (a colour page per channel), but each line is recognised from the grey
        // page Tesseract makes while thresholding, not cut from the colour original: with no original image,
        // `Tesseract::BestPix` falls back to that grey page. Same grey for the LSTM (it reads grey), a third of
        // the bytes in the PNG Tesseract encodes and decodes for every line: ~6% of a receipt's recognition
        // (BENCHMARKS.md, P1, seventh run). One language only: Tesseract gives its grey page to the first language
        // alone, and the others would fall back to the black-and-white page.
        if !language.contains("+") { TessBaseAPISetInputImage(pointer, nil) }
        // Scans often carry no resolution; Tesseract then guesses and logs. 300 dpi is the common case.
        if pixGetXRes(pix) < 70 { TessBaseAPISetSourceResolution(pointer, 300) }
        defer {
            TessBaseAPISetInputImage(pointer, nil)
            TessBaseAPIClear(pointer)
        }
        try run(cancellation: cancellation, failure: "Tesseract could not recognise page \(pageNumber)")
        let lines = collectLines()
        // The searchable PDF's renderer embeds the original image: it gets the page back (a reference, which
        // Tesseract releases at the next image or when set to nil above).
        TessBaseAPISetInputImage(pointer, pixClone(pix))
        inspect(pointer)
        return OCRPage(
            number: pageNumber, width: width, height: height, mode: .document, lines: lines,
            text: lines.map(\.text).joined(separator: "\n"))
    }

    /// Reads one upright line of text (page segmentation mode 7); boxes are in the line image's pixels.
    func recognizeLine(_ pix: UnsafeMutablePointer<PIX>, cancellation: OCRCancellation) throws(OCRError) -> OCRLine? {
        TessBaseAPISetPageSegMode(pointer, PSM_SINGLE_LINE)
        // Scene regions are often light on dark: always read inverted too (a document page may have turned it off).
        _ = TessBaseAPISetVariable(pointer, "tessedit_do_invert", "1")
        TessBaseAPISetImage2(pointer, pix)
        TessBaseAPISetSourceResolution(pointer, 300)
        defer { TessBaseAPIClear(pointer) }
        try run(cancellation: cancellation, failure: "Tesseract could not recognise a text region")
        let lines = collectLines()
        guard !lines.isEmpty else { return nil }
        // One line by construction; join in case Tesseract split it.
        let words = lines.flatMap(\.words)
        return OCRLine(text: lines.map(\.text).joined(separator: " "), box: lines[0].box,
                       confidence: lines.map(\.confidence).reduce(0, +) / Double(lines.count), words: words)
    }

    private func run(cancellation: OCRCancellation, failure: @autoclosure () -> String) throws(OCRError) {
        // Tesseract calls the monitor's cancel function as it goes; it reads our flag.
        let monitor = TessMonitorCreate()
        defer { TessMonitorDelete(monitor) }
        let context = Unmanaged.passUnretained(cancellation).toOpaque()
        TessMonitorSetCancelThis(monitor, context)
        TessMonitorSetCancelFunc(monitor) { context, _ in
            guard let context else { return false }
            return Unmanaged<OCRCancellation>.fromOpaque(context).takeUnretainedValue().shouldStop
        }
        let status = withExtendedLifetime(cancellation) { TessBaseAPIRecognize(pointer, monitor) }
        try cancellation.check()
        guard status == 0 else { throw OCRError(.unreadableDocument, failure()) }
    }

    private func collectLines() -> [OCRLine] {
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
        return lines
    }

    /// The hOCR `ocr_page` element of the page whose results are in the handle.
    static func hocr(_ api: OpaquePointer, pageIndex: Int) -> String {
        guard let raw = TessBaseAPIGetHOCRText(api, Int32(pageIndex)) else { return "" }
        defer { TessDeleteText(raw) }
        return String(cString: raw)
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

/// Decodes the pages of a document with Leptonica (PDF: rasterised by poppler), checking page count and pixel
/// limits from the headers before any pixel buffer is allocated.
struct PageImages {
    let document: OCRDocument
    let count: Int
    private let pdf: PDFRasterizer?

    /// With `only`, just that page (from 0) of a PDF or TIFF is looked at, its own limits checked (a page task:
    /// the document's were checked when it was split): `count` is then `only + 1`, and no other page is read.
    init(document: OCRDocument, limits: OCRLimits, pdfDPI: Int = 300, only: Int? = nil) throws(OCRError) {
        self.document = document
        guard !document.data.isEmpty else { throw OCRError(.unreadableDocument, "the document is empty") }
        var pages = 1
        var pdf: PDFRasterizer?
        if let only, document.type == .pdf || document.type == .tiff {
            let size: (width: Int, height: Int)
            if document.type == .pdf {
                let rasterizer = try PDFRasterizer(document.data, dpi: pdfDPI, maxPagePixels: limits.maxPagePixels)
                pdf = rasterizer
                guard let found = try rasterizer.pageSizes(first: only + 1, last: only + 1).first else {
                    throw OCRError(.unreadableDocument, "the PDF has no page \(only + 1)")
                }
                size = found
            } else {
                guard let found = Self.tiffHeader(document.data, page: only) else {
                    throw OCRError(.unreadableDocument, "not a readable TIFF image: page \(only + 1)'s header could not be decoded")
                }
                size = found
            }
            try Self.checkPixels(size.width, size.height, page: only + 1, limits: limits)
            self.count = only + 1
            self.pdf = pdf
            return
        }
        if document.type == .pdf {
            let rasterizer = try PDFRasterizer(document.data, dpi: pdfDPI, maxPagePixels: limits.maxPagePixels)
            pdf = rasterizer
            let sizes = try rasterizer.pageSizes(maxPages: limits.maxPages)
            guard !sizes.isEmpty else { throw OCRError(.unreadableDocument, "the PDF has no pages") }
            guard sizes.count <= limits.maxPages else {
                throw OCRError(.limitExceeded, "the document has more than \(limits.maxPages) pages")
            }
            for (index, size) in sizes.enumerated() {
                try Self.checkPixels(size.width, size.height, page: index + 1, limits: limits)
            }
            guard sizes.reduce(0, { $0 + $1.width * $1.height }) <= limits.maxDocumentPixels else {
                throw Self.documentPixelsExceeded(limits)
            }
            pages = sizes.count
        } else if document.type == .tiff {
            pages = 0
            // Count pages by reading headers; stop one past the limit.
            while pages <= limits.maxPages, Self.tiffHeader(document.data, page: pages) != nil { pages += 1 }
            guard pages > 0 else {
                throw OCRError(.unreadableDocument, "not a readable TIFF image: its header could not be decoded")
            }
            guard pages <= limits.maxPages else {
                throw OCRError(.limitExceeded, "the document has more than \(limits.maxPages) pages")
            }
            var total = 0
            for page in 0..<pages {
                if let (w, h) = Self.tiffHeader(document.data, page: page) {
                    try Self.checkPixels(w, h, page: page + 1, limits: limits)
                    total += w * h
                }
            }
            guard total <= limits.maxDocumentPixels else { throw Self.documentPixelsExceeded(limits) }
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
        self.pdf = pdf
    }

    static func documentPixelsExceeded(_ limits: OCRLimits) -> OCRError {
        OCRError(.limitExceeded,
                 "the document's pages have more than \(limits.maxDocumentPixels) pixels together (LECTOR_MAX_DOCUMENT_PIXELS)")
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

    func page(_ index: Int, cancellation: OCRCancellation = OCRCancellation()) throws(OCRError) -> Pix {
        if let pdf { return try pdf.render(page: index + 1, cancellation: cancellation) }
        let pix = document.data.withUnsafeBytes { raw -> UnsafeMutablePointer<PIX>? in
            let base = raw.bindMemory(to: UInt8.self).baseAddress
            return document.type == .tiff ? pixReadMemTiff(base, raw.count, Int32(index)) : pixReadMem(base, raw.count)
        }
        guard let pix else {
            throw OCRError(.unreadableDocument,
                "not a readable \(document.type.rawValue.uppercased()) image: page \(index + 1) could not be decoded (truncated or corrupt)")
        }
        return try Pix(owning: pix, failure: "")
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
