import ArgumentParser
import Foundation
import LectorAPI
import LectorCore
import LectorModel
import LectorOCR
import LectorWorker
import Logging
import PostgresNIO
import ServiceLifecycle

/// `lector`: one binary, a subcommand per role. It only wires the library targets together.
@main
struct Lector: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lector",
        abstract: "Lector: an OCR job service.",
        discussion: "Every setting comes from a LECTOR_* environment variable; see README.md.",
        subcommands: [Serve.self, Work.self, Migrate.self, Keys.self, Jobs.self, OCR.self, Models.self, Submit.self, Watch.self]
    )

    static func main() async {
        Runtime.ensureSingleThreadedOpenMP()
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            // The client commands promise exit status 2 for a usage error (ArgumentParser's own is 64).
            if ["submit", "watch"].contains(CommandLine.arguments.dropFirst().first ?? ""),
                exitCode(for: error) == .validationFailure
            {
                printError(fullMessage(for: error))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}

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

    static func sweeper(
        storage: any JobStorage, jobs: JobStore, settings: Settings, logger: Logger, extra: @escaping @Sendable () -> Void = {}
    ) -> StorageSweeper {
        StorageSweeper(
            storage: storage, jobs: jobs, interval: .milliseconds(Int64(settings.sweepInterval * 1000)),
            abandonedAge: settings.abandonedAge, orphanAge: settings.abandonedAge, uploadAge: settings.uploadMaxAge, extra: extra,
            logger: logger)
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

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the HTTP API.")

    @Option(help: "Address to listen on (LECTOR_HTTP_HOST).") var host: String?
    @Option(help: "Port to listen on (LECTOR_HTTP_PORT).") var port: Int?

    func run() async throws {
        var settings = Runtime.settings()
        if let host { settings.httpHost = host }
        if let port { settings.httpPort = port }
        let logger = Runtime.logger("lector.api", settings: settings)
        try await Runtime.checkSchema(settings, logger: logger)
        let client = try Runtime.postgresClient(settings, logger: logger)
        try await Runtime.withStorage(settings, slots: nil, logger: logger) { storage, storageServices in
            let signingKey = try await Runtime.signingKey(settings, storage: storage)
            let engines = Runtime.engineFactory(settings)
            let dependencies = APIDependencies(
                jobs: JobStore(client: client, logger: logger), keys: KeyStore(client: client, logger: logger),
                storage: storage, signer: ResultLinkSigner(key: signingKey, ttl: settings.resultLinkTTL),
                waiters: WaitRegistry(), settings: settings, supportedTypes: engines.supportedTypes,
                availableLanguages: try engines.availableLanguages(), availableDetectors: engines.models.available)
            let app = buildApplication(dependencies: dependencies, logger: logger)
            let sweeper = Runtime.sweeper(storage: storage, jobs: dependencies.jobs, settings: settings, logger: logger)
            // The store's HTTP client after the database and before its users: it is shut down after them.
            let group = ServiceGroup(configuration: .init(
                services: [.init(service: client)] + storageServices + [.init(service: app), .init(service: sweeper)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
        }
    }
}

struct Work: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a worker: claim jobs and run OCR.")

    @Option(help: "Jobs run at once (LECTOR_WORKER_CONCURRENCY).") var concurrency: Int?
    @Flag(help: "Exit (status 0) once the queue has no job to claim: for one Kubernetes Job per batch (KEDA ScaledJob).")
    var exitWhenIdle = false
    @Option(help: "Stop claiming after this many jobs, then exit once they are done.") var maxJobs: Int?

    func validate() throws {
        if let maxJobs, maxJobs < 1 { throw ValidationError("--max-jobs must be at least 1") }
    }

    func run() async throws {
        var settings = Runtime.settings()
        if let concurrency { settings.workerConcurrency = max(1, concurrency) }
        let logger = Runtime.logger("lector.worker", settings: settings)
        try await Runtime.checkSchema(settings, logger: logger)
        // One connection per slot, plus the two listeners (queued, cancel), the rescuer, the lease keeper, the
        // webhook deliverer and the sweeper's lock (held for its shared pass, which queries on another). Fewer (a
        // smaller LECTOR_DATABASE_POOL_SIZE) works, with the others queueing behind the slots.
        let connections = max(2, min(settings.databasePoolSize, settings.workerConcurrency + 6))
        if connections < settings.workerConcurrency + 6 {
            logger.warning("LECTOR_DATABASE_POOL_SIZE is below the worker's slots + 6; lease renewals may wait", metadata: [
                "connections": "\(connections)", "slots": "\(settings.workerConcurrency)",
            ])
        }
        let client = try Runtime.postgresClient(settings, logger: logger, steady: connections)
        let jobs = JobStore(client: client, logger: logger)
        try await Runtime.withStorage(settings, slots: settings.workerConcurrency, logger: logger) { storage, storageServices in
            var configuration = WorkerConfiguration(settings: settings, workerID: Runtime.workerID(settings))
            configuration.exitWhenIdle = exitWhenIdle
            configuration.maxJobs = maxJobs
            let metrics = LectorMetrics()
            metrics.reportQueueDepth { try await jobs.queueDepth() }
            let worker = Worker(
                jobs: jobs, storage: storage, engines: Runtime.workerEngine(settings),
                configuration: configuration, metrics: metrics, logger: logger)
            let rescuer = Rescuer(
                jobs: jobs, interval: .milliseconds(Int64(settings.rescueInterval * 1000)),
                maxAttempts: settings.maxAttempts, grace: .milliseconds(Int64(settings.heartbeatSeconds * 1000)),
                metrics: metrics, logger: logger)
            // Delivers the webhook outbox; every worker process runs one (they never take the same delivery).
            let deliverer = WebhookDeliverer(
                store: WebhookStore(client: client, logger: logger), configuration: WebhookDeliveryConfiguration(settings: settings),
                metrics: metrics, logger: logger)
            // The worker's sweeper also removes scratch folders of workers that died on this host.
            let sweeper = Runtime.sweeper(storage: storage, jobs: jobs, settings: settings, logger: logger) {
                ScratchFolder.sweep(olderThan: 300)
            }
            // The store's HTTP client after the database and before its users: it is shut down after them.
            var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: client)] + storageServices
            if settings.workerListen { services.append(.init(service: worker.queuedListener())) }
            // Always: a cancel should stop the OCR within a second, not at the next heartbeat.
            services.append(.init(service: worker.cancelListener()))
            // Deletes ended jobs past LECTOR_RETENTION_DAYS (returns at once when it is 0).
            let retention = Retention(jobs: jobs, storage: storage, days: settings.retentionDays, logger: logger)
            services += [.init(service: rescuer), .init(service: retention), .init(service: deliverer), .init(service: sweeper)]
            if settings.metricsPort > 0 {
                services.append(.init(service: buildMetricsApplication(
                    metrics: metrics, host: settings.httpHost, port: settings.metricsPort, logger: logger)))
            }
            // The worker returns on its own only with --exit-when-idle or --max-jobs: then the process shuts down.
            services.append(.init(service: worker, successTerminationBehavior: .gracefullyShutdownGroup))
            let group = ServiceGroup(configuration: .init(
                services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
        }
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply the SQL migrations in db/.")

    @Option(help: "Folder of numbered .sql files.") var directory = "db"

    func run() async throws {
        let settings = Runtime.settings()
        let logger = Runtime.logger("lector.migrate", settings: settings)
        let migrator = try Migrator(directory: directory)
        let applied = try await Runtime.withClient(settings, logger: logger) { client in
            try await migrator.migrate(client: client, logger: logger)
        }
        print(applied.isEmpty ? "database is up to date" : "applied migrations: \(applied.map(String.init).joined(separator: ", "))")
    }
}

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage API keys and webhook settings.",
        subcommands: [Create.self, List.self, Revoke.self, Webhook.self, WebhookSecretCommand.self])

    struct Webhook: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set a key's default callback URL, used by its submits that name none (--clear removes it).")
        @Option(help: "The key's ID from `keys list`.") var key: Int64
        @Option(help: "An https URL (http and private addresses only with LECTOR_WEBHOOK_ALLOW_PRIVATE=true).") var url: String?
        @Flag(help: "Remove the key's default callback URL.") var clear = false

        func validate() throws {
            guard (url == nil) == clear else { throw ValidationError("give either --url or --clear") }
        }

        func run() async throws {
            let settings = Runtime.settings()
            let logger = Runtime.logger("lector.keys", settings: settings)
            let checked: String?
            if let url {
                // The same checks as a submit's callbackUrl, the resolution included (without a time limit here).
                let policy = CallbackURLPolicy(allowPrivate: settings.webhookAllowPrivate)
                do {
                    let target = try policy.check(url)
                    _ = try await policy.resolve(target)
                    checked = target.url
                } catch let error as CallbackURLRefused {
                    throw ValidationError(error.description)
                }
            } else {
                checked = nil
            }
            try await Runtime.withClient(settings, logger: logger) { [key] client in
                try await KeyStore(client: client, logger: logger).setDefaultCallbackURL(keyID: key, url: checked)
            }
            print(checked.map { "key \(key) now calls \($0) when its jobs end" } ?? "key \(key) has no default callback URL")
        }
    }

    struct WebhookSecretCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "webhook-secret",
            abstract: "Create or replace a user's webhook signing secret and print it once (pending deliveries are then signed with the new one).")
        @Option(help: "The user.") var user: String

        func run() async throws {
            let settings = Runtime.settings()
            let logger = Runtime.logger("lector.keys", settings: settings)
            let secret = try await Runtime.withClient(settings, logger: logger) { [user] client in
                try await KeyStore(client: client, logger: logger).rotateWebhookSecret(user: user)
            }
            guard let secret else { throw ValidationError("no user named \(user)") }
            print(secret.text)
            FileHandle.standardError.write(Data("webhook secret of \(user) set; it is shown only now\n".utf8))
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a key; it is printed once.")
        @Option(help: "The user the key belongs to (created when new).") var user: String

        func run() async throws {
            guard !user.isEmpty, user.count <= 200 else { throw ValidationError("--user must be 1 to 200 characters") }
            let settings = Runtime.settings()
            let logger = Runtime.logger("lector.keys", settings: settings)
            let (id, key) = try await Runtime.withClient(settings, logger: logger) { [user] client in
                try await KeyStore(client: client, logger: logger).createKey(forUser: user)
            }
            print(key.token)
            FileHandle.standardError.write(Data("key \(id) created for \(user); it is shown only now\n".utf8))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys (never their secrets).")

        func run() async throws {
            let settings = Runtime.settings()
            let logger = Runtime.logger("lector.keys", settings: settings)
            let keys = try await Runtime.withClient(settings, logger: logger) { client in
                try await KeyStore(client: client, logger: logger).listKeys()
            }
            print("ID\tUSER\tPREFIX\tCREATED\tREVOKED")
            for key in keys {
                print("\(key.id)\t\(key.user)\tlk_\(key.prefix)_…\t\(ISO8601.string(from: key.createdAt))\t\(key.revokedAt.map(ISO8601.string(from:)) ?? "-")")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key at once.")
        @Argument(help: "The key's ID from `keys list`.") var id: Int64

        func run() async throws {
            let settings = Runtime.settings()
            let logger = Runtime.logger("lector.keys", settings: settings)
            let revoked = try await Runtime.withClient(settings, logger: logger) { [id] client in
                try await KeyStore(client: client, logger: logger).revokeKey(id: id)
            }
            guard revoked else { throw ValidationError("no live key with ID \(id)") }
            print("key \(id) revoked")
        }
    }
}

struct Jobs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Look at the queue.", subcommands: [Stats.self])

    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Counts by status, the oldest queued job's age, expired leases, jobs waiting to retry.")

        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let settings = Runtime.settings()
            let logger = Runtime.logger("lector.jobs", settings: settings)
            let stats = try await Runtime.withClient(settings, logger: logger) { client in
                try await JobStore(client: client, logger: logger).stats()
            }
            let counts = Dictionary(uniqueKeysWithValues: JobStatus.allCases.map { ($0.rawValue, stats.counts[$0] ?? 0) })
            if json {
                var object: [String: Any] = counts
                object["oldestQueuedSeconds"] = stats.oldestQueuedAge.map { ($0 * 10).rounded() / 10 } ?? NSNull()
                object["expiredLeases"] = stats.expiredLeases
                object["waitingForRetry"] = stats.waitingForRetry
                let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            } else {
                for status in JobStatus.allCases { print("\(status.rawValue)\t\(counts[status.rawValue] ?? 0)") }
                print("oldest queued\t\(stats.oldestQueuedAge.map { String(format: "%.1f s", $0) } ?? "-")")
                print("expired leases\t\(stats.expiredLeases)")
                print("waiting to retry\t\(stats.waitingForRetry)")
            }
        }
    }
}

struct OCR: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ocr", abstract: "Run the engine on local files (no database, no server) and print or write the results.")

    /// The API's format names (`txt`, …); `text` is kept as an alias.
    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text = "txt", json, hocr, pdf
        var fileExtension: String { rawValue }

        init?(argument: String) {
            self.init(rawValue: argument == "text" ? "txt" : argument)
        }
    }

    @Argument(help: "Documents: PNG, JPEG, TIFF (all pages), PDF, BMP, WebP, PNM.") var files: [String]
    @Option(help: "Languages joined by '+' (see `tesseract --list-langs`).") var lang: String?
    @Option(help: "auto, document or scene.") var mode: PipelineMode = .auto
    @Option(help: "txt (or text), json, hocr or pdf (pdf: document pages only).") var format: Format = .text
    @Option(help: "Text detector of the scene pipeline: db or east.") var detector: DetectorKind = .db
    @Option(help: "Preprocessing, comma-separated, in order: deskew, orient, grayscale, binarize[:otsu|adaptive], denoise, scale[:factor].")
    var operations: String?
    @Option(help: "Write <name>.<format> for each file into this folder instead of printing (required for several files).")
    var output: String?

    func validate() throws {
        if files.count > 1, output == nil { throw ValidationError("with several files, name a folder with --output") }
        if format == .pdf, output == nil, isatty(STDOUT_FILENO) != 0 { throw ValidationError("--format pdf: redirect stdout or use --output") }
    }

    func run() async throws {
        let settings = Runtime.settings()
        let engines = Runtime.engineFactory(settings)
        // hOCR and the PDF are rendered only when asked for (they cost a good share of a page's time).
        let formats: [ResultFormat] = format == .hocr ? [.hocr] : format == .pdf ? [.pdf] : []
        var options = OCROptions(lang: lang ?? settings.defaultLanguage, mode: mode, detector: detector, formats: formats)
        do {
            options.operations = try (operations ?? "").split(separator: ",").map {
                try PreprocessingOperation(parsing: $0.trimmingCharacters(in: .whitespaces))
            }
            try options.validate(availableLanguages: try engines.availableLanguages(), availableDetectors: engines.models.available)
        } catch let error as OCRError {
            throw ValidationError(error.message)
        }
        if let output { try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true) }
        let slot = EngineSlot(factory: engines)
        var failures = 0
        for file in files {
            do {
                try await recognize(file, options: options, engines: engines, slot: slot)
            } catch {
                failures += 1
                FileHandle.standardError.write(Data("\(file): \(error)\n".utf8))
            }
        }
        await slot.shutdown()
        if failures > 0 { throw CommandFailure(description: "\(failures) of \(files.count) files failed") }
    }

    private func recognize(_ file: String, options: OCROptions, engines: TesseractEngineFactory, slot: EngineSlot) async throws {
        guard let data = FileManager.default.contents(atPath: file) else { throw CommandFailure(description: "cannot read the file") }
        guard let type = DocumentType.detect(data), engines.supportedTypes.contains(type) else {
            throw CommandFailure(description: "not a document this engine reads")
        }
        let started = ContinuousClock.now
        let result = try await slot.recognize(OCRDocument(data: data, type: type), options: options)
        let seconds = (ContinuousClock.now - started).secondsValue
        let bytes: Data
        switch format {
        case .text: bytes = Data((result.text + "\n").utf8)
        case .json: bytes = try JSONEncoder.lector(pretty: true).encode(result) + Data("\n".utf8)
        case .hocr: bytes = result.renderings.hocr ?? Data()
        case .pdf:
            guard let pdf = result.renderings.pdf else {
                throw CommandFailure(description: "no searchable PDF: Tesseract's PDF renderer covers pages read by the document pipeline (use --mode document)")
            }
            bytes = pdf
        }
        if let output {
            let name = URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent + "." + format.fileExtension
            try bytes.write(to: URL(fileURLWithPath: output).appendingPathComponent(name))
        } else {
            FileHandle.standardOutput.write(bytes)
        }
        let modes = result.pages.compactMap { $0.mode?.rawValue }.joined(separator: ",")
        FileHandle.standardError.write(Data(String(format: "%@: %d page(s), mode %@, %.3f s\n", file, result.pages.count, modes, seconds).utf8))
    }
}

extension PipelineMode: ExpressibleByArgument {}
extension DetectorKind: ExpressibleByArgument {}

struct Models: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Models that are not shipped with Lector.", subcommands: [Fetch.self, List.self])

    struct Fetch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Download a model, check its published SHA-1, install it.",
            discussion: "east: OpenCV's EAST text detector (~96 MB) into deploy/models/east/ (or LECTOR_EAST_MODEL).")

        @Argument(help: "The model: east.") var name: String
        @Option(help: "Install from an archive downloaded by hand instead of downloading it.") var archive: String?

        func run() async throws {
            guard name == "east" else { throw ValidationError("unknown model \"\(name)\"; known: east") }
            let settings = Runtime.settings()
            let destination = settings.eastModel ?? DetectorModels.eastRelativePath
            let installer = ModelInstaller(model: ModelInstaller.east)
            do {
                try installer.install(to: destination, archive: archive)
            } catch {
                throw CommandFailure(description: "\(error)\nDownload \(ModelInstaller.east.url) by hand and run: lector models fetch east --archive FILE")
            }
            print("installed \(destination) (archive SHA-1 \(ModelInstaller.east.archiveSHA1) checked)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show where each detector's model is and whether it is installed.")

        func run() async throws {
            let settings = Runtime.settings()
            let models = DetectorModels.discover(db: settings.dbModel, east: settings.eastModel)
            let available = models.available
            for kind in DetectorKind.allCases {
                let path = kind == .db ? models.db : models.east
                print("\(kind.rawValue)\t\(available.contains(kind) ? "installed" : "missing")\t\(path ?? "-")")
            }
        }
    }
}

/// A failure to report as "Error: <description>" with exit status 1, without the usage text.
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
}
