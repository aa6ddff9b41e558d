import ArgumentParser
import LectorAPI
import LectorCore
import LectorWorker
import ServiceLifecycle

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
            let services = buildWorkerServices(
                settings: settings, jobs: jobs, storage: storage, engines: Runtime.workerEngine(settings),
                configuration: configuration, metrics: metrics, logger: logger)
            let endpoint: [any Service] = settings.metricsPort > 0
                ? [buildMetricsApplication(metrics: metrics, host: settings.httpHost, port: settings.metricsPort, logger: logger)] : []
            // The store's HTTP client after the database and before its users: it is shut down after them.
            let group = ServiceGroup(configuration: .init(
                services: [.init(service: client)] + storageServices + services.configurations(alongside: endpoint),
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
        }
    }
}
