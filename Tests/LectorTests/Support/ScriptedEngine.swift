import Foundation
import LectorModel
import LectorOCR
import NIOConcurrencyHelpers

/// An engine whose behaviour a test scripts, to drive the worker through transient errors, slow jobs and
/// cancellation. The database, storage and worker around it are the real ones.
struct ScriptedEngineFactory: OCREngineFactory {
    enum Step: Sendable {
        /// Return a one-word result.
        case succeed(String)
        /// Throw this error.
        case fail(OCRError)
        /// Take this long (cancellable), then return a one-word result.
        case slow(Duration, String)
        /// Read `count` pages of `each`, reporting progress after each, then return one word per page.
        case pages(Int, each: Duration)
        /// Keep the CPU busy this long, then return a one-word result.
        case busy(Duration, String)
        /// Return a one-word result that JSON cannot hold (a NaN confidence): the worker's end fails to encode it.
        case unencodable(String)
    }

    /// Steps taken in order, one per recognition; the last repeats.
    let steps: [Step]
    let calls = NIOLockedValueBox(0)

    var supportedTypes: Set<DocumentType> { Set(DocumentType.allCases) }
    func availableLanguages() throws(OCRError) -> Set<String> { ["eng"] }
    func makeEngine() throws(OCRError) -> any OCREngine { ScriptedEngine(factory: self) }

    func nextStep() -> Step {
        let index = calls.withLockedValue { count in
            defer { count += 1 }
            return count
        }
        return steps[min(index, steps.count - 1)]
    }
}

final class ScriptedEngine: OCREngine {
    let factory: ScriptedEngineFactory

    init(factory: ScriptedEngineFactory) { self.factory = factory }

    func recognize(_ document: OCRDocument, options: OCROptions, cancellation: OCRCancellation) throws(OCRError) -> OCRResult {
        switch factory.nextStep() {
        case .succeed(let word):
            return Self.result(word)
        case .unencodable(let word):
            return Self.result(word, confidence: .nan)
        case .fail(let error):
            throw error
        case .busy(let duration, let word):
            let end = ContinuousClock.now + duration
            var spin: UInt64 = 0
            while ContinuousClock.now < end { spin &+= 1 }
            return Self.result(spin == 0 ? "" : word)
        case .slow(let duration, let word):
            let end = ContinuousClock.now + duration
            while ContinuousClock.now < end {
                if cancellation.isCancelled { throw OCRError(.cancelled, "recognition was cancelled") }
                usleep(10_000)
            }
            return Self.result(word)
        case .pages(let count, let each):
            cancellation.reportProgress(done: 0, total: count)
            for page in 1...count {
                let end = ContinuousClock.now + each
                while ContinuousClock.now < end {
                    if cancellation.isCancelled { throw OCRError(.cancelled, "recognition was cancelled") }
                    usleep(10_000)
                }
                cancellation.reportProgress(done: page, total: count)
            }
            let pages = (1...count).map { OCRPage(number: $0, width: 10, height: 10, lines: [], text: "") }
            return OCRResult(engine: "scripted", language: "eng", pages: pages)
        }
    }

    static func result(_ word: String, confidence: Double = 99) -> OCRResult {
        let box = BoundingBox(x: 0, y: 0, width: 10, height: 10)
        let line = OCRLine(text: word, box: box, confidence: confidence, words: [OCRWord(text: word, box: box, confidence: confidence)])
        return OCRResult(engine: "scripted", language: "eng", pages: [OCRPage(number: 1, width: 10, height: 10, lines: [line], text: word)])
    }
}
