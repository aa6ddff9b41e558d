import Foundation
import LectorCore
import LectorOCR
import Logging
import NIOPosix
import PostgresNIO
import ServiceLifecycle

/// Process-wide set-up shared by the subcommands.
enum Runtime {
    static var environment: [String: String] { ProcessInfo.processInfo.environment }

    static func settings() -> Settings { Settings(environment: environment) }

    static func logger(_ label: String, settings: Settings) -> Logger {
        let level = Logger.Level(rawValue: settings.logLevel.lowercased()) ?? .info
        let json = settings.logFormat == "json"
        if json { JSONLogHandler.captureNativeOutput() }
        LoggingSystem.bootstrap { label in
            if json {
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: label)
        logger.logLevel = level
        return logger
    }

    /// The job storage `LECTOR_STORAGE` names: files under `LECTOR_STORAGE_ROOT` (the default), or an
    /// S3-compatible object store (`s3://bucket/prefix`, with the `LECTOR_S3_*` settings) with an HTTP client of
    /// its own, sized to `slots` (a worker) and shut down by the returned service, which the process must run
    /// before the services that use the storage. Until then, `body` runs with both, and the client is shut down
    /// if it throws (an `HTTPClient` must never be released running).
    static func withStorage<T>(
        _ settings: Settings, slots: Int?, logger: Logger,
        _ body: (any JobStorage, [ServiceGroupConfiguration.ServiceConfiguration]) async throws -> T
    ) async throws -> T {
        guard settings.usesObjectStorage else {
            guard ["files", "file"].contains(settings.storage) else {
                throw CommandFailure(description: "LECTOR_STORAGE must be files or s3://bucket/prefix, not '\(settings.storage)'")
            }
            return try await body(try FileStorage(settings: settings), [])
        }
        let http = ObjectStorage.makeHTTPClient(settings: settings, slots: slots)
        do {
            let storage = try ObjectStorage(settings: settings, httpClient: http)
            return try await body(storage, [.init(service: HTTPClientService(client: http, logger: logger))])
        } catch {
            try? await http.shutdown()
            throw error
        }
    }

    /// The secret of result links: `LECTOR_SIGNING_KEY`, else one kept in the storage and shared by every process.
    static func signingKey(_ settings: Settings, storage: any JobStorage) async throws -> [UInt8] {
        if !settings.signingKey.isEmpty { return Array(settings.signingKey.utf8) }
        if let objects = storage as? ObjectStorage { return try await objects.sharedSigningKey() }
        if let files = storage as? FileStorage { return try files.sharedSigningKey() }
        throw CommandFailure(description: "set LECTOR_SIGNING_KEY for this storage")
    }

    /// Two settings that only work from the environment a process starts with:
    /// - OMP_THREAD_LIMIT=1: Debian's Tesseract starts 4 OpenMP threads per page, 2-10x slower on 2 cores, and
    ///   libgomp reads the variable only when it loads;
    /// - MALLOC_ARENA_MAX=2: with glibc's default (8 arenas per core) the worker's RSS kept growing with the
    ///   number of jobs, from fragmentation across the many threads of NIO and the engines (BENCHMARKS.md, P7).
    /// When either is missing, re-exec once with it set (a value the user set is kept).
    static func ensureSingleThreadedOpenMP() {
        let environment = ProcessInfo.processInfo.environment
        guard environment["OMP_THREAD_LIMIT"] == nil || environment["MALLOC_ARENA_MAX"] == nil else { return }
        setenv("OMP_THREAD_LIMIT", "1", 0)
        setenv("MALLOC_ARENA_MAX", "2", 0)
        let arguments = CommandLine.arguments
        var cArguments = arguments.map { strdup($0) }
        cArguments.append(nil)
        execv("/proc/self/exe", &cArguments)
        // execv returned: carry on without the re-exec rather than fail.
    }

    /// Runs Swift's global executor on NIO's event loops (`MultiThreadedEventLoopGroup.singleton`, a thread per
    /// core) instead of a second pool of as many threads. A database reply or an HTTP request then resumes its task
    /// on the thread that received it instead of waking a cooperative-pool thread: a third fewer context switches
    /// in the API and the worker, each of which can preempt an OCR thread (BENCHMARKS.md, P1, tenth run; throughput
    /// did not move measurably). Sound because nothing in an async function blocks: OCR runs on the slots' own
    /// threads and file I/O on NIO's thread pool. Before any task is enqueued, from the main thread.
    static func runConcurrencyOnEventLoops() {
        guard ProcessInfo.processInfo.environment["LECTOR_CONCURRENCY_EXECUTOR"] != "swift" else { return }
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }

    /// The process's connection pool. With `steady` (the worker), at most that many connections and no keep-alive
    /// queries: the pool then schedules no keep-alive timer when a connection goes back to it. Each such timer is a
    /// `Task.sleep` that Swift's runtime keeps allocated until its deadline even after the pool cancels it, so a
    /// worker's memory grew with its job rate (BENCHMARKS.md, P7). Without keep-alive a dead connection is found
    /// by the next query on it, which fails and is retried like any other database error.
    ///
    /// The minimum stays 0. The worker used to keep all its connections open (minimum = maximum, so no idle
    /// timer either), but PostgresNIO 1.33's pool then traps (`PoolStateMachine+ConnectionGroup.swift:163`,
    /// "Precondition failed") when connections close faster than it replaces them and a request comes in: it
    /// counts closing connections towards the minimum when it refills and not when it checks. The chaos run,
    /// restarting PostgreSQL, crashed workers that way. Connections beyond the minimum get the 60 s idle timer
    /// instead: memory bounded by a minute of the job rate, not a leak.
    static func postgresClient(_ settings: Settings, logger: Logger, steady: Int? = nil) throws -> PostgresClient {
        var configuration = try DatabaseURL.configuration(from: settings.databaseURL)
        configuration.options.maximumConnections = settings.databasePoolSize
        if let steady {
            configuration.options.maximumConnections = steady
            configuration.options.keepAliveBehavior = nil
        }
        configuration.options.connectTimeout = .seconds(5)
        return PostgresClient(configuration: configuration, backgroundLogger: logger)
    }

    /// Runs `body` while the client's pool runs, for one-off commands.
    static func withClient<T: Sendable>(
        _ settings: Settings, logger: Logger, _ body: @Sendable (PostgresClient) async throws -> T
    ) async throws -> T {
        // One-off commands may lease before run() has started; PostgresNIO warns about that, harmlessly.
        var quiet = logger
        quiet.logLevel = .error
        let client = try postgresClient(settings, logger: quiet)
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                await client.run()
                return nil
            }
            defer { group.cancelAll() }
            return try await body(client)
        }
    }

    /// Refuses to start on a schema older than this build needs (run `lector migrate` first). A database that
    /// cannot be reached within `LECTOR_DATABASE_TIMEOUT` is not a reason to refuse (PostgresNIO would wait for
    /// it indefinitely): the services start and retry until it comes back.
    static func checkSchema(_ settings: Settings, logger: Logger) async throws {
        let applied: Int
        do {
            applied = try await withDeadline(.milliseconds(Int64(settings.databaseTimeout * 1000)), "schema check") {
                try await withClient(settings, logger: logger) { client in
                    try await Migrator.appliedVersion(client: client, logger: logger)
                }
            }
        } catch {
            logger.warning("could not check the database schema; starting anyway", metadata: [
                "error": "\(describeDatabaseError(error))",
            ])
            return
        }
        guard applied >= Migrator.requiredVersion else {
            throw CommandFailure(
                description: "the database schema is at migration \(applied); this build needs \(Migrator.requiredVersion): run `lector migrate` first")
        }
    }

    /// The worker's engine: Tesseract, or the no-op engine for benchmarks (`LECTOR_ENGINE=noop`).
    static func workerEngine(_ settings: Settings) -> any OCREngineFactory {
        settings.engine == "noop" ? NoopEngineFactory() : engineFactory(settings)
    }

    static func engineFactory(_ settings: Settings) -> TesseractEngineFactory {
        TesseractEngineFactory(
            dataPath: settings.tessdata,
            limits: OCRLimits(maxPagePixels: settings.maxPagePixels, maxPages: settings.maxPages, maxDocumentPixels: settings.maxDocumentPixels, maxDocumentTime: .milliseconds(Int64(settings.maxDocumentSeconds * 1000))),
            models: DetectorModels.discover(db: settings.dbModel, east: settings.eastModel),
            pdfDPI: settings.pdfDPI)
    }

    static func workerID(_ settings: Settings) -> String {
        if let id = settings.workerID { return id }
        let host = ProcessInfo.processInfo.hostName
        return "\(host):\(getpid())"
    }
}

/// A failure to report as "Error: <description>" with exit status 1, without the usage text.
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
}
