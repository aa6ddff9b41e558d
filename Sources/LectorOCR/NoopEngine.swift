import LectorModel

/// An engine that recognises nothing, instantly: for measuring the queue, storage and HTTP without OCR
/// (`LECTOR_ENGINE=noop` on a worker; benchmarks and tests only). It still checks the document's type.
public struct NoopEngineFactory: OCREngineFactory {
    public init() {}

    public var supportedTypes: Set<DocumentType> { Set(DocumentType.allCases) }
    public func availableLanguages() throws(OCRError) -> Set<String> { ["eng"] }
    public func makeEngine() throws(OCRError) -> any OCREngine { NoopEngine() }
}

final class NoopEngine: OCREngine {
    func recognize(_ document: OCRDocument, options: OCROptions, cancellation: OCRCancellation) throws(OCRError) -> OCRResult {
        OCRResult(engine: "noop", language: options.lang, pages: [OCRPage(number: 1, width: 0, height: 0, lines: [], text: "")])
    }
}
