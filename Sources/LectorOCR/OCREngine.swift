import Foundation
import LectorModel
import NIOConcurrencyHelpers

/// A document to recognise: its bytes and detected type.
public struct OCRDocument: Sendable {
    public var data: Data
    public var type: DocumentType

    public init(data: Data, type: DocumentType) {
        self.data = data
        self.type = type
    }
}

/// Asks a running recognition to stop (shutdown deadline, lost lease), and holds the document's time budget.
/// Checked between pages and, inside Tesseract, after every word through its progress monitor.
public final class OCRCancellation: Sendable {
    private struct State {
        var cancelled = false
        var deadline: ContinuousClock.Instant?
        var budget: Duration = .zero
        var progress: (done: Int, total: Int)?
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    public func cancel() { state.withLockedValue { $0.cancelled = true } }
    public var isCancelled: Bool { state.withLockedValue { $0.cancelled } }

    /// Starts the document's time budget: past it, `check()` throws `limitExceeded`.
    public func startBudget(_ budget: Duration, now: ContinuousClock.Instant = .now) {
        state.withLockedValue {
            $0.deadline = now + budget
            $0.budget = budget
        }
    }

    /// Pages read so far of how many: the engine reports, the worker reads and publishes it.
    public func reportProgress(done: Int, total: Int) {
        state.withLockedValue { $0.progress = (done, total) }
    }

    public var progress: (done: Int, total: Int)? { state.withLockedValue { $0.progress } }

    /// Whether the work should stop now: cancelled, or past the document's time budget.
    public var shouldStop: Bool {
        let state = state.withLockedValue { $0 }
        return state.cancelled || state.deadline.map { ContinuousClock.now >= $0 } ?? false
    }

    /// Throws `cancelled` when cancelled, `limitExceeded` when past the document's time budget.
    public func check() throws(OCRError) {
        let state = state.withLockedValue { $0 }
        if state.cancelled { throw OCRError(.cancelled, "recognition was cancelled") }
        if let deadline = state.deadline, ContinuousClock.now >= deadline {
            throw OCRError(.limitExceeded,
                "the document took longer than the limit of \(Int(state.budget.components.seconds)) s (LECTOR_MAX_DOCUMENT_SECONDS)")
        }
    }
}

/// Limits that protect a worker from hostile documents.
public struct OCRLimits: Sendable {
    public var maxPagePixels: Int
    public var maxPages: Int
    /// The most pixels all pages of one document may have together (checked before decoding where the
    /// format gives the sizes first: TIFF, PDF).
    public var maxDocumentPixels: Int
    /// The longest the engine may spend on one document.
    public var maxDocumentTime: Duration

    public init(maxPagePixels: Int, maxPages: Int, maxDocumentPixels: Int = 1_000_000_000, maxDocumentTime: Duration = .seconds(600)) {
        self.maxPagePixels = maxPagePixels
        self.maxPages = maxPages
        self.maxDocumentPixels = maxDocumentPixels
        self.maxDocumentTime = maxDocumentTime
    }
}

/// The seam between the worker and whatever turns a document into text.
///
/// An engine is confined to one thread at a time and may hold native handles, so it is not `Sendable`;
/// `EngineSlot` owns one and runs every call on its own thread. The worker sees only this protocol and
/// `OCRResult`: a text detector, preprocessing or another pipeline is a new engine (or a pipeline inside
/// one), chosen by options, without touching the worker.
public protocol OCREngine: AnyObject {
    /// Recognises every page of the document. Blocking; throws `OCRError`.
    func recognize(_ document: OCRDocument, options: OCROptions, cancellation: OCRCancellation) throws(OCRError) -> OCRResult
    /// Loads what jobs in `language` need (models), so that the first such job does not wait for it. Blocking.
    func prepare(language: String) throws(OCRError)
    /// The document's page count, read from its headers with the limits checked, when this engine can read one
    /// page at a time (`recognizePage`: the worker then splits documents of several pages into page tasks); nil
    /// when it reads documents whole. Blocking.
    func pageCount(_ document: OCRDocument) throws(OCRError) -> Int?
    /// Reads page `index` (from 0) of the document as `recognize` reads it within the whole. Called only when
    /// `pageCount` answered. Blocking.
    func recognizePage(_ document: OCRDocument, index: Int, options: OCROptions, cancellation: OCRCancellation) throws(OCRError) -> PageReading
}

extension OCREngine {
    /// Nothing to load.
    public func prepare(language: String) throws(OCRError) {}
    /// Documents are read whole.
    public func pageCount(_ document: OCRDocument) throws(OCRError) -> Int? { nil }
    /// Never called for an engine that reads documents whole (its `pageCount` is nil).
    public func recognizePage(
        _ document: OCRDocument, index: Int, options: OCROptions, cancellation: OCRCancellation
    ) throws(OCRError) -> PageReading {
        throw OCRError(.engineFailure, "this engine reads documents whole, not page by page")
    }
}

/// One page read alone (a page task): what `recognize` makes of that page within the whole document.
public struct PageReading: Sendable {
    /// The engine and its version, as `OCRResult.engine`.
    public var engine: String
    public var page: OCRPage
    /// The page's hOCR `ocr_page` element, when the job asked for hOCR.
    public var hocr: String?
    /// A one-page searchable PDF, when the job asked for the PDF and the document pipeline read the page.
    public var pdf: Data?
    public var preview: PagePreview?
    public var timing: PageTiming
    public var stages: StageTimes

    public init(engine: String, page: OCRPage, hocr: String?, pdf: Data?, preview: PagePreview?, timing: PageTiming, stages: StageTimes) {
        self.engine = engine
        self.page = page
        self.hocr = hocr
        self.pdf = pdf
        self.preview = preview
        self.timing = timing
        self.stages = stages
    }
}

/// Builds engines, one per worker slot, on the slot's own thread.
public protocol OCREngineFactory: Sendable {
    /// The document types this engine can read; other types are refused at submit with 415.
    var supportedTypes: Set<DocumentType> { get }
    /// The languages installed for this engine.
    func availableLanguages() throws(OCRError) -> Set<String>
    func makeEngine() throws(OCRError) -> any OCREngine
    /// What makes this engine's results what they are: its version, Lector's pipeline revision and the model
    /// files it loads. Two workers with the same identity produce the same result for the same document and
    /// options, so a finished job's results may be reused for an identical job (docs/design/queue.md, "Reuse").
    func identity() throws(OCRError) -> String
}

extension OCREngineFactory {
    public func identity() throws(OCRError) -> String { "\(type(of: self)); lector-pipeline \(OCREngineRevision.pipeline)" }
}

/// Lector's own part of an engine identity: raise it with every change to the pipelines (preprocessing,
/// detection, recognition settings, result schema) that changes the results of some document, so that results
/// made before it are no longer reused.
public enum OCREngineRevision {
    /// 2: document pages are recognised from Tesseract's grey page, and skip the inverted reading when they have
    /// no dark area.
    public static let pipeline = 2
}
