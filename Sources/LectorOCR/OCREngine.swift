import Foundation

/// A document to recognise: its bytes and detected type.
public struct OCRDocument: Sendable {
    public var data: Data
    public var type: DocumentType

    public init(data: Data, type: DocumentType) {
        self.data = data
        self.type = type
    }
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
    func recognize(_ document: OCRDocument, options: OCROptions) throws(OCRError) -> OCRResult
}

/// Builds engines, one per worker slot, on the slot's own thread.
public protocol OCREngineFactory: Sendable {
    /// The document types this engine can read; other types are refused at submit with 415.
    var supportedTypes: Set<DocumentType> { get }
    /// The languages installed for this engine.
    func availableLanguages() throws(OCRError) -> Set<String>
    func makeEngine() throws(OCRError) -> any OCREngine
}
