import Foundation
import LectorCore
import LectorModel
import LectorOCR
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// How a worker behaves: slots, lease, retries, shutdown.
public struct WorkerConfiguration: Sendable {
    public var workerID: String
    public var concurrency: Int
    public var pollInterval: Duration
    public var leaseDuration: Duration
    public var heartbeatInterval: Duration
    public var maxAttempts: Int
    public var retryBase: Double
    public var retryMax: Double
    public var shutdownGrace: Duration
    /// Longest one attempt may hold its lease (`LECTOR_MAX_JOB_SECONDS`).
    public var maxRuntime: Duration
    public var claimStrategy: ClaimStrategy
    /// The most claims, and the most ends, written in one transaction (`LECTOR_WORKER_BATCH`; `ClaimBatcher`,
    /// `JobStore.endBatch`).
    public var batch: Int
    /// `lector work --exit-when-idle`: a slot that finds the queue empty stops, and the worker returns when all
    /// have (for a Kubernetes Job per batch of queued jobs).
    public var exitWhenIdle = false
    /// `lector work --max-jobs N`: the worker stops claiming after N jobs.
    public var maxJobs: Int?
    /// How often page progress of the jobs in flight is written and announced (at most once per job per interval).
    public var progressInterval: Duration = .seconds(1)
    /// The longest the end transaction waits for the results' commit (object storage: server-side copies); nil:
    /// half the lease. It holds the lease row locked, which stops both renewals and the rescuer, so it must end
    /// well inside the lease: at the end the lease has at least `leaseDuration - heartbeatInterval` left, and the
    /// heartbeat is at most a third of the lease.
    public var commitTimeout: Duration?
    var commitDeadline: Duration { commitTimeout ?? leaseDuration / 2 }
    /// The language whose models each slot loads at start-up (`LECTOR_DEFAULT_LANG`: what most jobs ask for).
    public var warmLanguage: String?
    /// Documents of at least this many pages are split into page tasks (`LECTOR_PAGE_TASKS`; 0: never).
    public var pageTasks: Int

    public init(settings: Settings, workerID: String) {
        self.workerID = workerID
        self.concurrency = max(1, settings.workerConcurrency)
        self.pollInterval = .milliseconds(Int64(settings.workerPollInterval * 1000))
        self.leaseDuration = .seconds(settings.leaseSeconds)
        self.heartbeatInterval = .milliseconds(Int64(settings.heartbeatSeconds * 1000))
        self.maxAttempts = settings.maxAttempts
        self.retryBase = settings.retryBaseSeconds
        self.retryMax = settings.retryMaxSeconds
        self.shutdownGrace = .milliseconds(Int64(settings.shutdownGrace * 1000))
        self.maxRuntime = .milliseconds(Int64(settings.maxJobSeconds * 1000))
        self.claimStrategy = settings.claimStrategy
        self.batch = settings.workerBatch
        self.warmLanguage = settings.defaultLanguage
        self.pageTasks = settings.pageTasks
    }

    /// Exponential backoff with full jitter in [0.5, 1.5) of the step: base · 2^(attempt-1), capped.
    public func retryDelay(afterAttempt attempt: Int, jitter: Double = Double.random(in: 0.5..<1.5)) -> Double {
        let step = retryBase * pow(2, Double(max(0, min(attempt - 1, 30))))
        return min(retryMax, step) * jitter
    }
}

/// A worker process's job loop: `concurrency` slots, each claiming and running one job at a time, while the
/// previous job's end is recorded beside it.
///
/// A slot claims in one short transaction (through `ClaimBatcher`: slots idle at the same time share one
/// `WorkQueue.claimBatch`, each with its own lease; in PostgreSQL `claim_work`), then reads the document, runs
/// the engine on its own thread while a heartbeat renews the lease, stages the result files, and ends the job;
/// all after the claim committed. The end (fsyncs and database round trips, during which the slot's core would
/// idle) runs in a child task beside the next job's reading and OCR, one per slot; ends ready together share a
/// transaction (`ender`, `WorkQueue.endBatch`). The end moves the staged files into place and appends
/// `FINISHED` while holding the lease row, so an attempt that lost its lease can neither finish nor overwrite.
/// A transient error requeues with backoff; a permanent one fails at once with its reason. A PDF or TIFF of
/// `pageTasks` pages or more is split instead, and its pages are read by any slot as small jobs of their own
/// (`Worker+Pages.swift`; docs/design/queue.md, "Page tasks").
///
/// On graceful shutdown slots stop claiming; jobs in flight get `shutdownGrace` to finish, then their OCR is
/// cancelled and they are handed back (`QUEUED`, "worker shutdown") before the worker returns.
public struct Worker: Service {
    /// The queue: `JobStore` in production, `MemoryQueue` in tests of the worker's logic.
    public let jobs: any WorkQueue
    public let storage: any JobStorage
    public let engines: any OCREngineFactory
    public let configuration: WorkerConfiguration
    public let doorbell: WaitRegistry<Int>
    public let logger: Logger
    public let metrics: LectorMetrics
    /// The attempts running now, for the lease keeper and the shutdown deadline.
    private let inFlight = NIOLockedValueBox(InFlight())
    /// Jobs claimed so far, against `maxJobs`.
    private let claimedCount = NIOLockedValueBox(0)
    /// Whether storage takes writes: slots claim only while it does.
    let storageHealth: StorageHealth
    /// Claims for the slots that are idle together in one transaction.
    let claimer: ClaimBatcher
    /// The queue's page tasks, when this worker splits documents of several pages (`pageTasks` and a queue that
    /// has them: PostgreSQL's).
    let pages: (any PageTaskQueue)?
    /// Ends the jobs whose outcomes are ready together in one transaction.
    let ender: GroupCommit<EndRequest, Void>
    /// The engine's identity (`OCREngineFactory.identity`), recorded with every finished job and announced as the
    /// fleet's current engine at start, so that identical jobs reuse results of this engine only; nil when the
    /// engine could not tell (then its results are never reused).
    let engineIdentity: String?

    /// The doorbell key every slot waits on.
    public static let queuedKey = 0
    /// Every fixed result file an attempt may stage (`result.pdf` only when the renderer made one); the page
    /// previews are named by page (`ResultFiles.preview`).
    static let resultFiles = ResultFormat.allCases.map(\.fileName)

    public init(
        jobs: any WorkQueue, storage: any JobStorage, engines: any OCREngineFactory,
        configuration: WorkerConfiguration, doorbell: WaitRegistry<Int> = WaitRegistry(), metrics: LectorMetrics = LectorMetrics(),
        logger: Logger
    ) {
        self.metrics = metrics
        self.jobs = jobs
        self.storage = storage
        self.engines = engines
        self.configuration = configuration
        self.doorbell = doorbell
        self.logger = logger
        self.claimer = ClaimBatcher(
            queue: jobs, leaseDuration: configuration.leaseDuration, strategy: configuration.claimStrategy,
            maxBatch: configuration.batch)
        // Two end batches at once: one whose files are slow to put in place (an object store's copies, up to the
        // commit deadline) does not hold up every other end of the process.
        self.ender = GroupCommit(maxBatch: configuration.batch, maxInFlight: 2) { [jobs] requests in await jobs.endBatch(requests) }
        self.pages = configuration.pageTasks > 0 ? jobs as? any PageTaskQueue : nil
        self.storageHealth = StorageHealth(
            storage: storage, interval: storage is ObjectStorage ? ObjectStorage.healthInterval : .seconds(1))
        // Bounded as the database keeps it (500 characters); a longer one is no identity (never reused).
        self.engineIdentity = (try? engines.identity()).flatMap { $0.count <= 500 ? $0 : nil }
    }

    /// The listener that rings `doorbell` when a job is queued; run it beside the worker.
    public func queuedListener() -> any Service {
        jobs.queuedListener(logger: logger, onQueued: { [doorbell] in doorbell.signal(Self.queuedKey) })
    }

    /// The listener that cancels the attempt of a job whose cancel was requested (`POST /v1/jobs/{id}/cancel`,
    /// `lector_job_cancel`); run it beside the worker. A request missed while the connection was down is found
    /// by the lease keeper at its next beat.
    public func cancelListener() -> any Service {
        jobs.cancelListener(logger: logger, onCancel: { [inFlight] id in
            for running in inFlight.withLockedValue({ $0.attempts(of: id) }) { running.requestCancel() }
        })
    }

    public func run() async throws {
        let id = configuration.workerID
        logger.info("worker started", metadata: ["worker": "\(id)", "slots": "\(configuration.concurrency)"])
        metrics.slots(total: configuration.concurrency)
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { outer in
                // After a graceful shutdown starts, jobs in flight have `shutdownGrace` before they are handed
                // back. This timer is cancelled as soon as every slot has returned, so an idle worker exits at once.
                outer.addTask {
                    try? await gracefulShutdown()
                    guard Task.isShuttingDownGracefully, !Task.isCancelled else { return }
                    guard (try? await Task.sleep(for: configuration.shutdownGrace)) != nil else { return }
                    for attempt in inFlight.withLockedValue({ $0.passDeadline() }) { attempt.cancellation.cancel() }
                }
                // One lease keeper for all the slots, running until every slot has returned (so also while an
                // outcome waits for the database to come back).
                outer.addTask { await keepLeases() }
                outer.addTask { await publishProgress() }
                outer.addTask { await announceEngine() }
                await withDiscardingTaskGroup { group in
                    for index in 1...configuration.concurrency {
                        group.addTask { await runSlot(index) }
                    }
                }
                outer.cancelAll()
            }
        } onGracefulShutdown: { [doorbell] in
            doorbell.signal(Self.queuedKey)
        }
        logger.info("worker stopped", metadata: ["worker": "\(id)"])
    }

    var stopping: Bool { Task.isShuttingDownGracefully || Task.isCancelled }

    /// Announces this worker's engine identity as the fleet's current one (db/011), retrying while the database
    /// is unreachable. Until it has, identical jobs may still reuse the previous engine's results.
    private func announceEngine() async {
        guard let identity = engineIdentity else { return }
        var delay = Duration.milliseconds(500)
        while !Task.isCancelled {
            do {
                try await jobs.announceEngine(identity)
                logger.info("engine announced", metadata: ["engine": "\(identity)"])
                return
            } catch {
                logger.warning("could not announce the engine; retrying", metadata: ["error": "\(String(reflecting: error))"])
                guard (try? await Task.sleep(for: delay)) != nil else { return }
                delay = min(delay * 2, .seconds(30))
            }
        }
    }

    /// Claims and runs jobs until shutdown.
    func runSlot(_ index: Int) async {
        let slotID = "\(configuration.workerID)/\(index)"
        let slot = EngineSlot(factory: engines)
        do {
            try await slot.warmUp(language: configuration.warmLanguage)
        } catch {
            logger.error("the engine could not start; jobs will fail or retry", metadata: ["error": "\(error)"])
        }
        let ticket = doorbell.register(Self.queuedKey)
        defer { doorbell.unregister(ticket) }
        // A job's end (its results encoded, staged and put in place, its outcome recorded: fsyncs and database round trips,
        // the core idle) runs beside the next job's claim, reading and OCR, in a child task; at most one per slot, and the slot
        // waits for it before it starts another (BENCHMARKS.md, P1).
        await withTaskGroup(of: Void.self) { ends in
            var pendingEnds = 0
            var failures = 0
            var storageWasDown = false
            // The job this slot split last: every other claim of the slot is a page of that job, until none of its
            // pages is claimable, whatever else is queued (other slots help when idle); the claims between take new
            // jobs first. So a long document is read at half a slot's pace at least while this slot follows it, and
            // new jobs wait at most one page for this slot (pages nobody follows: `page_wait()`, db/014).
            var splitJob: UUID?
            var ownTurn = true
            while !stopping {
                let claiming = ContinuousClock.now
                // Storage that cannot take results (full, or failing) is the system's condition: wait for it rather
                // than claim jobs that would spend their attempts on it.
                do {
                    try await storageHealth.check()
                    if storageWasDown { logger.notice("storage takes writes again; claiming", metadata: ["worker": "\(slotID)"]) }
                    storageWasDown = false
                } catch {
                    if !storageWasDown {
                        logger.error("storage cannot take writes; not claiming until it can", metadata: [
                            "worker": "\(slotID)", "error": "\(error)",
                        ])
                    }
                    storageWasDown = true
                    _ = await doorbell.wait(ticket, timeout: max(configuration.pollInterval, .seconds(1)))
                    continue
                }
                // A place under --max-jobs is taken before the claim, so slots together never exceed it.
                let reserved = claimedCount.withLockedValue { count -> Bool in
                    guard count < (configuration.maxJobs ?? .max) else { return false }
                    count += 1
                    return true
                }
                guard reserved else { break }
                let claimed: ClaimedJob?
                do {
                    let claimStarted = ContinuousClock.now
                    var own: ClaimedJob?
                    if let job = splitJob, ownTurn, let pages {
                        own = try await pages.claimPage(of: job, worker: slotID, leaseDuration: configuration.leaseDuration, now: nil)
                        if own == nil { splitJob = nil }
                    }
                    if let own {
                        claimed = own
                    } else {
                        claimed = try await claimer.claim(worker: slotID)
                    }
                    ownTurn.toggle()
                    metrics.claim(duration: ContinuousClock.now - claimStarted, found: claimed != nil)
                    failures = 0
                } catch {
                    splitJob = nil
                    claimedCount.withLockedValue { $0 -= 1 }
                    failures += 1
                    let delay = Duration.milliseconds(min(5000, 100 << min(failures, 6)))
                    logger.warning("claim failed; retrying", metadata: [
                        "worker": "\(slotID)", "error": "\(String(reflecting: error))", "retryIn": "\(delay)",
                    ])
                    _ = await doorbell.wait(ticket, timeout: delay)
                    continue
                }
                if claimed == nil { claimedCount.withLockedValue { $0 -= 1 } }
                if let job = claimed {
                    let pending = await process(job, slot: slot, claimed: ContinuousClock.now - claiming)
                    if pending.outcome == .split {
                        splitJob = job.id
                        ownTurn = true
                    }
                    // One end at a time per slot: the previous job's end ran beside this job's OCR; wait for it now,
                    // then let this one's run beside the next job's.
                    if pendingEnds > 0 {
                        await ends.next()
                        pendingEnds -= 1
                    }
                    ends.addTask { await end(pending) }
                    pendingEnds += 1
                } else if configuration.exitWhenIdle {
                    logger.info("the queue is empty; this slot stops (--exit-when-idle)", metadata: ["worker": "\(slotID)"])
                    break
                } else {
                    _ = await doorbell.wait(ticket, timeout: configuration.pollInterval)
                }
            }
        }
        await slot.shutdown()
    }

    /// What became of one attempt.
    enum Outcome: Equatable, CustomStringConvertible {
        /// With the result files staged (named; empty until the end has encoded and staged them).
        case finished([String])
        case failed(String)
        case retry(String)
        /// Storage is full: the job goes back without spending an attempt.
        case storageFull(String)
        case handBack
        case leaseLost
        /// The job's owner cancelled it: it ends `FAILURE` "cancelled".
        case cancelled
        /// The job was split into page tasks: its lease is its pages' now, and nothing is left to record.
        case split

        var description: String {
            switch self {
            case .finished: "finished"
            case .failed: "failed"
            case .retry: "retry"
            case .storageFull: "storage full"
            case .handBack: "handed back"
            case .leaseLost: "lease lost"
            case .cancelled: "cancelled"
            case .split: "split into pages"
            }
        }
    }

    /// Runs one claimed job up to its outcome: read and recognise. `end(_:)` then encodes and stages the results and
    /// records the outcome (the results put in place with `FINISHED`, a retry, a hand-back).
    ///
    /// From here to the end of `end(_:)` the attempt is in `inFlight`: the lease keeper renews its lease until the
    /// outcome is recorded (and cancels the OCR when the lease is gone), and the end of the shutdown grace period
    /// cancels the OCR. A hard stop (the slot's task cancelled) cancels the OCR too. No task or timer is made per
    /// job but the end's child task: with a fast engine these were most of the worker's cost per job
    /// (BENCHMARKS.md, P3). `claimed`: how long the claim took (the storage check and the claim transaction), for
    /// the stage times.
    func process(_ job: ClaimedJob, slot: EngineSlot?, claimed: Duration = .zero, mode: AttemptMode = .read) async -> PendingEnd {
        var jobLogger = self.logger
        jobLogger[metadataKey: "job_id"] = "\(job.id.uuidString.lowercased())"
        jobLogger[metadataKey: "worker"] = "\(job.lease.worker)"
        jobLogger[metadataKey: "attempt"] = "\(job.lease.attempt)"
        if let page = job.lease.page { jobLogger[metadataKey: "page"] = "\(page)" }
        let logger = jobLogger
        let started = ContinuousClock.now
        let running = RunningAttempt(lease: job.lease, logger: logger)
        // A job claimed after the grace period ended is handed back at once.
        if !inFlight.withLockedValue({ $0.add(running) }) { running.cancellation.cancel() }

        // An assembly runs in the end of the page before it, beside the slot's next job: not a busy slot.
        if mode == .read { metrics.slotBusy(1) }
        defer { if mode == .read { metrics.slotBusy(-1) } }
        let facts = AttemptFacts()
        facts.stages.add("claim", claimed)
        let outcome = await withTaskCancellationHandler {
            await attempt(job, slot: slot, mode: mode, running: running, facts: facts, logger: logger)
        } onCancel: {
            // The slot itself is cancelled (a hard stop): stop the OCR too.
            if !Task.isShuttingDownGracefully { running.cancellation.cancel() }
        }
        return PendingEnd(job: job, running: running, facts: facts, outcome: outcome, started: started)
    }

    /// An attempt whose outcome is known and not yet recorded.
    struct PendingEnd: Sendable {
        let job: ClaimedJob
        let running: RunningAttempt
        let facts: AttemptFacts
        let outcome: Outcome
        let started: ContinuousClock.Instant
    }

    /// Encodes and stages a finished attempt's result files (`UnstagedResults`, `stage`), records its outcome
    /// (`record`), then its metrics and its log line; the attempt leaves `inFlight`.
    func end(_ pending: PendingEnd) async {
        let running = pending.running, facts = pending.facts, logger = running.logger
        defer { inFlight.withLockedValue { $0.remove(running) } }
        var outcome = pending.outcome
        if case .finished = outcome, let encoded = facts.encodeUnstaged() {
            switch encoded {
            case .success(let files):
                let staging = ContinuousClock.now
                outcome = await stage(files, of: pending.job, logger: logger)
                facts.stages.add("stage", ContinuousClock.now - staging)
            case .failure(let error):
                logger.error("unexpected error while encoding the results", metadata: ["error": "\(String(reflecting: error))"])
                outcome = .retry("internal error while processing the document")
            }
        }
        // A cancel request wins over anything but an end the attempt reached by itself (its results are staged,
        // or the document failed): the job is not requeued, handed back or left to the rescuer.
        if running.isCancelRequested {
            switch outcome {
            case .finished, .failed, .cancelled, .split: break
            case .retry, .storageFull, .handBack, .leaseLost: outcome = .cancelled
            }
        }
        let ending = ContinuousClock.now
        if let page = pending.job.lease.page {
            await recordPage(outcome, of: pending.job, page: page, running: running, logger: logger)
        } else {
            let recorded = await record(outcome, job: pending.job, mode: facts.mode, pages: facts.pages, logger: logger)
            // A split job that ended: its pages' parts are read (or no longer needed); pictures stay.
            let ended = switch outcome {
            case .finished, .failed, .cancelled: true
            case .retry: pending.job.lease.attempt >= configuration.maxAttempts
            case .storageFull, .handBack, .leaseLost, .split: false
            }
            if recorded, ended, let split = facts.split {
                await storage.removeResults(id: pending.job.id, fileNames: ResultFiles.pageParts(pages: split))
            }
        }
        facts.stages.add("end", ContinuousClock.now - ending)
        for page in facts.pageTimings { metrics.ocrPage(mode: page.mode.rawValue, duration: page.duration) }
        // A job split into pages is counted once, by the attempt that assembles it.
        if pending.job.lease.page == nil, outcome != .split {
            metrics.ocrJob(mode: facts.mode, duration: ContinuousClock.now - pending.started)
        }

        // `stages`: where the attempt's time went (StageTimes; BENCHMARKS.md, P1, sums these lines); `engine_cpu`:
        // what reading the document cost the engine's thread, in CPU seconds.
        metrics.attemptStages(facts.stages)
        logger.info(pending.job.lease.page == nil ? "job attempt ended" : "page attempt ended", metadata: [
            "outcome": "\(outcome)", "seconds": "\((ContinuousClock.now - pending.started).secondsValue)", "stages": "\(facts.stages)",
            "engine_cpu": "\(String(format: "%.4f", facts.stages.engineCPU))",
        ])
    }

    /// Stops renewing an attempt whose lease ended (a page read, a job split) while it is still in flight.
    func stopRenewing(_ running: RunningAttempt) {
        _ = inFlight.withLockedValue { $0.leaseLost(running) }
    }

    /// Every `progressInterval`, writes the page progress of each attempt in flight whose progress changed
    /// (`JobStore.reportProgress`, which announces it to live subscribers). One loop per worker, like the
    /// lease keeper; a failed write is simply tried again with the next change.
    func publishProgress() async {
        while !Task.isCancelled {
            guard (try? await Task.sleep(for: configuration.progressInterval)) != nil else { return }
            for running in inFlight.withLockedValue({ $0.renewable }) {
                guard let progress = running.cancellation.progress, running.takeProgress(progress) else { continue }
                do {
                    try await jobs.reportProgress(running.lease, done: progress.done, total: progress.total)
                } catch {
                    running.logger.warning("progress not recorded", metadata: ["error": "\(String(reflecting: error))"])
                }
            }
        }
    }

    /// Every `heartbeatInterval`, renews the lease of every attempt in flight. An attempt whose lease is gone (the
    /// job was rescued or ended elsewhere, or it ran past `maxRuntime`) has its OCR cancelled and is not renewed
    /// again; a renewal that fails (the database is away) is tried again at the next beat.
    func keepLeases() async {
        while !Task.isCancelled {
            guard (try? await Task.sleep(for: configuration.heartbeatInterval)) != nil else { return }
            let renewable = inFlight.withLockedValue({ $0.renewable })
            // Cancel requests this worker's listener may have missed (its connection was down): one query a beat.
            if !renewable.isEmpty {
                do {
                    let cancelled = try await jobs.cancelRequested(renewable.map(\.lease.jobID))
                    for running in renewable where cancelled.contains(running.lease.jobID) { running.requestCancel() }
                } catch {
                    logger.warning("could not look for cancel requests", metadata: ["error": "\(String(reflecting: error))"])
                }
            }
            for running in renewable {
                do {
                    let held = try await jobs.renew(
                        running.lease, duration: configuration.leaseDuration, maxRuntime: configuration.maxRuntime, now: nil)
                    // An attempt that ended during this pass has left `inFlight`: its lease is gone, not lost.
                    if !held, inFlight.withLockedValue({ $0.leaseLost(running) }) {
                        metrics.leaseRenewalFailed()
                        running.logger.warning("lease lost: the job was rescued, ended elsewhere, or ran past its time limit")
                        running.cancellation.cancel()
                    }
                } catch {
                    metrics.leaseRenewalFailed()
                    running.logger.warning("heartbeat failed", metadata: ["error": "\(String(reflecting: error))"])
                }
            }
        }
    }

    /// Reads and recognises the document, leaving the results for the end to encode and stage (`facts.unstaged`);
    /// returns what should happen next. Where the time went goes into `facts.stages`.
    private func attempt(
        _ job: ClaimedJob, slot: EngineSlot?, mode: AttemptMode, running: RunningAttempt, facts: AttemptFacts, logger: Logger
    ) async -> Outcome {
        let cancellation = running.cancellation
        do {
            guard let type = job.documentType else {
                return .failed("unsupported document type \(job.contentType)")
            }
            guard let options = try? job.options() else {
                return .failed("the job's options could not be read")
            }
            facts.mode = options.mode.rawValue
            if case .assemble(let pages) = mode {
                return try await assemble(job, pages: pages, options: options, facts: facts)
            }
            guard let slot else { preconditionFailure("reading a document takes an engine slot") }
            var mark = ContinuousClock.now
            func lap(_ stage: String) {
                let now = ContinuousClock.now
                facts.stages.add(stage, now - mark)
                mark = now
            }
            // Object storage: the document is streamed to a scratch file and mapped from there, never held whole
            // in memory; the folder goes on every path (a killed worker's is swept by the next one's sweeper).
            // A local filesystem's document is read where it is: no folder to make (inodes are not free: P1).
            var scratch: URL?
            defer { if let scratch { try? FileManager.default.removeItem(at: scratch) } }
            var downloaded: Data?
            if storage.downloadsDocuments {
                let folder = try ScratchFolder.create(kind: "document")
                scratch = folder
                let local = folder.appendingPathComponent(type.storedFileName, isDirectory: false)
                if try await storage.downloadDocument(id: job.id, fileName: type.storedFileName, toFile: local.path) {
                    downloaded = try Self.mapDocument(local)
                }
            }
            let data: Data
            if let downloaded { data = downloaded } else { data = try await storage.readDocument(id: job.id, fileName: type.storedFileName) }
            lap("read")
            let document = OCRDocument(data: data, type: type)
            if let page = job.lease.page {
                return try await readPage(page, of: job, document: document, options: options, slot: slot, cancellation: cancellation, facts: facts)
            }
            // Only PDFs and TIFFs have several pages; their headers say how many (the limits checked).
            if let pages, type == .pdf || type == .tiff, let count = try await slot.pageCount(document), count >= configuration.pageTasks {
                lap("decode")
                facts.pages = count
                switch try await pages.split(job.lease, pages: count) {
                case .lost: return .leaseLost
                case .cancelled: return .cancelled
                case .split:
                    // The job's lease is its pages' now: the lease keeper must not renew it as this attempt's.
                    stopRenewing(running)
                    logger.info("split into page tasks", metadata: ["pages": "\(count)"])
                    return .split
                case .complete:
                    return try await assemble(job, pages: count, options: options, facts: facts)
                }
            }
            var result = try await slot.recognize(document, options: options, cancellation: cancellation)
            facts.stages.merge(result.stages)
            // What neither the engine nor its slot timed: the hop back from the slot's thread to this task
            // (EngineSlot timed the hop there as `slot`, and the engine's untimed work as `engine`).
            facts.stages.add("return", (ContinuousClock.now - mark) - .seconds(result.stages.total))
            result.attempt = job.lease.attempt
            facts.pageTimings = result.pageTimings
            if cancellation.progress != nil { facts.pages = result.pages.count }
            // Encoded and staged by the end, beside the slot's next job: the slot claims its next job at once, and
            // the encoding fills the core while the claim waits for the database (BENCHMARKS.md, P1). `stage` names
            // the files.
            facts.unstaged = UnstagedResults(result: result, pictures: true)
            return .finished([])
        } catch let error as OCRError {
            if error.kind == .cancelled { return Task.isShuttingDownGracefully ? .handBack : .leaseLost }
            return error.isTransient ? .retry(error.message) : .failed(error.message)
        } catch let error as StorageError {
            return await outcome(of: error, logger: logger)
        } catch {
            logger.error("unexpected error", metadata: ["error": "\(String(reflecting: error))"])
            return .retry("internal error while processing the document")
        }
    }

    /// Writes a finished attempt's result files to its stage (`JobStorage.stageResults`); on failure drops what
    /// was written and says what becomes of the attempt instead.
    func stage(_ files: [(name: String, contents: Data)], of job: ClaimedJob, logger: Logger) async -> Outcome {
        do {
            try await storage.stageResults(id: job.id, stage: job.lease.stage, files: files)
            return .finished(files.map(\.name))
        } catch {
            // `record` discards only the fixed result files of a failed attempt: drop the pages' too.
            await storage.discardResults(id: job.id, fileNames: files.map(\.name), stage: job.lease.stage)
            if let error = error as? StorageError { return await outcome(of: error, logger: logger) }
            logger.error("unexpected error while staging the results", metadata: ["error": "\(String(reflecting: error))"])
            return .retry("internal error while storing the results")
        }
    }

    /// What a storage error makes of an attempt.
    func outcome(of error: StorageError, logger: Logger) async -> Outcome {
        logger.error("storage error", metadata: ["error": "\(error)"])
        switch error.kind {
        case .full:
            // Whose fault? What this attempt staged is gone already (see `stage`), so look again: if storage has
            // room now, this job's own results did not fit, and retrying for free would loop forever (a counted
            // retry, then a failure at the attempt limit); if it is still full, the system is, and the attempt
            // is free.
            storageHealth.invalidate()
            if (try? await storageHealth.check()) != nil {
                return .retry("the results did not fit in the free storage: \(error.description)")
            }
            return .storageFull(error.description)
        case .unavailable: return .retry("storage error: \(error.description)")
        case .missing: return .failed(error.description)
        }
    }

    /// A downloaded document, mapped rather than read (pages come from the file, not the heap); a file that cannot
    /// be read is a transient storage error (the job is retried).
    static func mapDocument(_ url: URL) throws -> Data {
        do {
            return try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw StorageError(description: "could not read the downloaded document: \(error.localizedDescription)", kind: .unavailable)
        }
    }

    /// Writes the outcome to the database, retrying while it is unreachable: fencing makes a retry safe, and
    /// the heartbeat keeps the lease meanwhile. A refusal means the lease is gone: another attempt owns the job
    /// now, and this one's staged files are dropped. Gives up after ten leases' time (the rescuer takes over).
    @discardableResult
    private func record(_ outcome: Outcome, job: ClaimedJob, mode: String = "auto", pages: Int? = nil, logger: Logger) async -> Bool {
        let lease = job.lease
        let recorded = await retryingWhileUnreachable("the outcome", logger: logger) {
            switch outcome {
            case .finished(let files):
                try await ender.submit(EndRequest(lease, as: .finished, pages: pages, engineVersion: engineIdentity) { [storage, configuration] in
                    try await Self.commit(files, of: lease, to: storage, within: configuration.commitDeadline)
                })
                metrics.jobFinished(mode: mode)
            case .failed(let reason):
                try await ender.submit(EndRequest(lease, as: .failure, reason: reason))
                metrics.jobFailed(mode: mode)
            case .retry(let reason) where lease.attempt >= configuration.maxAttempts:
                try await ender.submit(EndRequest(lease, as: .failure, reason: "gave up after \(lease.attempt) attempts: \(reason)"))
                metrics.jobFailed(mode: mode)
            case .retry(let reason):
                let seconds = configuration.retryDelay(afterAttempt: lease.attempt)
                try await jobs.requeue(
                    lease, reason: "retrying in \(Int(seconds.rounded(.up))) s: \(reason)",
                    delay: .milliseconds(Int64(seconds * 1000)), countAttempt: true, now: nil)
                metrics.jobRequeued(reason: "retry")
            case .storageFull(let reason):
                try await jobs.requeue(
                    lease, reason: "waiting for storage: \(reason)",
                    delay: .milliseconds(Int64(configuration.retryBase * 1000)), countAttempt: false, now: nil)
                metrics.jobRequeued(reason: "storage")
            case .handBack:
                try await jobs.requeue(lease, reason: "worker shutdown", delay: .zero, countAttempt: false, now: nil)
                metrics.jobRequeued(reason: "shutdown")
            case .cancelled:
                try await ender.submit(EndRequest(lease, as: .failure, reason: JobStore.cancelledReason))
                metrics.jobFailed(mode: mode)
            case .leaseLost, .split:
                break
            }
        }
        // A split attempt staged nothing.
        guard outcome != .split else { return recorded }
        var staged = Self.resultFiles
        if case .finished(let files) = outcome { staged = files }
        await storage.discardResults(id: lease.jobID, fileNames: staged, stage: lease.stage)
        return recorded
    }
}

extension Worker {
    /// Runs `write` (recording `subject`, an attempt's outcome) until it succeeds, retrying with backoff while it
    /// fails (the database is unreachable): fencing makes a retry safe, and the heartbeat keeps the lease
    /// meanwhile. False when the lease is gone (`TransitionRefused`: another attempt owns the work now), or after
    /// ten leases' time, when the rescuer takes over.
    func retryingWhileUnreachable(_ subject: String, logger: Logger, _ write: () async throws -> Void) async -> Bool {
        var delay = Duration.milliseconds(200)
        let giveUp = ContinuousClock.now + configuration.leaseDuration * 10
        while true {
            do {
                try await write()
                return true
            } catch is TransitionRefused {
                logger.warning("the lease is gone; \(subject) of this attempt is dropped")
                return false
            } catch {
                guard ContinuousClock.now < giveUp, !Task.isCancelled else {
                    logger.error("could not record \(subject); the rescuer will take it back", metadata: ["error": "\(String(reflecting: error))"])
                    return false
                }
                logger.warning("could not record \(subject); retrying", metadata: ["error": "\(String(reflecting: error))"])
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
            }
        }
    }

    /// Puts an attempt's staged results in place, inside its end transaction, or throws a `StorageError`
    /// (`.unavailable`) once `limit` has passed: the transaction then rolls back, the lease row is free again
    /// (renewed by the heartbeat, or rescued once it expires), and `record` tries the end again, or gives up and
    /// leaves the job to the rescuer. Nothing is lost: the staged results stay until the attempt's discard, and a
    /// commit is idempotent.
    ///
    /// The copies still running at the deadline are cancelled and left to finish on their own (`withDeadline`):
    /// an object store's request ends at the cancellation (or its own timeout), long before another attempt can
    /// hold the job, since this attempt's lease outlives the rolled-back transaction.
    static func commit(_ files: [String], of lease: Lease, to storage: any JobStorage, within limit: Duration) async throws {
        do {
            try await withDeadline(limit, "committing the results") {
                try await storage.commitResults(id: lease.jobID, fileNames: files, stage: lease.stage)
            }
        } catch let error as DeadlineExceeded {
            throw StorageError(description: "\(error.description); the end is retried", kind: .unavailable)
        }
    }
}

/// What an attempt learnt, for metrics: the requested mode and each page's time. Used by one task only.
/// Written by the attempt, then by its end, never by both at once (the end starts after the attempt returned).
final class AttemptFacts: @unchecked Sendable {
    var mode = "auto"
    /// Where the attempt's time went: the engine's stages and the worker's own (read, encode, stage, end).
    var stages = StageTimes()
    var pageTimings: [PageTiming] = []
    /// Pages of the document, when the engine read them (not with the no-op engine).
    var pages: Int?
    /// The page count of a job this attempt split into page tasks.
    var split: Int?
    /// A finished attempt's results, for its end to encode and stage (`Worker.stage`).
    var unstaged: UnstagedResults?

    /// Takes the unstaged results (nil when there are none) and encodes them, timed as `encode`. The results are
    /// released here, before the files are staged: only the encoded files stay in memory.
    func encodeUnstaged() -> Result<[(name: String, contents: Data)], any Error>? {
        guard let results = unstaged else { return nil }
        unstaged = nil
        let started = ContinuousClock.now
        defer { stages.add("encode", ContinuousClock.now - started) }
        return Result { try results.files() }
    }
}

/// A finished attempt's results, not yet encoded: the end makes the files (`files()`) beside the slot's next job.
struct UnstagedResults: Sendable {
    let result: OCRResult
    /// Whether each page's preview and thumbnail go too (a read job's; an assembled job's pages wrote theirs).
    let pictures: Bool

    func files() throws -> [(name: String, contents: Data)] {
        // Compact: result.json is read by programs; indentation only made it larger and slower to encode and
        // write (`lector ocr --format json` still prints it indented for people).
        var files: [(name: String, contents: Data)] = [
            (ResultFormat.json.fileName, try JSONEncoder.lector().encode(result)),
            (ResultFormat.txt.fileName, Data(result.text.utf8)),
        ]
        // The engine renders hOCR and PDF only when the job's `formats` ask for them.
        if let hocr = result.renderings.hocr { files.append((ResultFormat.hocr.fileName, hocr)) }
        if let pdf = result.renderings.pdf { files.append((ResultFormat.pdf.fileName, pdf)) }
        // Each page's preview and thumbnail, for the web page (boxes scale onto them).
        if pictures {
            for (index, preview) in result.renderings.previews.enumerated() {
                guard let preview else { continue }
                files.append((ResultFiles.preview(page: index + 1), preview.image))
                files.append((ResultFiles.thumbnail(page: index + 1), preview.thumbnail))
            }
        }
        return files
    }
}

/// One attempt in flight: its lease, the switch that stops its OCR, and its logger.
final class RunningAttempt: Sendable {
    let lease: Lease
    let cancellation = OCRCancellation()
    let logger: Logger
    /// Whether the job's owner asked to cancel it.
    private let cancelRequested = NIOLockedValueBox(false)

    /// The owner cancelled the job: stop its OCR, and end it `FAILURE` "cancelled".
    func requestCancel() {
        let first = cancelRequested.withLockedValue { requested -> Bool in
            defer { requested = true }
            return !requested
        }
        if first { logger.info("cancel requested: stopping the OCR") }
        cancellation.cancel()
    }

    var isCancelRequested: Bool { cancelRequested.withLockedValue { $0 } }
    /// The progress last published.
    private let published = NIOLockedValueBox<(done: Int, total: Int)?>(nil)

    /// Whether `progress` is new (and marks it published).
    func takeProgress(_ progress: (done: Int, total: Int)) -> Bool {
        published.withLockedValue { last in
            if let last, last == progress { return false }
            last = progress
            return true
        }
    }

    init(lease: Lease, logger: Logger) {
        self.lease = lease
        self.logger = logger
    }
}

/// The attempts a worker runs now. Kept under one lock; every operation is a few dictionary steps.
struct InFlight {
    private var attempts: [ObjectIdentifier: (attempt: RunningAttempt, renew: Bool)] = [:]
    private var deadlinePassed = false

    /// Adds an attempt; false when the shutdown grace period has already ended (it must stop at once).
    mutating func add(_ attempt: RunningAttempt) -> Bool {
        attempts[ObjectIdentifier(attempt)] = (attempt, true)
        return !deadlinePassed
    }

    mutating func remove(_ attempt: RunningAttempt) {
        attempts[ObjectIdentifier(attempt)] = nil
    }

    /// The attempts of one job running here (one, normally).
    func attempts(of jobID: UUID) -> [RunningAttempt] {
        attempts.values.map(\.attempt).filter { $0.lease.jobID == jobID }
    }

    /// The attempts whose lease should be renewed.
    var renewable: [RunningAttempt] { attempts.values.filter(\.renew).map(\.attempt) }

    /// Stops renewing an attempt whose lease is gone; false when the attempt is no longer in flight.
    mutating func leaseLost(_ attempt: RunningAttempt) -> Bool {
        guard attempts[ObjectIdentifier(attempt)] != nil else { return false }
        attempts[ObjectIdentifier(attempt)]?.renew = false
        return true
    }

    /// Marks the end of the shutdown grace period; returns the attempts to stop.
    mutating func passDeadline() -> [RunningAttempt] {
        deadlinePassed = true
        return attempts.values.map(\.attempt)
    }
}
