import Foundation
import LectorCore
import PostgresNIO
import Testing

@Suite("The queue in PostgreSQL")
struct QueueTests {
    static func makeJob(owner: Int64, index: Int = 0) -> NewJob {
        NewJob(
            id: UUID(), ownerID: owner, documentName: "doc-\(index).png", contentType: "image/png", sizeBytes: 1,
            sha256: Array(repeating: 0, count: 32), optionsJSON: #"{"lang":"eng"}"#, metadataJSON: "{}")
    }

    static func owner(_ harness: TestHarness) async throws -> Int64 {
        let token = try await harness.newUser().token
        return try #require(try await harness.keys.authenticate(token: token)).id
    }

    @Test("concurrent claimers over many jobs: none claimed twice, none skipped", arguments: ClaimStrategy.allCases)
    func claimAtomicity(strategy: ClaimStrategy) async throws {
        try await TestHarness.run { harness in
            let owner = try await Self.owner(harness)
            var ids: Set<UUID> = []
            for index in 0..<300 {
                let job = Self.makeJob(owner: owner, index: index)
                try await harness.jobs.create(job)
                ids.insert(job.id)
            }
            let claims = try await withThrowingTaskGroup(of: [UUID].self) { group in
                for claimer in 0..<8 {
                    group.addTask {
                        var mine: [UUID] = []
                        // SKIP LOCKED may come back empty while others hold rows: stop only when the queue is empty.
                        while true {
                            if let job = try await harness.jobs.claimNext(
                                worker: "claimer-\(claimer)", leaseDuration: .seconds(60), strategy: strategy)
                            {
                                mine.append(job.id)
                            } else if try await harness.jobs.countsByStatus()[.queued, default: 0] == 0 {
                                break
                            }
                        }
                        return mine
                    }
                }
                var all: [[UUID]] = []
                for try await claimed in group { all.append(claimed) }
                return all
            }
            let flat = claims.flatMap { $0 }
            #expect(flat.count == ids.count, "claimed \(flat.count) times for \(ids.count) jobs")
            #expect(Set(flat) == ids)
            #expect(claims.filter { !$0.isEmpty }.count > 1, "the claimers should have shared the work")
            // The log agrees: exactly one IN_PROGRESS row per job.
            let rows = try await harness.client.query(
                "SELECT count(*), count(DISTINCT job_id) FROM job_transitions WHERE status = 'IN_PROGRESS'")
            for try await (count, distinct) in rows.decode((Int, Int).self) {
                #expect(count == 300)
                #expect(distinct == 300)
            }
            #expect(try await harness.jobs.countsByStatus() == [.inProgress: 300])
        }
    }

    @Test("the claim takes the oldest queued job first")
    func oldestFirst() async throws {
        try await TestHarness.run { harness in
            let owner = try await Self.owner(harness)
            var order: [UUID] = []
            for index in 0..<5 {
                let job = Self.makeJob(owner: owner, index: index)
                try await harness.jobs.create(job)
                order.append(job.id)
            }
            var claimed: [UUID] = []
            while let job = try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60)) { claimed.append(job.id) }
            #expect(claimed == order)
            #expect(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60)) == nil)
        }
    }

    @Test("owners take turns at the claim: one owner's backlog does not hold back another's jobs; FIFO within an owner")
    func ownersTakeTurns() async throws {
        try await TestHarness.run { harness in
            let heavy = try await Self.owner(harness)
            let light = try await Self.owner(harness)
            var heavyJobs: [UUID] = [], lightJobs: [UUID] = []
            for index in 0..<20 {
                let job = Self.makeJob(owner: heavy, index: index)
                try await harness.jobs.create(job)
                heavyJobs.append(job.id)
            }
            for index in 0..<2 {
                let job = Self.makeJob(owner: light, index: index)
                try await harness.jobs.create(job)
                lightJobs.append(job.id)
            }
            var claimed: [UUID] = []
            while let job = try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60)) { claimed.append(job.id) }
            #expect(claimed.count == 22)
            // The light owner's two jobs are served within the first four claims, not after the backlog of 20.
            #expect(Array(claimed.prefix(4)) == [heavyJobs[0], lightJobs[0], heavyJobs[1], lightJobs[1]])
            #expect(claimed.filter(heavyJobs.contains) == heavyJobs)

        }
    }

    @Test("the schema version the binaries require is the newest migration, and a migrated database has it")
    func requiredSchemaVersion() async throws {
        let versions = try Migrator(directory: TestDatabase.migrationsDirectory).migrations.map(\.version)
        let newest = try #require(versions.last)
        // Numbers may have gaps (branches take numbers that the lead renumbers at merge).
        let previous = versions.dropLast().last ?? 0
        #expect(Migrator.requiredVersion == newest)
        try await TestHarness.run { harness in
            #expect(try await Migrator.appliedVersion(client: harness.client, logger: TestDatabase.logger) == newest)
            try await harness.client.query("DELETE FROM schema_migrations WHERE version = \(newest)")
            #expect(try await Migrator.appliedVersion(client: harness.client, logger: TestDatabase.logger) == previous)
            try await harness.client.query("DROP TABLE schema_migrations")
            #expect(try await Migrator.appliedVersion(client: harness.client, logger: TestDatabase.logger) == 0)
        }
    }

    @Test("create with a live idempotency key creates nothing; an expired one is taken over")
    func createWithKey() async throws {
        try await TestHarness.run { harness in
            let owner = try await Self.owner(harness)
            let first = Self.makeJob(owner: owner, index: 1)
            let fingerprint = [UInt8](repeating: 7, count: 32)
            try await harness.jobs.create(first, idempotencyKey: ("key-1", fingerprint))
            let second = Self.makeJob(owner: owner, index: 2)
            await #expect(throws: IdempotencyKeyTaken.self) {
                try await harness.jobs.create(second, idempotencyKey: ("key-1", fingerprint))
            }
            // The refused create left no job and no transition behind.
            #expect(try await harness.jobs.history(of: second.id).isEmpty)
            #expect(try await harness.jobs.countsByStatus() == [.queued: 1])
            let original = try #require(try await harness.jobs.idempotentJob(key: "key-1", ownerID: owner, fingerprint: fingerprint))
            #expect(original.id == first.id && original.sameDocument)
            // A use older than 24 hours no longer holds the key.
            try await harness.client.query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
            try await harness.jobs.create(second, idempotencyKey: ("key-1", fingerprint))
            #expect(try await harness.jobs.idempotentJob(key: "key-1", ownerID: owner, fingerprint: fingerprint)?.id == second.id)
        }
    }

    @Test("an end whose beforeCommit throws is rolled back and keeps the lease; end_job takes only an end")
    func endRollsBack() async throws {
        struct PublishFailed: Error {}
        try await TestHarness.run { harness in
            let owner = try await Self.owner(harness)
            let job = Self.makeJob(owner: owner)
            try await harness.jobs.create(job)
            let claimed = try #require(try await harness.jobs.claimNext(worker: "w1", leaseDuration: .seconds(60)))
            await #expect(throws: PublishFailed.self) {
                try await harness.jobs.end(claimed.lease, as: .finished) { throw PublishFailed() }
            }
            #expect(try await harness.jobs.history(of: job.id).map(\.status) == [.queued, .inProgress])
            // The lease survived the rollback: renewing works and the same attempt can still end the job.
            #expect(try await harness.jobs.renew(claimed.lease, duration: .seconds(60)))
            await #expect(throws: PSQLError.self) {
                let rows = try await harness.client.query("SELECT end_job(\(job.id), 'w1', 1, 'QUEUED', NULL)")
                for try await _ in rows {}
            }
            try await harness.jobs.end(claimed.lease, as: .finished) {}
            #expect(try await harness.jobs.history(of: job.id).map(\.status) == [.queued, .inProgress, .finished])
        }
    }

    @Test("history is append-only and illegal transitions are refused")
    func appendOnly() async throws {
        try await TestHarness.run { harness in
            let owner = try await Self.owner(harness)
            let job = Self.makeJob(owner: owner)
            try await harness.jobs.create(job)
            await #expect(throws: PSQLError.self) {
                try await harness.client.query("UPDATE job_transitions SET status = 'FINISHED' WHERE job_id = \(job.id)")
            }
            await #expect(throws: PSQLError.self) {
                try await harness.client.query("DELETE FROM job_transitions WHERE job_id = \(job.id)")
            }
            // QUEUED -> FINISHED skips IN_PROGRESS.
            await #expect(throws: PSQLError.self) {
                try await harness.client.query(
                    "INSERT INTO job_transitions (job_id, status) VALUES (\(job.id), 'FINISHED')")
            }
            let claimed = try #require(try await harness.jobs.claimNext(worker: "w1", leaseDuration: .seconds(60)))
            #expect(claimed.id == job.id)
            #expect(claimed.optionsJSON.contains("eng"))
            // Only the worker holding the claim may end it.
            await #expect(throws: TransitionRefused.self) {
                try await harness.jobs.end(Lease(jobID: job.id, worker: "w2", attempt: 1), as: .finished)
            }
            try await harness.jobs.end(claimed.lease, as: .finished)
            // A job ends once.
            await #expect(throws: TransitionRefused.self) {
                try await harness.jobs.end(claimed.lease, as: .failure, reason: "again")
            }
            let history = try await harness.jobs.history(of: job.id)
            #expect(history.map(\.status) == [.queued, .inProgress, .finished])
            #expect(history[1].worker == "w1")
            #expect(history[0].at <= history[1].at && history[1].at <= history[2].at)
        }
    }

    @Test("the claim (claim_job itself, both strategies) reads only the partial index of claimable jobs, however many jobs have finished")
    func claimUsesPartialIndex() async throws {
        try await TestHarness.run { harness in
            let owner = try await Self.owner(harness)
            // 2,000 finished jobs and 3 queued ones, inserted with SQL.
            try await harness.client.query(
                """
                INSERT INTO jobs (id, owner_id, document_name, content_type, size_bytes, sha256, status, created_at)
                SELECT gen_random_uuid(), \(owner), 'old.png', 'image/png', 1, decode(repeat('00', 32), 'hex'),
                       'FINISHED', now() - interval '1 day'
                FROM generate_series(1, 2000)
                """)
            for index in 0..<3 { try await harness.jobs.create(Self.makeJob(owner: owner, index: index)) }
            try await harness.client.query("ANALYZE jobs")
            // The claim itself (the statement JobStore prepares, both strategies), then, in the same transaction,
            // what it read: PostgreSQL counts each scan of the transaction per table and per index.
            for skipLocked in [false, true] {
                let (claimed, scans) = try await harness.client.withTransaction(logger: TestDatabase.logger) { connection in
                    let worker = "w-\(skipLocked)"
                    let rows = try await connection.query(
                        "SELECT job_id, attempt, content_type, options FROM claim_job(\(worker), 60.0, NULL, \(skipLocked))",
                        logger: TestDatabase.logger)
                    var claimed = 0
                    for try await _ in rows { claimed += 1 }
                    let counts = try await connection.query(
                        """
                        SELECT t.seq_scan, t.idx_tup_fetch, pg_stat_get_xact_numscans('jobs_claimable_idx'::regclass),
                               pg_stat_get_xact_numscans('jobs_owner_idx'::regclass)
                        FROM pg_stat_xact_user_tables t WHERE t.relname = 'jobs'
                        """, logger: TestDatabase.logger)
                    var scans: (seq: Int64, fetched: Int64, claimable: Int64, owner: Int64)?
                    for try await row in counts.decode((Int64, Int64, Int64, Int64).self) {
                        scans = (row.0, row.1, row.2, row.3)
                    }
                    return (claimed, scans)
                }
                let read = try #require(scans)
                #expect(claimed == 1)
                #expect(read.seq == 0, "claim_job scanned the whole jobs table (skip locked: \(skipLocked))")
                #expect(read.claimable >= 1, "claim_job did not use jobs_claimable_idx (skip locked: \(skipLocked))")
                #expect(read.owner == 0, "claim_job read jobs_owner_idx, which holds the finished jobs too")
                // A handful of rows (the queued ones, the claimed one re-read), never the 2,000 finished jobs.
                #expect(read.fetched < 50, "claim_job fetched \(read.fetched) rows through indexes")
            }
        }
    }
}
