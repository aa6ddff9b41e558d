import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LectorAPI
import LectorCore
import Testing

@Suite("Long poll")
struct LongPollTests {
    @Test("a waiting request answers when the job ends, woken by NOTIFY")
    func answersWhenJobEnds() async throws {
        try await TestHarness.run(environment: ["LECTOR_LONG_POLL_MAX": "60"]) { harness in
            let user = try await harness.newUser()
            let image = try TestImages.render(["wait for me"])
            try await harness.application().test(.router) { client in
                let auth: HTTPFields = [.authorization: "Bearer \(user.token)"]
                let submitted = try await client.execute(
                    uri: "/v1/jobs", method: .post, headers: auth + [.contentType: "image/png"],
                    body: ByteBuffer(bytes: image))
                let id = try #require(submitted.json["id"] as? String)
                let uuid = try #require(UUID(uuidString: id))
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        let started = ContinuousClock.now
                        let response = try await client.execute(
                            uri: "/v1/jobs/\(id)/result?wait=60", method: .get, headers: auth)
                        #expect(response.status == .found)
                        // Woken by the end of the job, not by the 60 s timeout.
                        #expect(ContinuousClock.now - started < .seconds(30))
                    }
                    group.addTask {
                        // End the job by hand once the request is waiting.
                        while harness.dependencies.waiters.count == 0 { try await Task.sleep(for: .milliseconds(20)) }
                        let job = try #require(try await harness.jobs.claimNext(worker: "hand", leaseDuration: .seconds(60)))
                        #expect(job.id == uuid)
                        try await harness.storage.writeResult(id: uuid, fileName: "result.json", contents: Data("{}".utf8))
                        try await harness.jobs.end(job.lease, as: .finished)
                    }
                    try await group.waitForAll()
                }
                #expect(harness.dependencies.waiters.count == 0)
            }
        }
    }

    @Test("a waiting request answers 202 when its wait passes")
    func timesOut() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            let image = try TestImages.render(["nobody works on me"])
            try await harness.application().test(.router) { client in
                let auth: HTTPFields = [.authorization: "Bearer \(user.token)"]
                let submitted = try await client.execute(
                    uri: "/v1/jobs", method: .post, headers: auth + [.contentType: "image/png"],
                    body: ByteBuffer(bytes: image))
                let id = try #require(submitted.json["id"] as? String)
                let started = ContinuousClock.now
                let response = try await client.execute(uri: "/v1/jobs/\(id)/result?wait=1", method: .get, headers: auth)
                #expect(response.status == .accepted)
                #expect(response.headers[.retryAfter] == "1")
                #expect(ContinuousClock.now - started >= .milliseconds(900))
            }
        }
    }
}
