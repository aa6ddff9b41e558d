import ArgumentParser
import Foundation
import LectorCore
import LectorModel
import LectorOCR
import Logging
import NIOConcurrencyHelpers
import PostgresNIO

/// In-process measurements for BENCHMARKS.md (the scripts in benchmarks/ call these). Not part of the product.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lector-bench", abstract: "Lector's in-process benchmarks.",
        subcommands: [Claims.self, Fleet.self, Engine.self])
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

/// One process of the simulated fleet (`benchmarks/bench.py fleet` runs several at once against one database):
/// `--slots` slots that claim and at once end their job (FINISHED, no files: the no-op engine without storage)
/// until the queue is empty. Writes each claim's latency (ms, one per line) to `--latencies`, and prints the
/// claims made and the seconds from the first claim to the last end. With `--sample`, also samples
/// `pg_stat_activity` every 10 ms and prints how many of the fleet's active backends waited on a lock, by kind.
struct Fleet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Claim and end jobs with many slots until the queue is empty.")

    @Option(help: "Slots (concurrent claimers) in this process.") var slots = 50
    @Option(help: "table-lock, batched (table lock; the claims, and the ends, of slots ready together in one transaction) or skip-locked.")
    var strategy = "table-lock"
    @Option(help: "The most slots in one batched claim.") var batch = 16
    @Option(help: "Write each claim's latency (ms) here, one per line.") var latencies: String
    @Flag(help: "Sample pg_stat_activity for lock waits.") var sample = false
    @Option(help: "Unix time (seconds) at which the slots start, so that processes start together.") var startAt: Double = 0

    func run() async throws {
        let settings = Settings(environment: ProcessInfo.processInfo.environment)
        let logger = { var logger = Logger(label: "bench"); logger.logLevel = .error; return logger }()
        let slots = self.slots, sample = self.sample
        var configuration = try DatabaseURL.configuration(from: settings.databaseURL)
        configuration.options.maximumConnections = slots + 2
        configuration.options.minimumConnections = slots + 2
        configuration.options.connectionIdleTimeout = .seconds(600)
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        let jobs = JobStore(client: client, logger: logger)
        let claimStrategy: ClaimStrategy = strategy == "skip-locked" ? .skipLocked : .tableLock
        let maxBatch = strategy == "batched" ? batch : 1
        let batcher = ClaimBatcher(queue: jobs, leaseDuration: .seconds(300), strategy: claimStrategy, maxBatch: maxBatch)
        let ender = GroupCommit<EndRequest, Void>(maxBatch: maxBatch) { requests in await jobs.endBatch(requests) }
        let samples = NIOLockedValueBox<[String: Int]>([:])
        let (claims, seconds, times) = try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            // Open every connection before the start: the pool's warm-up is not the queue's cost.
            try await withThrowingTaskGroup(of: Void.self) { warm in
                for _ in 0..<slots { warm.addTask { try await client.query("SELECT pg_sleep(0.05)", logger: logger) } }
                try await warm.waitForAll()
            }
            let wait = startAt - Date().timeIntervalSince1970
            if wait > 0 { try await Task.sleep(for: .milliseconds(Int64(wait * 1000))) }
            let done = ManagedAtomicFlag()
            if sample {
                group.addTask {
                    while !done.isSet {
                        let rows = try await client.query(
                            """
                            SELECT coalesce(wait_event_type, 'CPU') || ':' || coalesce(wait_event, '-') FROM pg_stat_activity
                            WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()
                            """, logger: logger)
                        var seen: [String] = []
                        for try await kind in rows.decode(String.self) { seen.append(kind) }
                        samples.withLockedValue { counts in
                            counts["samples", default: 0] += 1
                            for kind in seen { counts[kind, default: 0] += 1 }
                        }
                        try await Task.sleep(for: .milliseconds(10))
                    }
                }
            }
            let clock = ContinuousClock()
            let started = clock.now
            let times = NIOLockedValueBox<[Double]>([])
            try await withThrowingTaskGroup(of: Void.self) { fleet in
                for index in 0..<slots {
                    fleet.addTask {
                        let worker = "fleet-\(ProcessInfo.processInfo.processIdentifier)/\(index)"
                        var mine: [Double] = []
                        while true {
                            let asked = clock.now
                            guard let job = try await batcher.claim(worker: worker) else { break }
                            mine.append(milliseconds(clock.now - asked))
                            try await ender.submit(EndRequest(job.lease, as: .finished))
                        }
                        times.withLockedValue { $0 += mine }
                    }
                }
                try await fleet.waitForAll()
            }
            done.set()
            let all = times.withLockedValue { $0 }
            return (all.count, milliseconds(clock.now - started) / 1000, all)
        }
        try times.map { String(format: "%.3f", $0) }.joined(separator: "\n").write(toFile: latencies, atomically: true, encoding: .utf8)
        var line = String(format: "fleet slots=%d strategy=%@ claims=%d seconds=%.3f", slots, strategy, claims, seconds)
        if sample {
            let counts = samples.withLockedValue { $0 }
            line += " samples=\(counts["samples"] ?? 0) waits=" + counts.filter { $0.key != "samples" }
                .sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        }
        print(line)
    }
}

/// A flag set once, read from many tasks.
final class ManagedAtomicFlag: Sendable {
    private let value = NIOLockedValueBox(false)
    var isSet: Bool { value.withLockedValue { $0 } }
    func set() { value.withLockedValue { $0 = true } }
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
        // Where the engine's time went, summed over the documents (the worker logs the same per job: P1 sets them
        // side by side).
        let stages = NIOLockedValueBox(StageTimes())
        // One queue for all slots, in order, each slot taking the next document when it is free: the service's
        // slots claim the oldest queued job the same way. Dealing the documents out in turn instead (slot i taking
        // every i-th) left one slot idle at the end for as long as the two halves' costs differ: 0.10 s of 4.4 on
        // P1's 39 receipts, which understated this loop by about 2% (BENCHMARKS.md, P1).
        let next = NIOLockedValueBox(0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for slot in slots {
                group.addTask {
                    while true {
                        let index = next.withLockedValue { index in
                            defer { index += 1 }
                            return index
                        }
                        guard index < documents.count else { return }
                        let result = try await slot.recognize(documents[index], options: options)
                        stages.withLockedValue { $0.merge(result.stages) }
                    }
                }
            }
            try await group.waitForAll()
        }
        let seconds = milliseconds(ContinuousClock.now - started) / 1000
        for slot in slots { await slot.shutdown() }
        let perDocument = stages.withLockedValue { $0 }.seconds.sorted { $0.key < $1.key }
            .map { "\($0.key)=" + String(format: "%.4f", $0.value / Double(documents.count)) }.joined(separator: " ")
        let cpu = stages.withLockedValue { $0 }.engineCPU / Double(documents.count)
        print(String(format: "engine documents=%d slots=%d seconds=%.2f docs_per_s=%.2f engine_cpu_per_document=%.4f", documents.count, concurrency, seconds, Double(documents.count) / seconds, cpu)
            + " stages_per_document=" + perDocument)
    }
}
