import Foundation
import LectorCore
import LectorModel
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import ServiceLifecycle
import Testing

/// The queue's contract, written once against `WorkQueue` and `JobQueue` and run against both implementations:
/// the PostgreSQL store and its in-memory twin. A rule the twin gets wrong fails here next to the database's
/// answer.
@Suite("The queue's contract, in PostgreSQL and in memory")
struct QueueConformanceTests {
    enum Kind: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case postgres, memory
        var testDescription: String { rawValue }
    }

    typealias Queue = any WorkQueue & JobQueue

    /// A queue of `kind` (a fresh database, or a new `MemoryQueue`) and a maker of owners.
    static func with(_ kind: Kind, _ body: @Sendable (Queue, @Sendable () async throws -> Int64) async throws -> Void) async throws {
        switch kind {
        case .postgres:
            try await TestDatabase.withFreshDatabase { client, _ in
                let store = JobStore(client: client, logger: TestDatabase.logger)
                try await body(store) {
                    let rows = try await client.query("INSERT INTO users (name) VALUES (\("owner-\(UUID())")) RETURNING id")
                    for try await id in rows.decode(Int64.self) { return id }
                    throw TestFailure("no user was created")
                }
            }
        case .memory:
            let owners = NIOLockedValueBox<Int64>(0)
            try await body(MemoryQueue()) { owners.withLockedValue { $0 += 1; return $0 } }
        }
    }

    /// A fixed time well after now: tests move it instead of sleeping.
    static let t0 = Date(timeIntervalSince1970: 1_900_000_000)

    static func job(_ owner: Int64, priority: Int = 0, dependsOn: [UUID] = []) -> NewJob {
        var job = QueueTests.makeJob(owner: owner)
        job.priority = priority
        job.dependsOn = dependsOn
        return job
    }

    @discardableResult
    static func queued(_ queue: Queue, _ owner: Int64, count: Int = 1) async throws -> [UUID] {
        var ids: [UUID] = []
        for _ in 0..<count {
            let job = Self.job(owner)
            try await queue.create(job)
            ids.append(job.id)
        }
        return ids
    }

    @Test("create, claim, end FINISHED: the history, the state, the record and the claim's fields", arguments: Kind.allCases)
    func createClaimEnd(kind: Kind) async throws {
        try await Self.with(kind) { queue, newOwner in
            let owner = try await newOwner(), stranger = try await newOwner()
            let id = try #require(try await Self.queued(queue, owner).first)
            #expect(try await queue.state(of: id, ownerID: owner) == JobState(status: .queued, reason: nil))
            #expect(try await queue.state(of: id, ownerID: stranger) == nil)
            #expect(try await queue.job(id, ownerID: stranger) == nil)

            let claimed = try #require(try await queue.claimNext(worker: "w", leaseDuration: .seconds(60)))
            #expect(claimed.id == id)
            #expect(claimed.lease.attempt == 1)
            #expect(claimed.lease.worker == "w")
            #expect(claimed.contentType == "image/png")
            let options = try JSONSerialization.jsonObject(with: Data(claimed.optionsJSON.utf8)) as? [String: String]
            #expect(options == ["lang": "eng"])
            #expect(try await queue.state(of: id, ownerID: owner) == JobState(status: .inProgress, reason: nil))
            #expect(try await queue.claimNext(worker: "w", leaseDuration: .seconds(60)) == nil)

            let committed = NIOLockedBool()
            try await queue.end(claimed.lease, as: .finished, reason: nil, pages: 3, engineVersion: "engine-1") { committed.set() }
            #expect(committed.value)
            let (record, history) = try #require(try await queue.job(id, ownerID: owner))
            #expect(record.status == .finished)
            #expect(record.pagesDone == 3 && record.pagesTotal == 3)
            #expect(history.map(\.status) == [.queued, .inProgress, .finished])
            #expect(history.map(\.worker) == [nil, "w", "w"])
            #expect(try await queue.history(of: id) == history)
            #expect(try await queue.countsByStatus() == [.finished: 1])
            // An ended job is ended: a second end of the same attempt is refused.
            await #expect(throws: TransitionRefused.self) { try await queue.end(claimed.lease, as: .failure, reason: "again") }
            #expect(try await queue.history(of: id).count == 3)
        }
    }

    @Test("the claim takes one owner's jobs oldest first", arguments: Kind.allCases)
    func oldestFirst(kind: Kind) async throws {
        try await Self.with(kind) { queue, newOwner in
            let ids = try await Self.queued(queue, try await newOwner(), count: 5)
            var claimed: [UUID] = []
            while let job = try await queue.claimNext(worker: "w", leaseDuration: .seconds(60)) { claimed.append(job.id) }
            #expect(claimed == ids)
        }
    }

    @Test("owners take turns; within an owner the higher priority goes first", arguments: Kind.allCases)
    func turnsAndPriority(kind: Kind) async throws {
        try await Self.with(kind) { queue, newOwner in
            let heavy = try await newOwner(), light = try await newOwner()
            let first = Self.job(heavy), second = Self.job(heavy), urgent = Self.job(heavy, priority: 5), other = Self.job(light)
            for job in [first, second, urgent, other] { try await queue.create(job) }
            var claimed: [UUID] = []
            while let job = try await queue.claimNext(worker: "w", leaseDuration: .seconds(60)) { claimed.append(job.id) }
            #expect(claimed == [urgent.id, other.id, first.id, second.id])
        }
    }

    @Test("a batch claim: one job per worker, by the single claim's rules and order, each with its own lease; fewer when the queue runs short", arguments: Kind.allCases)
    func batchClaim(kind: Kind) async throws {
        try await Self.with(kind) { queue, newOwner in
            let heavy = try await newOwner(), light = try await newOwner()
            let first = Self.job(heavy), second = Self.job(heavy), urgent = Self.job(heavy, priority: 5), other = Self.job(light)
            for job in [first, second, urgent, other] { try await queue.create(job) }
            // The order one claimer meets them in (turnsAndPriority), in one call.
            let batch = try await queue.claimBatch(
                workers: ["w/0", "w/1", "w/2"], leaseDuration: .seconds(60), strategy: .tableLock, now: nil)
            #expect(batch.map(\.id) == [urgent.id, other.id, first.id])
            #expect(batch.map(\.lease.worker) == ["w/0", "w/1", "w/2"])
            #expect(batch.allSatisfy { $0.lease.attempt == 1 && $0.contentType == "image/png" })
            // Each lease is its own: one slot's end does not touch another's job.
            try await queue.end(batch[1].lease, as: .finished)
            #expect(try await queue.state(of: other.id, ownerID: light)?.status == .finished)
            #expect(try await queue.state(of: first.id, ownerID: heavy)?.status == .inProgress)
            await #expect(throws: TransitionRefused.self) {
                try await queue.end(Lease(jobID: first.id, worker: "w/1", attempt: 1), as: .finished)
            }
            // One job left for four workers: the first worker gets it, then the queue is empty.
            let rest = try await queue.claimBatch(
                workers: ["v/0", "v/1", "v/2", "v/3"], leaseDuration: .seconds(60), strategy: .tableLock, now: nil)
            #expect(rest.map(\.id) == [second.id])
            #expect(rest.map(\.lease.worker) == ["v/0"])
            #expect(try await queue.claimBatch(workers: ["v/0", "v/1"], leaseDuration: .seconds(60), strategy: .tableLock, now: nil).isEmpty)
            #expect(try await queue.claimBatch(workers: [], leaseDuration: .seconds(60), strategy: .tableLock, now: nil).isEmpty)
        }
    }

    @Test("a batch of ends: each as end would do it; a lost lease or a throwing commit fails alone, the others end", arguments: Kind.allCases)
    func batchEnd(kind: Kind) async throws {
        try await Self.with(kind) { queue, newOwner in
            let owner = try await newOwner()
            let ids = try await Self.queued(queue, owner, count: 4)
            let claimed = try await queue.claimBatch(
                workers: ["s/0", "s/1", "s/2", "s/3"], leaseDuration: .seconds(60), strategy: .tableLock, now: nil)
            #expect(claimed.map(\.id) == ids)
            let committed = NIOLockedValueBox<[Int]>([])
            let stale = Lease(jobID: claimed[1].id, worker: "s/1", attempt: 2)
            let results = await queue.endBatch([
                EndRequest(claimed[0].lease, as: .finished, pages: 2) { committed.withLockedValue { $0.append(0) } },
                EndRequest(stale, as: .finished) { committed.withLockedValue { $0.append(1) } },
                EndRequest(claimed[2].lease, as: .finished) { throw TestFailure("the store is down") },
                EndRequest(claimed[3].lease, as: .failure, reason: "unreadable"),
            ])
            #expect(results.count == 4)
            #expect((try? results[0].get()) != nil)
            #expect(throws: TransitionRefused.self) { try results[1].get() }
            #expect(throws: TestFailure.self) { try results[2].get() }
            #expect((try? results[3].get()) != nil)
            // The stale attempt's closure never ran; the held ones' did.
            #expect(committed.withLockedValue { $0 } == [0])
            #expect(try await queue.history(of: ids[0]).map(\.status) == [.queued, .inProgress, .finished])
            #expect(try await queue.job(ids[0], ownerID: owner)?.0.pagesDone == 2)
            #expect(try await queue.state(of: ids[1], ownerID: owner)?.status == .inProgress)
            #expect(try await queue.state(of: ids[2], ownerID: owner)?.status == .inProgress)
            #expect(try await queue.state(of: ids[3], ownerID: owner) == JobState(status: .failure, reason: "unreadable"))
            // The jobs that did not end are still their attempts' to end.
            try await queue.end(claimed[1].lease, as: .finished)
            try await queue.end(claimed[2].lease, as: .finished)
            #expect(try await queue.countsByStatus() == [.finished: 3, .failure: 1])
        }
    }

    @Test("concurrent batch claimers and single claimers: each job is claimed exactly once", arguments: Kind.allCases)
    func batchClaimIsExclusive(kind: Kind) async throws {
        try await Self.with(kind) { queue, newOwner in
            var ids: Set<UUID> = []
            for _ in 0..<3 { ids.formUnion(try await Self.queued(queue, try await newOwner(), count: 40)) }
            let claims = try await withThrowingTaskGroup(of: [UUID].self) { group in
                for claimer in 0..<4 {
                    group.addTask {
                        var mine: [UUID] = []
                        while true {
                            let workers = (0..<(claimer % 2 == 0 ? 7 : 1)).map { "c\(claimer)/\($0)" }
                            let batch = try await queue.claimBatch(
                                workers: workers, leaseDuration: .seconds(60), strategy: .tableLock, now: nil)
                            if batch.isEmpty { break }
                            mine += batch.map(\.id)
                        }
                        return mine
                    }
                }
                var all: [UUID] = []
                for try await claimed in group { all += claimed }
                return all
            }
            #expect(claims.count == 120)
            #expect(Set(claims) == ids)
            #expect(try await queue.countsByStatus() == [.inProgress: 120])
        }
    }

    @Test("concurrent claimers: each job is claimed exactly once", arguments: Kind.allCases)
    func claimIsExclusive(kind: Kind) async throws {
        try await Self.with(kind) { queue, newOwner in
            var ids: Set<UUID> = []
            for _ in 0..<2 { ids.formUnion(try await Self.queued(queue, try await newOwner(), count: 30)) }
            let claims = try await withThrowingTaskGroup(of: [UUID].self) { group in
                for claimer in 0..<4 {
                    group.addTask {
                        var mine: [UUID] = []
                        while let job = try await queue.claimNext(worker: "claimer-\(claimer)", leaseDuration: .seconds(60)) {
                            mine.append(job.id)
                        }
                        return mine
                    }
                }
                var all: [UUID] = []
                for try await claimed in group { all += claimed }
                return all
            }
            #expect(claims.count == 60)
            #expect(Set(claims) == ids)
            #expect(try await queue.countsByStatus() == [.inProgress: 60])
        }
    }

    @Test("after a rescue the stale attempt can neither renew, report, end nor requeue; its commit never runs", arguments: Kind.allCases)
    func staleAttemptFenced(kind: Kind) async throws {
        try await Self.with(kind) { queue, newOwner in
            let owner = try await newOwner()
            let id = try #require(try await Self.queued(queue, owner).first)
            let stale = try #require(try await queue.claimNext(worker: "a", leaseDuration: .seconds(60), strategy: .tableLock, now: Self.t0))
            #expect(try await queue.rescueExpired(maxAttempts: 3, grace: .zero, now: Self.t0 + 59, limit: 500) == RescueReport())
            #expect(try await queue.rescueExpired(maxAttempts: 3, grace: .zero, now: Self.t0 + 61, limit: 500) == RescueReport(requeued: 1))
            // The same worker name: the attempt number alone tells the two apart.
            let fresh = try #require(try await queue.claimNext(worker: "a", leaseDuration: .seconds(60), strategy: .tableLock, now: Self.t0 + 62))
            #expect(fresh.id == id && fresh.lease.attempt == 2)

            #expect(try await queue.renew(stale.lease, duration: .seconds(60), maxRuntime: .seconds(3600), now: Self.t0 + 62) == false)
            #expect(try await queue.reportProgress(stale.lease, done: 1, total: 2) == false)
            let committed = NIOLockedBool()
            await #expect(throws: TransitionRefused.self) {
                try await queue.end(stale.lease, as: .finished, reason: nil, pages: nil, engineVersion: nil) { committed.set() }
            }
            #expect(committed.value == false)
            await #expect(throws: TransitionRefused.self) { try await queue.end(stale.lease, as: .failure, reason: "stale") }
            await #expect(throws: TransitionRefused.self) { try await queue.requeue(stale.lease, reason: "stale") }
            let history = try await queue.history(of: id)
            #expect(history.map(\.status) == [.queued, .inProgress, .queued, .inProgress])
            #expect(history[2].reason == "worker lost: its lease expired during attempt 1")

            // The new attempt holds the job.
            #expect(try await queue.renew(fresh.lease, duration: .seconds(60), maxRuntime: .seconds(3600), now: Self.t0 + 62))
            #expect(try await queue.reportProgress(fresh.lease, done: 1, total: 2))
            #expect(try await queue.job(id, ownerID: owner)?.0.pagesDone == 1)
            try await queue.end(fresh.lease, as: .finished)
            #expect(try await queue.history(of: id).last?.status == .finished)
        }
    }

    @Test("a renewal extends the lease; past the attempt's runtime limit it is refused", arguments: Kind.allCases)
    func renewal(kind: Kind) async throws {
        try await Self.with(kind) { queue, newOwner in
            try await Self.queued(queue, try await newOwner())
            let job = try #require(try await queue.claimNext(worker: "w", leaseDuration: .seconds(10), strategy: .tableLock, now: Self.t0))
            #expect(try await queue.renew(job.lease, duration: .seconds(10), maxRuntime: .seconds(5), now: Self.t0 + 8) == false)
            #expect(try await queue.renew(job.lease, duration: .seconds(10), maxRuntime: .seconds(3600), now: Self.t0 + 8))
            #expect(try await queue.rescueExpired(maxAttempts: 3, grace: .zero, now: Self.t0 + 17, limit: 500) == RescueReport())
            // One heartbeat of grace, then the lease counts as lost.
            #expect(try await queue.rescueExpired(maxAttempts: 3, grace: .seconds(5), now: Self.t0 + 22, limit: 500) == RescueReport())
            #expect(try await queue.rescueExpired(maxAttempts: 3, grace: .seconds(5), now: Self.t0 + 24, limit: 500) == RescueReport(requeued: 1))
        }
    }

    @Test("a requeued job is not claimable before its retry time; a hand-back returns the attempt", arguments: Kind.allCases)
    func requeueBackoff(kind: Kind) async throws {
        try await Self.with(kind) { queue, newOwner in
            let owner = try await newOwner()
            let id = try #require(try await Self.queued(queue, owner).first)
            let first = try #require(try await queue.claimNext(worker: "w", leaseDuration: .seconds(60), strategy: .tableLock, now: Self.t0))
            try await queue.requeue(first.lease, reason: "retrying in 30 s: busy", delay: .seconds(30), countAttempt: true, now: Self.t0)
            #expect(try await queue.state(of: id, ownerID: owner) == JobState(status: .queued, reason: "retrying in 30 s: busy"))
            #expect(try await queue.claimNext(worker: "w", leaseDuration: .seconds(60), strategy: .tableLock, now: Self.t0 + 29) == nil)
            let second = try #require(try await queue.claimNext(worker: "w", leaseDuration: .seconds(60), strategy: .tableLock, now: Self.t0 + 31))
            #expect(second.id == id && second.lease.attempt == 2)
            try await queue.requeue(second.lease, reason: "worker shutdown", delay: .zero, countAttempt: false, now: Self.t0 + 31)
            let third = try #require(try await queue.claimNext(worker: "w", leaseDuration: .seconds(60), strategy: .tableLock, now: Self.t0 + 32))
            #expect(third.id == id && third.lease.attempt == 2)
        }
    }

    @Test("a job that keeps losing its worker fails at the attempt limit", arguments: Kind.allCases)
    func rescueGivesUp(kind: Kind) async throws {
        try await Self.with(kind) { queue, newOwner in
            let owner = try await newOwner()
            let id = try #require(try await Self.queued(queue, owner).first)
            _ = try #require(try await queue.claimNext(worker: "w", leaseDuration: .seconds(10), strategy: .tableLock, now: Self.t0))
            #expect(try await queue.rescueExpired(maxAttempts: 2, grace: .zero, now: Self.t0 + 11, limit: 500) == RescueReport(requeued: 1))
            let again = try #require(try await queue.claimNext(worker: "w", leaseDuration: .seconds(10), strategy: .tableLock, now: Self.t0 + 12))
            #expect(again.lease.attempt == 2)
            #expect(try await queue.rescueExpired(maxAttempts: 2, grace: .zero, now: Self.t0 + 21, limit: 500) == RescueReport())
            #expect(try await queue.rescueExpired(maxAttempts: 2, grace: .zero, now: Self.t0 + 23, limit: 500) == RescueReport(failed: 1))
            #expect(try await queue.state(of: id, ownerID: owner) == JobState(status: .failure, reason: "worker lost: gave up after 2 attempts"))
            #expect(try await queue.claimNext(worker: "w", leaseDuration: .seconds(10), strategy: .tableLock, now: Self.t0 + 24) == nil)
        }
    }

    @Test("a commit that throws records nothing: the job stays IN_PROGRESS with its lease", arguments: Kind.allCases)
    func commitFailure(kind: Kind) async throws {
        struct CommitFailed: Error {}
        try await Self.with(kind) { queue, newOwner in
            let owner = try await newOwner()
            let id = try #require(try await Self.queued(queue, owner).first)
            let job = try #require(try await queue.claimNext(worker: "w", leaseDuration: .seconds(60)))
            await #expect(throws: CommitFailed.self) {
                try await queue.end(job.lease, as: .finished, reason: nil, pages: 7, engineVersion: nil) { throw CommitFailed() }
            }
            let (record, history) = try #require(try await queue.job(id, ownerID: owner))
            #expect(record.status == .inProgress)
            #expect(record.pagesDone == nil)
            #expect(history.map(\.status) == [.queued, .inProgress])
            #expect(try await queue.renew(job.lease, duration: .seconds(60)))
            try await queue.end(job.lease, as: .finished)
            #expect(try await queue.state(of: id, ownerID: owner)?.status == .finished)
        }
    }

    @Test("while an end commits, its lease is held: a rescue skips it and a renewal finds it held", arguments: Kind.allCases)
    func endHoldsTheLease(kind: Kind) async throws {
        try await Self.with(kind) { queue, newOwner in
            let owner = try await newOwner()
            let id = try #require(try await Self.queued(queue, owner).first)
            let job = try #require(try await queue.claimNext(worker: "w", leaseDuration: .seconds(10), strategy: .tableLock, now: Self.t0))
            let seen = NIOLockedValueBox<(RescueReport, Bool)?>(nil)
            try await queue.end(job.lease, as: .finished, reason: nil, pages: nil, engineVersion: nil) {
                let report = try await queue.rescueExpired(maxAttempts: 3, grace: .zero, now: Self.t0 + 3600, limit: 500)
                let held = try await queue.renew(job.lease, duration: .seconds(10), maxRuntime: .seconds(86_400), now: Self.t0 + 5)
                seen.withLockedValue { $0 = (report, held) }
            }
            let (report, held) = try #require(seen.withLockedValue { $0 })
            #expect(report == RescueReport())
            #expect(held)
            #expect(try await queue.history(of: id).map(\.status) == [.queued, .inProgress, .finished])
        }
    }

    @Test("cancel: a queued job ends FAILURE cancelled; an ended one is left alone; someone else's is not found", arguments: Kind.allCases)
    func cancelQueued(kind: Kind) async throws {
        try await Self.with(kind) { queue, newOwner in
            let owner = try await newOwner(), stranger = try await newOwner()
            let id = try #require(try await Self.queued(queue, owner).first)
            #expect(try await queue.cancel(id, ownerID: stranger) == nil)
            #expect(try await queue.cancel(UUID(), ownerID: owner) == nil)
            #expect(try await queue.cancel(id, ownerID: owner) == .cancelled)
            #expect(try await queue.state(of: id, ownerID: owner) == JobState(status: .failure, reason: JobStore.cancelledReason))
            #expect(try await queue.claimNext(worker: "w", leaseDuration: .seconds(60)) == nil)
            #expect(try await queue.cancel(id, ownerID: owner) == .ended)
            #expect(try await queue.history(of: id).map(\.status) == [.queued, .failure])
        }
    }

    @Test("cancel of a running job: requested, announced, reported, and its requeue ends it cancelled", arguments: Kind.allCases)
    func cancelRunning(kind: Kind) async throws {
        try await Self.with(kind) { queue, newOwner in
            let owner = try await newOwner()
            let ids = try await Self.queued(queue, owner, count: 2)
            let listening = NIOLockedBool()
            let announced = NIOLockedValueBox<[UUID]>([])
            let listener = queue.cancelListener(
                logger: TestDatabase.logger, onListening: { listening.set() },
                onCancel: { id in announced.withLockedValue { $0.append(id) } })
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await listener.run() }
                defer { group.cancelAll() }
                try await Self.eventually { listening.value }
                let job = try #require(try await queue.claimNext(worker: "w", leaseDuration: .seconds(60)))
                #expect(job.id == ids[0])
                #expect(try await queue.cancelRequested(ids) == [])
                #expect(try await queue.cancel(job.id, ownerID: owner) == .requested)
                try await Self.eventually { !announced.withLockedValue { $0 }.isEmpty }
                #expect(announced.withLockedValue { $0 } == [job.id])
                #expect(try await queue.cancelRequested(ids) == [job.id])
                #expect(try await queue.state(of: job.id, ownerID: owner)?.status == .inProgress)
                try await queue.requeue(job.lease, reason: "retrying in 1 s: engine failure")
                #expect(try await queue.state(of: job.id, ownerID: owner) == JobState(status: .failure, reason: JobStore.cancelledReason))
                #expect(try await queue.cancelRequested(ids) == [])
            }
        }
    }

    @Test("the queued listener calls back when it starts and when a job is queued", arguments: Kind.allCases)
    func queuedNotification(kind: Kind) async throws {
        try await Self.with(kind) { queue, newOwner in
            let owner = try await newOwner()
            let calls = NIOLockedValueBox(0)
            let listener = queue.queuedListener(logger: TestDatabase.logger) { calls.withLockedValue { $0 += 1 } }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await listener.run() }
                defer { group.cancelAll() }
                try await Self.eventually { calls.withLockedValue { $0 } >= 1 }
                calls.withLockedValue { $0 = 0 }
                try await Self.queued(queue, owner)
                try await Self.eventually { calls.withLockedValue { $0 } >= 1 }
            }
        }
    }

    @Test("an idempotency key: the same key is refused while live and points to the first job; purged after 24 hours", arguments: Kind.allCases)
    func idempotencyKey(kind: Kind) async throws {
        try await Self.with(kind) { queue, newOwner in
            let owner = try await newOwner(), other = try await newOwner()
            let fingerprint = [UInt8](repeating: 1, count: 32), different = [UInt8](repeating: 2, count: 32)
            let first = Self.job(owner), second = Self.job(owner)
            try await queue.create(first, idempotencyKey: ("key-1", fingerprint))
            await #expect(throws: IdempotencyKeyTaken.self) { try await queue.create(second, idempotencyKey: ("key-1", fingerprint)) }
            #expect(try await queue.job(second.id, ownerID: owner) == nil)
            let same = try #require(try await queue.idempotentJob(key: "key-1", ownerID: owner, fingerprint: fingerprint))
            #expect(same.id == first.id && same.status == .queued && same.sameDocument)
            #expect(try await queue.idempotentJob(key: "key-1", ownerID: owner, fingerprint: different)?.sameDocument == false)
            #expect(try await queue.idempotentJob(key: "key-2", ownerID: owner, fingerprint: fingerprint) == nil)
            // Keys are per owner.
            try await queue.create(Self.job(other), idempotencyKey: ("key-1", different))
            #expect(try await queue.purgeIdempotencyKeys(now: Date()) == 0)
            #expect(try await queue.purgeIdempotencyKeys(now: Date() + 25 * 3600) == 2)
            #expect(try await queue.idempotentJob(key: "key-1", ownerID: owner, fingerprint: fingerprint) == nil)
            try await queue.create(second, idempotencyKey: ("key-1", fingerprint))
            #expect(try await queue.idempotentJob(key: "key-1", ownerID: owner, fingerprint: fingerprint)?.id == second.id)
        }
    }

    @Test("dependencies: a job waits for its dependency to finish, and fails with one that fails", arguments: Kind.allCases)
    func dependencies(kind: Kind) async throws {
        try await Self.with(kind) { queue, newOwner in
            let owner = try await newOwner(), stranger = try await newOwner()
            let base = Self.job(owner)
            try await queue.create(base)
            let waiting = Self.job(owner, dependsOn: [base.id])
            try await queue.create(waiting)
            await #expect(throws: UnknownDependency.self) { try await queue.create(Self.job(stranger, dependsOn: [base.id])) }
            #expect(try await queue.job(waiting.id, ownerID: owner)?.0.waitingFor == [base.id])
            let claimed = try #require(try await queue.claimNext(worker: "w", leaseDuration: .seconds(60)))
            #expect(claimed.id == base.id)
            #expect(try await queue.claimNext(worker: "w", leaseDuration: .seconds(60)) == nil)
            try await queue.end(claimed.lease, as: .finished)
            #expect(try await queue.job(waiting.id, ownerID: owner)?.0.waitingFor == [])
            #expect(try await queue.claimNext(worker: "w", leaseDuration: .seconds(60))?.id == waiting.id)

            let doomed = Self.job(owner)
            try await queue.create(doomed)
            let child = Self.job(owner, dependsOn: [doomed.id])
            try await queue.create(child)
            let grandchild = Self.job(owner, dependsOn: [child.id])
            try await queue.create(grandchild)
            #expect(try await queue.cancel(doomed.id, ownerID: owner) == .cancelled)
            let reason = "dependency \(doomed.id.uuidString.lowercased()) failed"
            #expect(try await queue.state(of: child.id, ownerID: owner) == JobState(status: .failure, reason: reason))
            #expect(try await queue.state(of: grandchild.id, ownerID: owner)
                == JobState(status: .failure, reason: "dependency \(child.id.uuidString.lowercased()) failed"))
            #expect(try await queue.claimNext(worker: "w", leaseDuration: .seconds(60)) == nil)
        }
    }

    /// Waits up to `timeout` for `condition`.
    static func eventually(timeout: Duration = .seconds(10), _ condition: @Sendable () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while try await !condition() {
            guard ContinuousClock.now < deadline else { throw TestFailure("the condition did not hold within \(timeout)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}
