import Foundation
import LectorCore
import LectorModel
import LectorOCR
import LectorWorker
import PostgresNIO
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import Testing

/// `ClaimBatcher` on the in-memory queue, with every `claimBatch` call recorded and the first one held until the
/// test lets it go: which slots share a transaction is then decided by the batcher alone, not by timing.
@Suite("Batched claims in a worker process")
struct ClaimBatcherTests {
    /// A `WorkQueue` that forwards to a `MemoryQueue`, records each `claimBatch` call's workers, and holds calls
    /// while `held` is true.
    final class SpyQueue: WorkQueue {
        let base: any WorkQueue
        let calls = NIOLockedValueBox<[[String]]>([])
        /// The size of each `endBatch` call.
        let endCalls = NIOLockedValueBox<[Int]>([])
        let held = NIOLockedValueBox(true)
        /// The 1-based number of the call that fails.
        let failCall = NIOLockedValueBox<Int?>(nil)

        init(base: any WorkQueue, held: Bool = true) {
            self.base = base
            self.held.withLockedValue { $0 = held }
        }

        func claimBatch(workers: [String], leaseDuration: Duration, strategy: ClaimStrategy, now: Date?) async throws -> [ClaimedJob] {
            let number = calls.withLockedValue { $0.append(workers); return $0.count }
            while held.withLockedValue({ $0 }) { try await Task.sleep(for: .milliseconds(5)) }
            if failCall.withLockedValue({ $0 }) == number { throw TestFailure("claim failed") }
            return try await base.claimBatch(workers: workers, leaseDuration: leaseDuration, strategy: strategy, now: now)
        }

        func announceEngine(_ identity: String) async throws { try await base.announceEngine(identity) }
        func claimNext(worker: String, leaseDuration: Duration, strategy: ClaimStrategy, now: Date?) async throws -> ClaimedJob? {
            Issue.record("the batcher claims through claimBatch only")
            return try await base.claimNext(worker: worker, leaseDuration: leaseDuration, strategy: strategy, now: now)
        }
        func renew(_ lease: Lease, duration: Duration, maxRuntime: Duration, now: Date?) async throws -> Bool {
            try await base.renew(lease, duration: duration, maxRuntime: maxRuntime, now: now)
        }
        func end(
            _ lease: Lease, as status: JobStatus, reason: String?, pages: Int?, engineVersion: String?,
            beforeCommit: (@Sendable () async throws -> Void)?
        ) async throws {
            try await base.end(lease, as: status, reason: reason, pages: pages, engineVersion: engineVersion, beforeCommit: beforeCommit)
        }
        func endBatch(_ requests: [EndRequest]) async -> [Result<Void, any Error>] {
            endCalls.withLockedValue { $0.append(requests.count) }
            return await base.endBatch(requests)
        }
        func requeue(_ lease: Lease, reason: String, delay: Duration, countAttempt: Bool, now: Date?) async throws {
            try await base.requeue(lease, reason: reason, delay: delay, countAttempt: countAttempt, now: now)
        }
        func reportProgress(_ lease: Lease, done: Int, total: Int) async throws -> Bool {
            try await base.reportProgress(lease, done: done, total: total)
        }
        func cancelRequested(_ ids: [UUID]) async throws -> Set<UUID> { try await base.cancelRequested(ids) }
        func rescueExpired(maxAttempts: Int, grace: Duration, now: Date?, limit: Int) async throws -> RescueReport {
            try await base.rescueExpired(maxAttempts: maxAttempts, grace: grace, now: now, limit: limit)
        }
        func purgeIdempotencyKeys(now: Date?) async throws -> Int { try await base.purgeIdempotencyKeys(now: now) }
        func queuedListener(logger: Logger, onQueued: @escaping @Sendable () -> Void) -> any Service {
            base.queuedListener(logger: logger, onQueued: onQueued)
        }
        func cancelListener(
            logger: Logger, onListening: @escaping @Sendable () -> Void, onCancel: @escaping @Sendable (UUID) -> Void
        ) -> any Service {
            base.cancelListener(logger: logger, onListening: onListening, onCancel: onCancel)
        }
    }

    static func queue(jobs: Int) async throws -> (SpyQueue, [UUID]) {
        let memory = MemoryQueue()
        var ids: [UUID] = []
        for _ in 0..<jobs {
            let job = QueueTests.makeJob(owner: 1)
            try await memory.create(job)
            ids.append(job.id)
        }
        return (SpyQueue(base: memory), ids)
    }

    /// Waits (bounded) until `batcher` has `count` slots waiting.
    static func untilWaiting(_ batcher: ClaimBatcher, _ count: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while batcher.waiting < count {
            guard ContinuousClock.now < deadline else { throw TestFailure("\(batcher.waiting) slots wait, not \(count)") }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    @Test("slots that ask while a claim is in flight share the next one; each gets its own job and lease")
    func followersShareTheNextClaim() async throws {
        let (spy, ids) = try await Self.queue(jobs: 10)
        let batcher = ClaimBatcher(queue: spy, leaseDuration: .seconds(60), strategy: .tableLock, maxBatch: 16)
        let claimed = try await withThrowingTaskGroup(of: (String, ClaimedJob?).self) { group in
            group.addTask { ("a", try await batcher.claim(worker: "a")) }
            // "a" leads and is held in its claim; b, c, d ask meanwhile.
            try await Self.untilCalls(spy, 1)
            for name in ["b", "c", "d"] { group.addTask { (name, try await batcher.claim(worker: name)) } }
            try await Self.untilWaiting(batcher, 3)
            spy.held.withLockedValue { $0 = false }
            var claimed: [String: ClaimedJob?] = [:]
            for try await (name, job) in group { claimed[name] = job }
            return claimed
        }
        // The order of b, c and d is the order their tasks ran in.
        #expect(spy.calls.withLockedValue { $0.map { $0.sorted() } } == [["a"], ["b", "c", "d"]])
        #expect(claimed.count == 4)
        for (name, job) in claimed { #expect(job?.lease.worker == name) }
        #expect(Set(claimed.values.compactMap { $0?.id }) == Set(ids.prefix(4)))
        #expect(batcher.waiting == 0)
        // A lone slot claims alone, at once, as before.
        #expect(try await batcher.claim(worker: "e")?.id == ids[4])
        #expect(spy.calls.withLockedValue { $0.last } == ["e"])
    }

    @Test("a batch takes at most maxBatch slots, the rest lead the next; slots beyond the queue get nil")
    func maxBatchAndEmptyQueue() async throws {
        let (spy, _) = try await Self.queue(jobs: 2)
        let batcher = ClaimBatcher(queue: spy, leaseDuration: .seconds(60), strategy: .tableLock, maxBatch: 2)
        let claimed = try await withThrowingTaskGroup(of: (String, ClaimedJob?).self) { group in
            group.addTask { ("a", try await batcher.claim(worker: "a")) }
            try await Self.untilCalls(spy, 1)
            for name in ["b", "c", "d"] { group.addTask { (name, try await batcher.claim(worker: name)) } }
            try await Self.untilWaiting(batcher, 3)
            spy.held.withLockedValue { $0 = false }
            var claimed: [String: ClaimedJob?] = [:]
            for try await (name, job) in group { claimed[name] = job }
            return claimed
        }
        let calls = spy.calls.withLockedValue { $0 }
        #expect(calls.first == ["a"])
        #expect(calls.dropFirst().allSatisfy { $0.count <= 2 })
        #expect(calls.flatMap { $0 }.sorted() == ["a", "b", "c", "d"])
        // Two jobs for four slots: two get one, two get nil.
        #expect(claimed.values.compactMap { $0 }.count == 2)
        #expect(claimed.values.filter { $0 == nil }.count == 2)
    }

    @Test("a failed claim fails every slot of its batch, and the next slot still leads")
    func failureReachesTheBatch() async throws {
        let (spy, ids) = try await Self.queue(jobs: 3)
        let batcher = ClaimBatcher(queue: spy, leaseDuration: .seconds(60), strategy: .tableLock, maxBatch: 16)
        spy.failCall.withLockedValue { $0 = 2 }
        let outcomes = try await withThrowingTaskGroup(of: (String, Bool).self) { group in
            group.addTask { ("a", (try? await batcher.claim(worker: "a")) != nil) }
            try await Self.untilCalls(spy, 1)
            for name in ["b", "c"] { group.addTask { (name, (try? await batcher.claim(worker: name)) != nil) } }
            try await Self.untilWaiting(batcher, 2)
            spy.held.withLockedValue { $0 = false }
            var outcomes: [String: Bool] = [:]
            for try await (name, ok) in group { outcomes[name] = ok }
            return outcomes
        }
        // "a" claimed; the batch of b and c failed as one.
        #expect(spy.calls.withLockedValue { $0.map { $0.sorted() } } == [["a"], ["b", "c"]])
        #expect(outcomes == ["a": true, "b": false, "c": false])
        #expect(try await batcher.claim(worker: "d")?.id == ids[1])
        #expect(batcher.waiting == 0)
    }

    @Test("a worker with 16 slots and a backlog: every job finished once; slots idle together claimed, and ends ready together were written, in one transaction")
    func workerClaimsInBatches() async throws {
        try await TestHarness.run { harness in
            let owner = try await QueueTests.owner(harness)
            var ids: [UUID] = []
            for _ in 0..<48 { ids.append(try await ReliabilityTests.submit(harness, owner: owner)) }
            // The real worker on the real store, through a spy that counts each call's size.
            let spy = SpyQueue(base: harness.jobs, held: false)
            var configuration = WorkerConfiguration(settings: harness.settings, workerID: "batch")
            configuration.concurrency = 16
            configuration.exitWhenIdle = true
            let worker = Worker(
                jobs: spy, storage: harness.storage, engines: NoopEngineFactory(), configuration: configuration,
                logger: TestDatabase.logger)
            try await withDeadline(.seconds(120), "the worker") { try await worker.run() }
            for id in ids {
                #expect(try await harness.jobs.history(of: id).map(\.status) == [.queued, .inProgress, .finished])
            }
            // Every job claimed once, by one slot; some calls claimed for several slots, none for more than 16.
            let claims = spy.calls.withLockedValue { $0 }
            #expect(claims.allSatisfy { Set($0).count == $0.count && $0.count <= 16 })
            #expect(claims.contains { $0.count > 1 }, "no two slots ever shared a claim: \(claims.map(\.count))")
            // The ends: 48 in all, some of them several to a transaction.
            let ends = spy.endCalls.withLockedValue { $0 }
            #expect(ends.reduce(0, +) == 48)
            #expect(ends.contains { $0 > 1 }, "no two ends ever shared a transaction: \(ends)")
            // And in the database: the claims that shared a call share a transaction (the rows' xmin).
            let rows = try await harness.client.query(
                """
                SELECT count(*)::int FROM job_transitions
                WHERE status = 'IN_PROGRESS' GROUP BY xmin::text
                """, logger: TestDatabase.logger)
            var groups: [Int] = []
            for try await count in rows.decode(Int.self) { groups.append(count) }
            #expect(groups.reduce(0, +) == 48)
            #expect(groups.count < 48)
        }
    }

    @Test("with a batch of 1 nothing waits: concurrent claims each run their own call at once")
    func batchOfOneDoesNotSerialise() async throws {
        let (spy, _) = try await Self.queue(jobs: 3)
        let batcher = ClaimBatcher(queue: spy, leaseDuration: .seconds(60), strategy: .tableLock, maxBatch: 1)
        try await withThrowingTaskGroup(of: ClaimedJob?.self) { group in
            for name in ["a", "b", "c"] { group.addTask { try await batcher.claim(worker: name) } }
            // All three calls are in flight at once, none waiting for another's answer.
            try await Self.untilCalls(spy, 3)
            #expect(batcher.waiting == 0)
            spy.held.withLockedValue { $0 = false }
            var claimed = 0
            for try await job in group where job != nil { claimed += 1 }
            #expect(claimed == 3)
        }
        #expect(spy.calls.withLockedValue { $0.map(\.count) } == [1, 1, 1])
    }

    @Test("ends in a batch: one the database refuses is rolled back alone (end_jobs' subtransactions); a NUL in a reason is stored without it")
    func endJobsIsolatesAFailure() async throws {
        try await TestHarness.run { harness in
            let owner = try await QueueTests.owner(harness)
            var ids: [UUID] = []
            for index in 0..<3 {
                let job = QueueTests.makeJob(owner: owner, index: index)
                try await harness.jobs.create(job)
                ids.append(job.id)
            }
            let claimed = try await harness.jobs.claimBatch(workers: ["e/0", "e/1", "e/2"], leaseDuration: .seconds(60))
            #expect(claimed.count == 3)
            // The middle end asks end_job for a status it refuses (it raises): that end alone is rolled back.
            func entry(_ job: ClaimedJob, _ status: String) -> String {
                "{\"job\": \"\(job.id.uuidString.lowercased())\", \"worker\": \"\(job.lease.worker)\", \"attempt\": \(job.lease.attempt), \"status\": \"\(status)\", \"pages\": 1}"
            }
            let ends = "[" + [entry(claimed[0], "FINISHED"), entry(claimed[1], "QUEUED"), entry(claimed[2], "FAILURE")].joined(separator: ",") + "]"
            let rows = try await harness.client.query(
                "SELECT job_id, ended, failure FROM end_jobs(\(ends)::jsonb)", logger: TestDatabase.logger)
            var answers: [UUID: (Bool, String?)] = [:]
            for try await (id, ended, failure) in rows.decode((UUID, Bool, String?).self) { answers[id] = (ended, failure) }
            #expect(answers[claimed[0].id]?.0 == true && answers[claimed[0].id]?.1 == nil)
            #expect(answers[claimed[1].id]?.0 == false)
            #expect(answers[claimed[1].id]?.1?.contains("end_job takes FINISHED or FAILURE") == true)
            #expect(answers[claimed[2].id]?.0 == true)
            #expect(try await harness.jobs.state(of: claimed[0].id, ownerID: owner)?.status == .finished)
            #expect(try await harness.jobs.state(of: claimed[1].id, ownerID: owner)?.status == .inProgress)
            #expect(try await harness.jobs.state(of: claimed[2].id, ownerID: owner)?.status == .failure)
            // Its own page count was rolled back with it; the others' were written.
            #expect(try await harness.jobs.job(claimed[1].id, ownerID: owner)?.0.pagesDone == nil)
            #expect(try await harness.jobs.job(claimed[0].id, ownerID: owner)?.0.pagesDone == 1)
            // Through endBatch, with a reason quoting a NUL byte (PostgreSQL's text cannot hold one).
            let results = await harness.jobs.endBatch([
                EndRequest(claimed[1].lease, as: .failure, reason: "bad \u{0}byte"),
            ])
            #expect((try? results[0].get()) != nil)
            #expect(try await harness.jobs.state(of: claimed[1].id, ownerID: owner) == JobState(status: .failure, reason: "bad byte"))
        }
    }

    static func untilCalls(_ spy: SpyQueue, _ count: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while spy.calls.withLockedValue({ $0.count }) < count {
            guard ContinuousClock.now < deadline else { throw TestFailure("claimBatch was not called") }
            try await Task.sleep(for: .milliseconds(2))
        }
    }
}
