import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LectorAPI
import LectorCore
import LectorModel
import LectorOCR
import LectorWorker
import Logging
import NIOCore
import Testing

@Suite("Cancel, re-OCR, delete and retention")
struct EngineTests {
    static let t0 = Date(timeIntervalSince1970: 1_900_000_000)

    /// A user: its bearer token and its id.
    static func user(_ harness: TestHarness) async throws -> (token: String, id: Int64) {
        let token = try await harness.newUser().token
        return (token, try #require(try await harness.keys.authenticate(token: token)).id)
    }

    static func post(_ client: some TestClientProtocol, _ uri: String, token: String, json: String? = nil) async throws -> TestResponse {
        var headers: HTTPFields = [.authorization: "Bearer \(token)"]
        if json != nil { headers[.contentType] = "application/json" }
        return try await client.execute(uri: uri, method: .post, headers: headers, body: json.map { ByteBuffer(string: $0) })
    }

    // MARK: cancel

    @Test("cancelling a queued job ends it FAILURE \"cancelled\"; again is 409 job_ended; another user's is 404")
    func cancelQueued() async throws {
        try await TestHarness.run { harness in
            let alice = try await Self.user(harness)
            let mallory = try await Self.user(harness)
            let id = try await ReliabilityTests.submit(harness, owner: alice.id)
            try await harness.application().test(.router) { client in
                let stranger = try await Self.post(client, "/v1/jobs/\(id)/cancel", token: mallory.token)
                #expect(stranger.status == .notFound)
                #expect(stranger.errorCode == "job_not_found")
                let unknown = try await Self.post(client, "/v1/jobs/\(UUID())/cancel", token: alice.token)
                #expect(unknown.status == .notFound)

                let cancelled = try await Self.post(client, "/v1/jobs/\(id)/cancel", token: alice.token)
                #expect(cancelled.status == .ok)
                #expect(cancelled.json["status"] as? String == "FAILURE")
                let history = try await harness.jobs.history(of: id)
                #expect(history.map(\.status) == [.queued, .failure])
                #expect(history.last?.reason == "cancelled")

                let again = try await Self.post(client, "/v1/jobs/\(id)/cancel", token: alice.token)
                #expect(again.status == .conflict)
                #expect(again.errorCode == "job_ended")
            }
            // Nothing is left to claim.
            #expect(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60)) == nil)
        }
    }

    @Test("cancelling a running job stops its OCR: FAILURE \"cancelled\" within 2 s")
    func cancelRunning() async throws {
        try await TestHarness.run { harness in
            let alice = try await Self.user(harness)
            let id = try await ReliabilityTests.submit(harness, owner: alice.id)
            let engine = ScriptedEngineFactory(steps: [.slow(.seconds(60), "never")])
            let worker = ReliabilityTests.worker(harness, engine: engine)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await worker.cancelListener().run() }
                group.addTask { try await worker.run() }
                defer { group.cancelAll() }
                let deadline = ContinuousClock.now + .seconds(30)
                while try await harness.jobs.history(of: id).last?.status != .inProgress {
                    guard ContinuousClock.now < deadline else { throw TestFailure("the job was not claimed") }
                    try await Task.sleep(for: .milliseconds(20))
                }
                // Let the listener's LISTEN be in place.
                try await Task.sleep(for: .milliseconds(300))
                try await harness.application().test(.router) { client in
                    let started = ContinuousClock.now
                    let requested = try await Self.post(client, "/v1/jobs/\(id)/cancel", token: alice.token)
                    #expect(requested.status == .accepted)
                    // The job as it stands: still running, or already ended by its worker.
                    #expect(["IN_PROGRESS", "FAILURE"].contains(requested.json["status"] as? String))
                    try await ReliabilityTests.waitForEnd(harness, id, timeout: .seconds(10))
                    #expect(ContinuousClock.now - started < .seconds(2))
                    let ended = try await Self.post(client, "/v1/jobs/\(id)/cancel", token: alice.token)
                    #expect(ended.errorCode == "job_ended")
                }
            }
            let history = try await harness.jobs.history(of: id)
            #expect(history.map(\.status) == [.queued, .inProgress, .failure])
            #expect(history.last?.reason == "cancelled")
            #expect(history.last?.worker == "scripted/1")
        }
    }

    @Test("a worker that missed the NOTIFY finds the cancel request at its next heartbeat")
    func cancelFoundByHeartbeat() async throws {
        try await TestHarness.run(environment: ["LECTOR_HEARTBEAT_SECONDS": "0.2"]) { harness in
            let alice = try await Self.user(harness)
            let id = try await ReliabilityTests.submit(harness, owner: alice.id)
            let engine = ScriptedEngineFactory(steps: [.slow(.seconds(60), "never")])
            // No cancel listener: only the lease keeper can learn of the request.
            try await ReliabilityTests.runWorker(harness, engine: engine) {
                let deadline = ContinuousClock.now + .seconds(30)
                while try await harness.jobs.history(of: id).last?.status != .inProgress {
                    guard ContinuousClock.now < deadline else { throw TestFailure("the job was not claimed") }
                    try await Task.sleep(for: .milliseconds(20))
                }
                #expect(try await harness.jobs.cancel(id, ownerID: alice.id) == .requested)
                try await ReliabilityTests.waitForEnd(harness, id, timeout: .seconds(10))
            }
            let history = try await harness.jobs.history(of: id)
            #expect(history.map(\.status) == [.queued, .inProgress, .failure])
            #expect(history.last?.reason == "cancelled")
        }
    }

    @Test("a cancel racing a claim: the job is either claimed (and the cancel requested) or cancelled, never both",
          arguments: ClaimStrategy.allCases)
    func cancelRacesClaim(strategy: ClaimStrategy) async throws {
        try await TestHarness.run { harness in
            let owner = try await QueueTests.owner(harness)
            for index in 0..<60 {
                let job = QueueTests.makeJob(owner: owner, index: index)
                try await harness.jobs.create(job)
                async let claimed = harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60), strategy: strategy)
                async let cancelled = harness.jobs.cancel(job.id, ownerID: owner)
                let (claim, cancel) = try await (claimed, cancelled)
                let history = try await harness.jobs.history(of: job.id).map(\.status)
                if let claim {
                    #expect(claim.id == job.id)
                    #expect(cancel == .requested)
                    #expect(history == [.queued, .inProgress])
                    // Its worker ends it.
                    try await harness.jobs.end(claim.lease, as: .failure, reason: JobStore.cancelledReason)
                } else {
                    #expect(cancel == .cancelled)
                    #expect(history == [.queued, .failure])
                }
            }
            #expect(try await harness.jobs.countsByStatus() == [.failure: 60])
        }
    }

    @Test("a job whose cancel was requested is never requeued: a retry or a rescue of it ends it \"cancelled\"")
    func cancelRequestedNeverRequeued() async throws {
        try await TestHarness.run { harness in
            let owner = try await QueueTests.owner(harness)
            var ids: [UUID] = []
            for index in 0..<2 {
                let job = QueueTests.makeJob(owner: owner, index: index)
                try await harness.jobs.create(job)
                ids.append(job.id)
            }
            let first = try #require(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(10), now: Self.t0))
            let second = try #require(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(10), now: Self.t0))
            #expect(Set([first.id, second.id]) == Set(ids))
            #expect(try await harness.jobs.cancel(first.id, ownerID: owner) == .requested)
            #expect(try await harness.jobs.cancel(second.id, ownerID: owner) == .requested)
            #expect(try await harness.jobs.cancelRequested(ids + [UUID()]) == Set(ids))
            // The worker's retry becomes the end.
            try await harness.jobs.requeue(first.lease, reason: "retrying in 1 s: engine failure", now: Self.t0)
            // The rescuer's requeue too.
            let rescuer = Rescuer(jobs: harness.jobs, interval: .seconds(1), maxAttempts: 3, logger: TestDatabase.logger)
            #expect(await rescuer.runOnce(now: Self.t0 + 11) == RescueReport(failed: 1))
            for id in ids {
                let history = try await harness.jobs.history(of: id)
                #expect(history.map(\.status) == [.queued, .inProgress, .failure])
                #expect(history.last?.reason == "cancelled")
            }
            #expect(try await harness.jobs.cancelRequested(ids).isEmpty)
            #expect(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(10), now: Self.t0 + 12) == nil)
        }
    }

    // MARK: re-OCR

    @Test("re-OCR makes a new job from the stored document with new options, linked to the first")
    func rerun() async throws {
        try await TestHarness.run { harness in
            let alice = try await Self.user(harness)
            let mallory = try await Self.user(harness)
            let source = try await ReliabilityTests.submit(harness, owner: alice.id)
            try await harness.application().test(.router) { client in
                let refused = [
                    #"{"options": {"mode": "sideways"}}"#, #"{"options": {"colour": true}}"#, #"{"other": 1}"#, "[1]", "not json",
                ]
                for body in refused {
                    let response = try await Self.post(client, "/v1/jobs/\(source)/rerun", token: alice.token, json: body)
                    #expect(response.status == .badRequest, "\(body)")
                }
                let stranger = try await Self.post(client, "/v1/jobs/\(source)/rerun", token: mallory.token, json: "{}")
                #expect(stranger.status == .notFound)

                let response = try await Self.post(
                    client, "/v1/jobs/\(source)/rerun", token: alice.token, json: #"{"options": {"mode": "document", "operations": ["grayscale"]}}"#)
                #expect(response.status == .accepted)
                #expect(response.headers[.retryAfter] != nil)
                let id = try #require((response.json["id"] as? String).flatMap(UUID.init(uuidString:)))
                #expect(id != source)
                #expect(response.headers[.location] == "/v1/jobs/\(id.uuidString.lowercased())")
                let view = try await client.execute(uri: "/v1/jobs/\(id)", method: .get, headers: [.authorization: "Bearer \(alice.token)"])
                #expect(view.status == .ok)
                #expect(view.json["rerunOf"] as? String == source.uuidString.lowercased())
                #expect(view.json["status"] as? String == "QUEUED")
                let options = try #require(view.json["options"] as? [String: Any])
                #expect(options["mode"] as? String == "document")
                #expect(options["operations"] as? [String] == ["grayscale"])
                let first = try await client.execute(uri: "/v1/jobs/\(source)", method: .get, headers: [.authorization: "Bearer \(alice.token)"])
                #expect(first.json["rerunOf"] == nil)
                // No body: the defaults.
                let plain = try await Self.post(client, "/v1/jobs/\(source)/rerun", token: alice.token)
                #expect(plain.status == .accepted)
                // The same document, in a folder of its own; the first job's folder is untouched.
                let copy = try await harness.storage.readDocument(id: id, fileName: DocumentType.png.storedFileName)
                #expect(copy == (try await harness.storage.readDocument(id: source, fileName: DocumentType.png.storedFileName)))
                let metadata = try Data(contentsOf: harness.storage.folder(of: id).appendingPathComponent("metadata.json"))
                #expect(String(decoding: metadata, as: UTF8.self).contains(source.uuidString.lowercased()))
            }
            // The new jobs are queued like any other: a worker claims them.
            let claimed = try #require(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60)))
            #expect(claimed.id == source)
            #expect(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60)) != nil)
        }
    }

    @Test("re-OCR of a job whose document is gone is 409 document_unavailable and leaves nothing behind")
    func rerunWithoutDocument() async throws {
        try await TestHarness.run { harness in
            let alice = try await Self.user(harness)
            let source = try await ReliabilityTests.submit(harness, owner: alice.id)
            try await harness.storage.removeJobFolder(id: source)
            try await harness.application().test(.router) { client in
                let response = try await Self.post(client, "/v1/jobs/\(source)/rerun", token: alice.token, json: "{}")
                #expect(response.status == .conflict)
                #expect(response.errorCode == "document_unavailable")
            }
            #expect(try await harness.jobs.countsByStatus() == [.queued: 1])
            let spooled = (try? FileManager.default.contentsOfDirectory(atPath: harness.storage.spoolDirectory)) ?? []
            #expect(spooled.isEmpty)
        }
    }

    // MARK: delete

    @Test("deleting a job removes its folder and metadata, keeps its row and history; every route of it is then 410")
    func deleteEnded() async throws {
        try await TestHarness.run { harness in
            let alice = try await Self.user(harness)
            let mallory = try await Self.user(harness)
            let id = try await ReliabilityTests.submit(harness, owner: alice.id)
            let claimed = try #require(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60)))
            try await harness.storage.stageResults(id: id, stage: 1, files: [("result.txt", Data("text".utf8))])
            try await harness.jobs.end(claimed.lease, as: .finished) {
                try await harness.storage.commitResults(id: id, fileNames: ["result.txt"], stage: 1)
            }
            let auth: HTTPFields = [.authorization: "Bearer \(alice.token)"]
            try await harness.application().test(.router) { client in
                let stranger = try await client.execute(uri: "/v1/jobs/\(id)", method: .delete, headers: [.authorization: "Bearer \(mallory.token)"])
                #expect(stranger.status == .notFound)
                let deleted = try await client.execute(uri: "/v1/jobs/\(id)", method: .delete, headers: auth)
                #expect(deleted.status == .noContent)
                #expect(!FileManager.default.fileExists(atPath: harness.storage.folder(of: id).path))
                for (uri, method) in [
                    ("/v1/jobs/\(id)", HTTPRequest.Method.get), ("/v1/jobs/\(id)/result", .get), ("/v1/jobs/\(id)/result?wait=1", .get),
                    ("/v1/jobs/\(id)/pages/1", .get), ("/v1/jobs/\(id)/deliveries", .get), ("/v1/jobs/\(id)/events", .get),
                    ("/v1/jobs/\(id)/cancel", .post), ("/v1/jobs/\(id)/rerun", .post), ("/v1/jobs/\(id)", .delete),
                ] {
                    let response = try await client.execute(uri: uri, method: method, headers: auth)
                    #expect(response.status == .gone, "\(method) \(uri)")
                    #expect(response.errorCode == "job_deleted", "\(method) \(uri)")
                }
                // Another user still gets 404: a deleted job is no more theirs than before.
                let other = try await client.execute(uri: "/v1/jobs/\(id)", method: .get, headers: [.authorization: "Bearer \(mallory.token)"])
                #expect(other.status == .notFound)
                let list = try await client.execute(uri: "/v1/jobs", method: .get, headers: auth)
                #expect((list.json["jobs"] as? [Any])?.isEmpty == true)
            }
            // The fact remains: the row and its history; what the client gave is gone.
            #expect(try await harness.jobs.history(of: id).map(\.status) == [.queued, .inProgress, .finished])
            let rows = try await harness.client.query(
                "SELECT document_name, options::text, metadata::text, deleted_at IS NOT NULL FROM jobs WHERE id = \(id)",
                logger: TestDatabase.logger)
            var found = false
            for try await (name, options, metadata, deleted) in rows.decode((String, String, String, Bool).self) {
                found = true
                #expect(name == "" && options == "{}" && metadata == "{}" && deleted)
            }
            #expect(found)
            // Its folder, if one came back, would be an orphan to the sweeper.
            #expect(try await harness.jobs.existingJobIDs([id]).isEmpty)
        }
    }

    @Test("deleting a queued job cancels it; a running job is refused with 409 job_running")
    func deleteQueuedAndRunning() async throws {
        try await TestHarness.run { harness in
            let alice = try await Self.user(harness)
            let queued = try await ReliabilityTests.submit(harness, owner: alice.id)
            try await harness.application().test(.router) { client in
                let auth: HTTPFields = [.authorization: "Bearer \(alice.token)"]
                #expect(try await client.execute(uri: "/v1/jobs/\(queued)", method: .delete, headers: auth).status == .noContent)
                let history = try await harness.jobs.history(of: queued)
                #expect(history.map(\.status) == [.queued, .failure])
                #expect(history.last?.reason == "cancelled")
                #expect(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60)) == nil)

                let running = try await ReliabilityTests.submit(harness, owner: alice.id)
                let claimed = try #require(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60)))
                let refused = try await client.execute(uri: "/v1/jobs/\(running)", method: .delete, headers: auth)
                #expect(refused.status == .conflict)
                #expect(refused.errorCode == "job_running")
                #expect(FileManager.default.fileExists(atPath: harness.storage.folder(of: running).path))
                try await harness.jobs.end(claimed.lease, as: .failure, reason: "x")
                #expect(try await client.execute(uri: "/v1/jobs/\(running)", method: .delete, headers: auth).status == .noContent)
            }
        }
    }

    @Test("a delete racing a worker's end: deleted only after the end, and then no file comes back")
    func deleteRacesEnd() async throws {
        try await TestHarness.run { harness in
            let alice = try await Self.user(harness)
            try await harness.application().test(.router) { client in
                let auth: HTTPFields = [.authorization: "Bearer \(alice.token)"]
                for _ in 0..<30 {
                    let id = try await ReliabilityTests.submit(harness, owner: alice.id)
                    let claimed = try #require(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60)))
                    try await harness.storage.stageResults(id: id, stage: 1, files: [("result.txt", Data("text".utf8))])
                    async let ended: Void = harness.jobs.end(claimed.lease, as: .finished) {
                        try await harness.storage.commitResults(id: id, fileNames: ["result.txt"], stage: 1)
                    }
                    async let deleted = client.execute(uri: "/v1/jobs/\(id)", method: .delete, headers: auth)
                    let (_, response) = try await (ended, deleted)
                    await harness.storage.discardResults(id: id, fileNames: ["result.txt"], stage: 1)
                    #expect(try await harness.jobs.history(of: id).last?.status == .finished)
                    if response.status == .noContent {
                        #expect(!FileManager.default.fileExists(atPath: harness.storage.folder(of: id).path))
                    } else {
                        #expect(response.errorCode == "job_running")
                        #expect(try await harness.storage.readResult(id: id, fileName: "result.txt") == Data("text".utf8))
                    }
                }
            }
        }
    }

    @Test("a stale attempt of a deleted job can neither recreate its folder nor end it")
    func staleAttemptAfterDelete() async throws {
        try await TestHarness.run { harness in
            let alice = try await Self.user(harness)
            let id = try await ReliabilityTests.submit(harness, owner: alice.id)
            let stale = try #require(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(10), now: Self.t0))
            // Its worker is lost; at the attempt limit the rescuer fails the job, and the owner deletes it.
            #expect(try await harness.jobs.rescueExpired(maxAttempts: 1, now: Self.t0 + 11) == RescueReport(failed: 1))
            #expect(try await harness.jobs.delete(id, ownerID: alice.id) == .deleted)
            try await harness.storage.removeJobFolder(id: id)
            await #expect(throws: StorageError.self) {
                try await harness.storage.stageResults(id: id, stage: 1, files: [("result.txt", Data("late".utf8))])
            }
            await #expect(throws: TransitionRefused.self) {
                try await harness.jobs.end(stale.lease, as: .finished) {
                    try await harness.storage.commitResults(id: id, fileNames: ["result.txt"], stage: 1)
                }
            }
            // Even a commit of the files, were it attempted, fails without making the folder.
            await #expect(throws: StorageError.self) {
                try await harness.storage.commitResults(id: id, fileNames: ["result.txt"], stage: 1)
            }
            #expect(!FileManager.default.fileExists(atPath: harness.storage.folder(of: id).path))
        }
    }

    // MARK: retention

    @Test("retention deletes ended jobs older than its days, in batches, and nothing else")
    func retention() async throws {
        try await TestHarness.run { harness in
            let alice = try await Self.user(harness)
            // Twelve ended jobs, eight of them old; one old job still queued, one old job running.
            var old: [UUID] = []
            var recent: [UUID] = []
            for index in 0..<12 {
                let id = try await ReliabilityTests.submit(harness, owner: alice.id)
                let claimed = try #require(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60)))
                try await harness.jobs.end(claimed.lease, as: index % 2 == 0 ? .finished : .failure, reason: "x")
                if index < 8 { old.append(id) } else { recent.append(id) }
            }
            let running = try await ReliabilityTests.submit(harness, owner: alice.id)
            #expect(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60))?.id == running)
            let queued = try await ReliabilityTests.submit(harness, owner: alice.id)
            // Fabricated ages: created_at is not written by the application otherwise.
            try await harness.client.query(
                "UPDATE jobs SET created_at = \(Self.t0) - interval '40 days' WHERE id = ANY(\(old + [queued, running]))",
                logger: TestDatabase.logger)
            try await harness.client.query(
                "UPDATE jobs SET created_at = \(Self.t0) - interval '10 days' WHERE id = ANY(\(recent))", logger: TestDatabase.logger)

            let off = Retention(jobs: harness.jobs, storage: harness.storage, days: 0, logger: TestDatabase.logger)
            #expect(await off.runOnce(now: Self.t0) == 0)
            let retention = Retention(jobs: harness.jobs, storage: harness.storage, days: 30, batchSize: 3, logger: TestDatabase.logger)
            #expect(await retention.runOnce(now: Self.t0) == 8)
            #expect(await retention.runOnce(now: Self.t0) == 0)
            // The delete's commit marked each folder for removal (db/012); retention cleared the marks of the
            // folders it removed, so the sweeper has nothing to retry.
            #expect(try await harness.jobs.pendingStorageRemovals(olderThan: 0, now: Date(timeIntervalSinceNow: 3600)).isEmpty)
            for id in old {
                #expect(!FileManager.default.fileExists(atPath: harness.storage.folder(of: id).path))
                #expect(try await harness.jobs.history(of: id).count == 3)
            }
            for id in recent + [queued, running] {
                #expect(FileManager.default.fileExists(atPath: harness.storage.folder(of: id).path))
            }
            #expect(try await harness.jobs.existingJobIDs(old).isEmpty)
            #expect(try await harness.jobs.existingJobIDs(recent + [queued, running]).count == 6)
            let first = old[0]
            try await harness.application().test(.router) { client in
                let response = try await client.execute(uri: "/v1/jobs/\(first)", method: .get, headers: [.authorization: "Bearer \(alice.token)"])
                #expect(response.status == .gone)
            }
            // Later, the recent ones pass the limit too.
            #expect(await retention.runOnce(now: Self.t0 + 86_400 * 25) == 4)
        }
    }

    @Test("retention in several processes at once: each job is taken by one of them")
    func retentionConcurrent() async throws {
        try await TestHarness.run { harness in
            let owner = try await QueueTests.owner(harness)
            var ids: [UUID] = []
            for index in 0..<40 {
                let job = QueueTests.makeJob(owner: owner, index: index)
                try await harness.jobs.create(job)
                ids.append(job.id)
            }
            try await harness.client.query(
                """
                INSERT INTO job_transitions (job_id, status, reason) SELECT id, 'FAILURE', 'x' FROM jobs WHERE id = ANY(\(ids))
                """, logger: TestDatabase.logger)
            try await harness.client.query(
                "UPDATE jobs SET created_at = \(Self.t0) - interval '40 days' WHERE id = ANY(\(ids))", logger: TestDatabase.logger)
            let taken = try await withThrowingTaskGroup(of: [UUID].self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        var mine: [UUID] = []
                        while true {
                            let batch = try await harness.jobs.expireEnded(olderThanDays: 30, now: Self.t0, limit: 3)
                            if batch.isEmpty { return mine }
                            mine += batch
                        }
                    }
                }
                var all: [UUID] = []
                for try await batch in group { all += batch }
                return all
            }
            #expect(taken.count == 40)
            #expect(Set(taken) == Set(ids))
        }
    }
}
