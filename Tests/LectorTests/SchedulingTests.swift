import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LectorAPI
import LectorCore
import Testing

/// Priorities and dependencies (db/010), on the real database.
@Suite("Priorities and dependencies")
struct SchedulingTests {
    static func job(_ owner: Int64, priority: Int = 0, dependsOn: [UUID] = []) -> NewJob {
        var job = QueueTests.makeJob(owner: owner)
        job.priority = priority
        job.dependsOn = dependsOn
        return job
    }

    static func create(_ harness: TestHarness, _ owner: Int64, priority: Int = 0, dependsOn: [UUID] = []) async throws -> UUID {
        let job = Self.job(owner, priority: priority, dependsOn: dependsOn)
        try await harness.jobs.create(job)
        return job.id
    }

    static func claim(_ harness: TestHarness) async throws -> ClaimedJob? {
        try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60))
    }

    static func status(_ harness: TestHarness, _ id: UUID, owner: Int64) async throws -> (JobRecord, [JobTransition]) {
        try #require(try await harness.jobs.job(id, ownerID: owner))
    }

    @Test("priorities: higher first within an owner, oldest first within a priority; owners still take turns")
    func priorities() async throws {
        try await TestHarness.run { harness in
            let alice = try await EngineTests.user(harness)
            let bob = try await EngineTests.user(harness)
            let a0 = try await Self.create(harness, alice.id, priority: 0)
            let a1 = try await Self.create(harness, alice.id, priority: 5)
            let a2 = try await Self.create(harness, alice.id, priority: 5)
            let a3 = try await Self.create(harness, alice.id, priority: 9)
            let b0 = try await Self.create(harness, bob.id, priority: 0)
            var order: [UUID] = []
            while let claimed = try await Self.claim(harness) { order.append(claimed.id) }
            // Alice joined the line first: her highest; then Bob's turn, although his job's priority is the
            // lowest; then the rest of Alice's, by priority, then age.
            #expect(order == [a3, b0, a1, a2, a0])
            #expect(try await Self.status(harness, a3, owner: alice.id).0.priority == 9)
            // The database refuses what the API would: priorities are 0-9.
            await #expect(throws: (any Error).self) { try await harness.jobs.create(Self.job(alice.id, priority: 10)) }
        }
    }

    @Test("dependencies: a job waits until they finish; a failure fails the jobs waiting for it, and theirs")
    func dependencies() async throws {
        try await TestHarness.run { harness in
            let alice = try await EngineTests.user(harness)
            let a = try await Self.create(harness, alice.id)
            let b = try await Self.create(harness, alice.id, priority: 9, dependsOn: [a])
            let c = try await Self.create(harness, alice.id, dependsOn: [b])
            let d = try await Self.create(harness, alice.id, dependsOn: [a, b, a])
            #expect(try await Self.status(harness, d, owner: alice.id).0.waitingFor.sorted { $0.uuidString < $1.uuidString }
                == [a, b].sorted { $0.uuidString < $1.uuidString })

            // The queue's depth counts what a worker can take; the blocked ones apart.
            let depth = try await harness.jobs.queueDepth()
            #expect(depth.queued == 1 && depth.blocked == 3, "\(depth.queued) \(depth.blocked)")

            // Only A can run, although B has the higher priority.
            let first = try #require(try await Self.claim(harness))
            #expect(first.id == a)
            #expect(try await Self.claim(harness) == nil)
            try await harness.jobs.end(first.lease, as: .finished)

            // A finished: B runs; D still waits for B.
            #expect(try await Self.status(harness, d, owner: alice.id).0.waitingFor == [b])
            let second = try #require(try await Self.claim(harness))
            #expect(second.id == b)
            #expect(try await Self.claim(harness) == nil)

            // B fails: C and D fail with it, naming B; nothing is left to claim.
            try await harness.jobs.end(second.lease, as: .failure, reason: "unreadable")
            for id in [c, d] {
                let (record, history) = try await Self.status(harness, id, owner: alice.id)
                #expect(record.status == .failure)
                #expect(history.map(\.status) == [.queued, .failure])
                #expect(history.last?.reason == "dependency \(b.uuidString.lowercased()) failed")
                #expect(record.waitingFor.isEmpty)
            }
            #expect(try await Self.claim(harness) == nil)
        }
    }

    @Test("a failure runs down a long chain and a diamond in one statement, each job naming its own dependency")
    func longChain() async throws {
        try await TestHarness.run { harness in
            let alice = try await EngineTests.user(harness)
            let root = try await Self.create(harness, alice.id)
            var chain: [UUID] = []
            var previous = root
            for _ in 0..<400 {
                previous = try await Self.create(harness, alice.id, dependsOn: [previous])
                chain.append(previous)
            }
            // A diamond: two jobs on the root, one on both.
            let left = try await Self.create(harness, alice.id, dependsOn: [root])
            let right = try await Self.create(harness, alice.id, dependsOn: [root])
            let bottom = try await Self.create(harness, alice.id, dependsOn: [left, right])
            let claimed = try #require(try await Self.claim(harness))
            #expect(claimed.id == root)
            // Recursing once per level would exceed the server's stack long before 400 levels of triggers.
            try await harness.jobs.end(claimed.lease, as: .failure, reason: "unreadable")
            var dependencyOf: [UUID: UUID] = [chain[0]: root, left: root, right: root]
            for (index, id) in chain.enumerated().dropFirst() { dependencyOf[id] = chain[index - 1] }
            for (id, dependency) in dependencyOf {
                let (record, history) = try await Self.status(harness, id, owner: alice.id)
                #expect(record.status == .failure)
                #expect(history.last?.reason == "dependency \(dependency.uuidString.lowercased()) failed")
            }
            let (record, history) = try await Self.status(harness, bottom, owner: alice.id)
            #expect(record.status == .failure)
            #expect(history.map(\.status) == [.queued, .failure])
            let named = [left, right].map { "dependency \($0.uuidString.lowercased()) failed" }
            #expect(named.contains(history.last?.reason ?? ""))
        }
    }

    @Test("a dependency that failed fails the job at once, a finished one holds nothing, and a stranger's is refused")
    func dependencyStates() async throws {
        try await TestHarness.run { harness in
            let alice = try await EngineTests.user(harness)
            let mallory = try await EngineTests.user(harness)
            let done = try await Self.create(harness, alice.id)
            let bad = try await Self.create(harness, alice.id)
            let one = try #require(try await Self.claim(harness))
            try await harness.jobs.end(one.lease, as: .finished)
            let two = try #require(try await Self.claim(harness))
            try await harness.jobs.end(two.lease, as: .failure, reason: "broken")
            #expect(Set([one.id, two.id]) == [done, bad])

            let afterDone = try await Self.create(harness, alice.id, dependsOn: [done])
            #expect(try await Self.claim(harness)?.id == afterDone)

            let afterBad = try await Self.create(harness, alice.id, dependsOn: [done, bad])
            let (record, history) = try await Self.status(harness, afterBad, owner: alice.id)
            #expect(record.status == .failure)
            #expect(history.last?.reason == "dependency \(bad.uuidString.lowercased()) failed")

            // Another user's job, or none at all: refused, and no job is created.
            for foreign in [done, UUID()] {
                let job = Self.job(mallory.id, dependsOn: [foreign])
                await #expect(throws: UnknownDependency.self) { try await harness.jobs.create(job) }
                #expect(try await harness.jobs.job(job.id, ownerID: mallory.id) == nil)
            }
        }
    }

    @Test("cancelling a queued dependency fails the jobs waiting for it")
    func cancelledDependency() async throws {
        try await TestHarness.run { harness in
            let alice = try await EngineTests.user(harness)
            let a = try await Self.create(harness, alice.id)
            let b = try await Self.create(harness, alice.id, dependsOn: [a])
            #expect(try await harness.jobs.cancel(a, ownerID: alice.id) == .cancelled)
            let (record, history) = try await Self.status(harness, b, owner: alice.id)
            #expect(record.status == .failure)
            #expect(history.last?.reason == "dependency \(a.uuidString.lowercased()) failed")
            // A cancel of the dependent itself, now ended, writes nothing.
            #expect(try await harness.jobs.cancel(b, ownerID: alice.id) == .ended)
        }
    }

    @Test("the API takes priority and dependsOn as options or query parameters, shows them, and refuses bad ones")
    func api() async throws {
        try await TestHarness.run { harness in
            let alice = try await EngineTests.user(harness)
            let mallory = try await EngineTests.user(harness)
            let image = try TestImages.render(["sched"])
            try await harness.application().test(.router) { client in
                func submit(_ token: String, options: String?, query: String = "") async throws -> TestResponse {
                    if let options {
                        var form = Multipart()
                        form.add(name: "document", filename: "a.png", contentType: "image/png", data: image)
                        form.add(name: "options", json: options)
                        return try await client.execute(
                            uri: "/v1/jobs", method: .post,
                            headers: [.authorization: "Bearer \(token)", .contentType: form.contentType], body: form.finished())
                    }
                    return try await client.execute(
                        uri: "/v1/jobs\(query)", method: .post,
                        headers: [.authorization: "Bearer \(token)", .contentType: "image/png"], body: ByteBuffer(data: image))
                }
                let first = try await submit(alice.token, options: #"{"priority": 7}"#)
                #expect(first.status == .accepted)
                let a = try #require(first.json["id"] as? String)
                let second = try await submit(alice.token, options: #"{"dependsOn": ["\#(a)"], "lang": "eng"}"#)
                #expect(second.status == .accepted)
                let b = try #require(second.json["id"] as? String)
                let view = try await client.execute(uri: "/v1/jobs/\(b)", method: .get, headers: [.authorization: "Bearer \(alice.token)"])
                #expect(view.json["waitingFor"] as? [String] == [a])
                #expect(view.json["priority"] as? Int == 0)
                let viewA = try await client.execute(uri: "/v1/jobs/\(a)", method: .get, headers: [.authorization: "Bearer \(alice.token)"])
                #expect(viewA.json["priority"] as? Int == 7)
                #expect(viewA.json["waitingFor"] == nil)
                let raw = try await submit(alice.token, options: nil, query: "?priority=3&dependsOn=\(a),\(b)")
                #expect(raw.status == .accepted)
                let c = try #require(raw.json["id"] as? String)
                let viewC = try await client.execute(uri: "/v1/jobs/\(c)", method: .get, headers: [.authorization: "Bearer \(alice.token)"])
                #expect(viewC.json["priority"] as? Int == 3)
                #expect(Set(viewC.json["waitingFor"] as? [String] ?? []) == [a, b])

                let badPriority = [#"{"priority": 10}"#, #"{"priority": -1}"#, #"{"priority": "high"}"#, #"{"priority": 1.5}"#]
                for options in badPriority {
                    let response = try await submit(alice.token, options: options)
                    #expect(response.status == .badRequest, "\(options)")
                    #expect(response.errorCode == "invalid_priority", "\(options)")
                }
                let tooMany = "[" + (0...NewJob.maxDependencies).map { _ in "\"\(UUID().uuidString)\"" }.joined(separator: ",") + "]"
                let badDependencies = [
                    #"{"dependsOn": "\#(a)"}"#, #"{"dependsOn": [1]}"#, #"{"dependsOn": ["not-a-job"]}"#, #"{"dependsOn": \#(tooMany)}"#,
                ]
                for options in badDependencies {
                    let response = try await submit(alice.token, options: options)
                    #expect(response.status == .badRequest, "\(options.prefix(60))")
                    #expect(response.errorCode == "invalid_depends_on", "\(options.prefix(60))")
                }
                for query in ["?priority=x", "?priority=01", "?dependsOn=nope"] {
                    let response = try await submit(alice.token, options: nil, query: query)
                    #expect(response.status == .badRequest, "\(query)")
                }
                // Another user's job: refused by the database, and nothing is left behind.
                let before = try FileManager.default.contentsOfDirectory(atPath: harness.storage.root.path).count
                let foreign = try await submit(mallory.token, options: #"{"dependsOn": ["\#(a)"]}"#)
                #expect(foreign.status == .badRequest)
                #expect(foreign.errorCode == "invalid_depends_on")
                #expect(try FileManager.default.contentsOfDirectory(atPath: harness.storage.root.path).count == before)
                // A re-OCR takes no scheduling options.
                let rerun = try await EngineTests.post(client, "/v1/jobs/\(a)/rerun", token: alice.token, json: #"{"options": {"priority": 1}}"#)
                #expect(rerun.status == .badRequest)
            }
        }
    }
}
