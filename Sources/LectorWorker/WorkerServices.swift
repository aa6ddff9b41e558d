import LectorCore
import LectorOCR
import Logging
import ServiceLifecycle

/// The services of a worker process, built from its settings by `buildWorkerServices`: `lector work` runs them
/// all, the tests run the ones they need, so both run one wiring.
public struct WorkerServices: Sendable {
    /// The claim → OCR → end loop.
    public let worker: Worker
    /// Rings the worker's doorbell on `lector_job_queued`; nil with `LECTOR_WORKER_LISTEN=false` (the slots then poll).
    public let queuedListener: (any Service)?
    /// Cancels the OCR of a job whose cancel was requested: within a second, not at the next heartbeat.
    public let cancelListener: any Service
    /// Requeues the jobs of lost workers.
    public let rescuer: Rescuer
    /// Deletes ended jobs past `LECTOR_RETENTION_DAYS` (waits for shutdown when it is 0).
    public let retention: Retention
    /// Delivers the webhook outbox; every worker process runs one (they never take the same delivery).
    public let deliverer: WebhookDeliverer
    /// The storage sweeper, which also removes the scratch folders of workers that died on this host.
    public let sweeper: StorageSweeper

    /// All of them, in the order a `ServiceGroup` runs them after the `PostgresClient` and the storage's HTTP
    /// client (shut down in reverse, so after their users): the listeners, the rescuer, retention, the deliverer,
    /// the sweeper, then `alongside` (the executable's metrics endpoint), and the worker last. The worker returns
    /// on its own only with `exitWhenIdle` or `maxJobs`; then the group shuts down.
    public func configurations(alongside: [any Service] = []) -> [ServiceGroupConfiguration.ServiceConfiguration] {
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let queuedListener { services.append(.init(service: queuedListener)) }
        services.append(.init(service: cancelListener))
        services += [.init(service: rescuer), .init(service: retention), .init(service: deliverer), .init(service: sweeper)]
        services += alongside.map { .init(service: $0) }
        services.append(.init(service: worker, successTerminationBehavior: .gracefullyShutdownGroup))
        return services
    }
}

/// Wires a worker process: its `Worker` on `jobs` with `configuration` (built by the caller from `settings`, a
/// worker id and its own options), the worker's two listeners, and the `Rescuer`, `Retention`,
/// `WebhookDeliverer` and `StorageSweeper` as `settings` configures them, all on `jobs`'s database pool and
/// reporting to `metrics` (whose queue depth it reads from `jobs`). Starts nothing.
public func buildWorkerServices(
    settings: Settings, jobs: JobStore, storage: any JobStorage, engines: any OCREngineFactory,
    configuration: WorkerConfiguration, metrics: LectorMetrics = LectorMetrics(), logger: Logger
) -> WorkerServices {
    metrics.reportQueueDepth { try await jobs.queueDepth() }
    let worker = Worker(
        jobs: jobs, storage: storage, engines: engines, configuration: configuration, metrics: metrics, logger: logger)
    return WorkerServices(
        worker: worker,
        queuedListener: settings.workerListen ? worker.queuedListener() : nil,
        cancelListener: worker.cancelListener(),
        rescuer: Rescuer(
            jobs: jobs, interval: .milliseconds(Int64(settings.rescueInterval * 1000)),
            maxAttempts: settings.maxAttempts, grace: .milliseconds(Int64(settings.heartbeatSeconds * 1000)),
            metrics: metrics, logger: logger),
        retention: Retention(jobs: jobs, storage: storage, days: settings.retentionDays, logger: logger),
        deliverer: WebhookDeliverer(
            store: WebhookStore(client: jobs.client, logger: logger), configuration: WebhookDeliveryConfiguration(settings: settings),
            metrics: metrics, logger: logger),
        sweeper: StorageSweeper(settings: settings, storage: storage, jobs: jobs, extra: { ScratchFolder.sweep(olderThan: 300) }, logger: logger))
}
