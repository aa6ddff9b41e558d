import Foundation
import LectorModel
import NIOPosix

/// One worker slot's engine and the thread it lives on.
///
/// Native OCR calls block for seconds, so they run on the slot's own thread (a one-thread `NIOThreadPool`),
/// never on Swift's cooperative pool. The engine is created lazily on that thread and only ever touched
/// there, which is what makes the `@unchecked Sendable` below sound: every access to `engine` happens inside
/// `pool.runIfActive`, and the pool has exactly one thread, so accesses are serial.
public final class EngineSlot: @unchecked Sendable {
    private let factory: any OCREngineFactory
    private let pool: NIOThreadPool
    private var engine: (any OCREngine)?

    public init(factory: any OCREngineFactory) {
        self.factory = factory
        self.pool = NIOThreadPool(numberOfThreads: 1)
        self.pool.start()
    }

    /// Recognises a document on the slot's thread.
    ///
    /// The result's stage times gain `slot` (the hop to the slot's thread: the wait until the thread takes the
    /// work) and `engine` (the engine's time in no stage of its own: set-up, freeing page images, building the
    /// result), and their `engineCPU` the thread's CPU time for the call; the hop back is the caller's to time
    /// (the worker's `return`).
    public func recognize(
        _ document: OCRDocument, options: OCROptions, cancellation: OCRCancellation = OCRCancellation()
    ) async throws -> OCRResult {
        let called = ContinuousClock.now
        return try await pool.runIfActive { () throws -> OCRResult in
            let started = ContinuousClock.now
            let cpu = ThreadCPUClock.now()
            let engine: any OCREngine
            if let existing = self.engine {
                engine = existing
            } else {
                engine = try self.factory.makeEngine()
                self.engine = engine
            }
            var result = try engine.recognize(document, options: options, cancellation: cancellation)
            let untimed = (ContinuousClock.now - started) - .seconds(result.stages.total)
            result.stages.add("engine", untimed)
            result.stages.add("slot", started - called)
            result.stages.addEngineCPU(ThreadCPUClock.now() - cpu)
            return result
        }
    }

    /// The document's page count when the engine reads pages one at a time (`OCREngine.pageCount`), on the
    /// slot's thread.
    public func pageCount(_ document: OCRDocument) async throws -> Int? {
        try await pool.runIfActive { try self.slotEngine().pageCount(document) }
    }

    /// Reads one page on the slot's thread (`OCREngine.recognizePage`); stage times as `recognize` keeps them.
    public func recognizePage(
        _ document: OCRDocument, index: Int, options: OCROptions, cancellation: OCRCancellation = OCRCancellation()
    ) async throws -> PageReading {
        let called = ContinuousClock.now
        return try await pool.runIfActive { () throws -> PageReading in
            let started = ContinuousClock.now
            let cpu = ThreadCPUClock.now()
            var reading = try self.slotEngine().recognizePage(document, index: index, options: options, cancellation: cancellation)
            reading.stages.add("engine", (ContinuousClock.now - started) - .seconds(reading.stages.total))
            reading.stages.add("slot", started - called)
            reading.stages.addEngineCPU(ThreadCPUClock.now() - cpu)
            return reading
        }
    }

    /// The slot's engine, created on first use. On the slot's thread only.
    private func slotEngine() throws -> any OCREngine {
        if let engine { return engine }
        let made = try factory.makeEngine()
        engine = made
        return made
    }

    /// Creates the engine now, and with `language` loads that language's models (a moment: ~0.15 s for
    /// Tesseract's `eng`), so that the first job does not wait for them.
    public func warmUp(language: String? = nil) async throws {
        try await pool.runIfActive {
            if self.engine == nil { self.engine = try self.factory.makeEngine() }
            if let language { try self.engine?.prepare(language: language) }
        }
    }

    /// Frees the engine on its thread and stops the thread.
    public func shutdown() async {
        _ = try? await pool.runIfActive { self.engine = nil }
        try? await pool.shutdownGracefully()
    }
}

/// The calling thread's CPU time (user and system), in seconds: `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`.
/// A slot's thread runs only its engine, so the difference across a call is the call's cost in CPU, apart from
/// the time the thread waited for a core.
enum ThreadCPUClock {
    static func now() -> Double {
        var time = timespec()
        guard clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time) == 0 else { return 0 }
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}
