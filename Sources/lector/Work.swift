import ArgumentParser
import LectorAPI
import LectorCore
import LectorOCR
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
