import Foundation
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

/// Asks a running recognition to stop (shutdown deadline, lost lease). Checked between pages and, inside
/// Tesseract, after every word through its progress monitor.
public final class OCRCancellation: Sendable {
    private let flag = NIOLockedValueBox(false)

    public init() {}

    public func cancel() { flag.withLockedValue { $0 = true } }
    public var isCancelled: Bool { flag.withLockedValue { $0 } }
}

/// Limits that protect a worker from hostile documents.
public struct OCRLimits: Sendable {
    public var maxPagePixels: Int
    public var maxPages: Int

    public init(maxPagePixels: Int, maxPages: Int) {
        self.maxPagePixels = maxPagePixels
        self.maxPages = maxPages
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
}

/// Builds engines, one per worker slot, on the slot's own thread.
public protocol OCREngineFactory: Sendable {
    /// The document types this engine can read; other types are refused at submit with 415.
    var supportedTypes: Set<DocumentType> { get }
    /// The languages installed for this engine.
    func availableLanguages() throws(OCRError) -> Set<String>
    func makeEngine() throws(OCRError) -> any OCREngine
}
