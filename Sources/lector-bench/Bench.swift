import ArgumentParser
import Foundation
import LectorCore
import LectorModel
import LectorOCR
import Logging
import PostgresNIO

/// In-process measurements for BENCHMARKS.md (the scripts in benchmarks/ call these). Not part of the product.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lector-bench", abstract: "Lector's in-process benchmarks.",
        subcommands: [Claims.self, Engine.self])
}

/// Prints min / p50 / p99 / max of a list of durations in milliseconds.
func summary(_ values: [Double]) -> String {
    let sorted = values.sorted()
    func at(_ q: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * q))] }
    return String(format: "n=%d min=%.3f p50=%.3f p99=%.3f max=%.3f", sorted.count, sorted.first ?? 0, at(0.5), at(0.99), sorted.last ?? 0)
}

func milliseconds(_ d: Duration) -> Double {
    d.secondsValue * 1000
}

/// P2: claim latency with a given amount of finished history in the tables.
struct Claims: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Claim latency (ms) against the database in LECTOR_DATABASE_URL.")

    @Option(help: "Finished jobs to insert first (with three transitions each), by SQL.") var history = 1000
    @Option(help: "Queued jobs to claim, one at a time.") var claims = 1000
    @Option(help: "table-lock or skip-locked.") var strategy = "table-lock"
    @Option(help: "Folder of the SQL migrations.") var migrations = "db"

    func run() async throws {
        let settings = Settings(environment: ProcessInfo.processInfo.environment)
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let strategy = ClaimStrategy(rawValue: self.strategy) ?? .tableLock
        let client = PostgresClient(configuration: try DatabaseURL.configuration(from: settings.databaseURL), backgroundLogger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            try await Migrator(directory: migrations).migrate(client: client, logger: logger)
            let jobs = JobStore(client: client, logger: logger)
            let keys = KeyStore(client: client, logger: logger)
            let (_, key) = try await keys.createKey(forUser: "bench-\(UUID().uuidString.prefix(8))")
            guard let owner = try await keys.authenticate(token: key.token)?.id else { return }
            // History by SQL, triggers off for the load (a benchmark database only).
            try await client.withConnection { connection in
                try await connection.query("SET session_replication_role = replica", logger: logger)
                try await connection.query(
                    """
                    INSERT INTO jobs (id, owner_id, document_name, content_type, size_bytes, sha256, status, attempts, created_at)
                    SELECT gen_random_uuid(), \(owner), 'old.png', 'image/png', 1, decode(repeat('00', 32), 'hex'),
                           'FINISHED', 1, now() - interval '30 days' + g * interval '1 millisecond'
                    FROM generate_series(1, \(history)) g
                    """, logger: logger)
                try await connection.query(
                    """
                    INSERT INTO job_transitions (job_id, status, at)
                    SELECT j.id, s.status, j.created_at
                    FROM jobs j CROSS JOIN (VALUES ('QUEUED'), ('IN_PROGRESS'), ('FINISHED')) s(status)
                    WHERE j.status = 'FINISHED'
                    """, logger: logger)
                try await connection.query("SET session_replication_role = DEFAULT", logger: logger)
            }
            try await client.query("VACUUM ANALYZE jobs", logger: logger)
            try await client.query("VACUUM ANALYZE job_transitions", logger: logger)
            for index in 0..<claims {
                try await jobs.create(NewJob(
                    id: UUID(), ownerID: owner, documentName: "q\(index).png", contentType: "image/png", sizeBytes: 1,
                    sha256: Array(repeating: 0, count: 32), optionsJSON: "{}", metadataJSON: "{}"))
            }
            var latencies: [Double] = []
            let clock = ContinuousClock()
            for _ in 0..<claims {
                let started = clock.now
                guard try await jobs.claimNext(worker: "bench", leaseDuration: .seconds(60), strategy: strategy) != nil else { break }
                latencies.append(milliseconds(clock.now - started))
            }
            print("claims history=\(history) strategy=\(strategy.rawValue) ms: \(summary(latencies))")
        }
    }
}

/// P1 (b): the engine in a loop inside one process, N slots at once: the limit for the service.
struct Engine: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Documents per second of the engine alone.")

    @Option(help: "Slots (threads) at once.") var concurrency = 2
    @Option(help: "Result formats, comma-separated (json,txt,hocr,pdf); json and txt cost the engine nothing.")
    var formats = "json,txt"
    @Argument(help: "Image files.") var files: [String]

    func run() async throws {
        let settings = Settings(environment: ProcessInfo.processInfo.environment)
        let factory = TesseractEngineFactory(
            dataPath: settings.tessdata, limits: OCRLimits(maxPagePixels: settings.maxPagePixels, maxPages: settings.maxPages, maxDocumentPixels: settings.maxDocumentPixels, maxDocumentTime: .milliseconds(Int64(settings.maxDocumentSeconds * 1000))))
        let documents = try files.map { path -> OCRDocument in
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            guard let type = DocumentType.detect(data) else { throw ValidationError("\(path): unknown type") }
            return OCRDocument(data: data, type: type)
        }
        let formats = try self.formats.split(separator: ",").map { name in
            guard let format = ResultFormat(rawValue: String(name)) else { throw ValidationError("unknown format \(name)") }
            return format
        }
        let options = OCROptions(lang: "eng", formats: formats)
        let slots = (0..<concurrency).map { _ in EngineSlot(factory: factory) }
        // Warm each slot (model load) before timing, as a running worker would be.
        for slot in slots { _ = try await slot.recognize(documents[0], options: options) }
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, slot) in slots.enumerated() {
                let mine = documents.enumerated().filter { $0.offset % slots.count == index }.map(\.element)
                group.addTask { for document in mine { _ = try await slot.recognize(document, options: options) } }
            }
            try await group.waitForAll()
        }
        let seconds = milliseconds(ContinuousClock.now - started) / 1000
        for slot in slots { await slot.shutdown() }
        print(String(format: "engine documents=%d slots=%d seconds=%.2f docs_per_s=%.2f", documents.count, concurrency, seconds, Double(documents.count) / seconds))
    }
}
