import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
@testable import LectorAPI
import LectorCore
import NIOCore
import Testing

/// Batches and reuse of identical work (db/011), through the API on the real database, a real worker and
/// Tesseract; archives checked by Python's zipfile.
@Suite("Batches and reuse")
struct BatchTests {
    static func get(_ client: some TestClientProtocol, _ uri: String, token: String) async throws -> TestResponse {
        try await client.execute(uri: uri, method: .get, headers: [.authorization: "Bearer \(token)"])
    }

    static func postBatch(_ client: some TestClientProtocol, _ form: Multipart, token: String) async throws -> TestResponse {
        try await client.execute(
            uri: "/v1/batches", method: .post,
            headers: [.authorization: "Bearer \(token)", .contentType: form.contentType], body: form.finished())
    }

    static func submit(_ client: some TestClientProtocol, _ image: Data, options: String, token: String) async throws -> TestResponse {
        var form = Multipart()
        form.add(name: "document", filename: "again.png", contentType: "image/png", data: image)
        form.add(name: "options", json: options)
        return try await client.execute(
            uri: "/v1/jobs", method: .post,
            headers: [.authorization: "Bearer \(token)", .contentType: form.contentType], body: form.finished())
    }

    /// Runs Python's zipfile on `data`: checks every CRC and returns `{name: text}` of the entries.
    static func unzip(_ data: Data) throws -> [String: String] {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lector-\(UUID().uuidString).zip")
        try data.write(to: path)
        defer { try? FileManager.default.removeItem(at: path) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-c", """
            import json, sys, zipfile
            z = zipfile.ZipFile(sys.argv[1])
            assert z.testzip() is None, "bad CRC"
            print(json.dumps({i.filename: z.read(i).decode("utf-8") for i in z.infolist()}))
            """, path.path]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let bytes = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TestFailure("zipfile refused the archive") }
        return try #require(try JSONSerialization.jsonObject(with: bytes) as? [String: String])
    }

    @Test("a batch: one job per document, counts, long poll, a ZIP archive behind a signed link; then reuse")
    func batchFlow() async throws {
        try await TestHarness.run { harness in
            let alice = try await EngineTests.user(harness)
            let bob = try await EngineTests.user(harness)
            let one = try TestImages.render(["Batch page one"])
            let two = try TestImages.render(["Second batch page"])
            var form = Multipart()
            form.add(name: "options", json: #"{"lang": "eng", "mode": "document"}"#)
            form.add(name: "document", filename: "one.png", contentType: "image/png", data: one)
            form.add(name: "metadata", json: #"{"ref": 7}"#)
            form.add(name: "document", filename: "../two.png", contentType: "image/png", data: two)
            try await harness.application().test(.router) { [form] client in
                let created = try await Self.postBatch(client, form, token: alice.token)
                #expect(created.status == .accepted, "\(String(buffer: created.body))")
                let batch = try #require(created.json["id"] as? String)
                #expect(created.headers[.location] == "/v1/batches/\(batch)")
                let jobs = try #require(created.json["jobs"] as? [[String: Any]])
                #expect(jobs.map { $0["documentName"] as? String } == ["one.png", "two.png"])
                #expect(jobs.allSatisfy { $0["status"] as? String == "QUEUED" })
                let first = try #require(jobs.first?["id"] as? String)

                let queued = try await Self.get(client, "/v1/batches/\(batch)", token: alice.token)
                #expect(queued.status == .ok)
                #expect(queued.json["status"] as? String == "RUNNING")
                #expect((queued.json["counts"] as? [String: Int])?["QUEUED"] == 2)
                // Another user's batch does not exist for bob.
                #expect(try await Self.get(client, "/v1/batches/\(batch)", token: bob.token).errorCode == "batch_not_found")
                // No archive before every job has ended.
                #expect(try await Self.get(client, "/v1/batches/\(batch)/archive", token: alice.token).status == .accepted)

                // Each job is an ordinary job, naming its batch, with the shared options and metadata.
                let job = try await Self.get(client, "/v1/jobs/\(first)", token: alice.token)
                #expect(job.json["batch"] as? String == batch)
                #expect((job.json["metadata"] as? [String: Any])?["ref"] as? Int == 7)
                #expect((job.json["options"] as? [String: Any])?["mode"] as? String == "document")

                let ended = try await harness.withWorker(concurrency: 2) {
                    try await Self.get(client, "/v1/batches/\(batch)?wait=60", token: alice.token)
                }
                #expect(ended.json["status"] as? String == "ENDED", "\(String(buffer: ended.body))")
                #expect((ended.json["counts"] as? [String: Int])?["FINISHED"] == 2)
                #expect((ended.json["pagesDone"] as? Int ?? 0) >= 2)

                let archive = try await Self.get(client, "/v1/batches/\(batch)/archive", token: alice.token)
                #expect(archive.status == .found)
                let link = try #require(archive.headers[.location])
                #expect(link.hasPrefix("/archives/\(batch).zip?expires="))
                let zip = try await client.execute(uri: link, method: .get)
                #expect(zip.status == .ok)
                #expect(zip.headers[.contentType] == "application/zip")
                let entries = try Self.unzip(Data(buffer: zip.body))
                #expect(entries["0001-one.png/result.txt"]?.contains("Batch page one") == true, "\(entries.keys.sorted())")
                #expect(entries["0002-two.png/result.txt"]?.contains("Second batch page") == true)
                #expect(entries["0001-one.png/result.json"]?.contains("\"schemaVersion\"") == true)
                let manifestText = try #require(entries["manifest.json"])
                let manifest = try #require(try JSONSerialization.jsonObject(with: Data(manifestText.utf8)) as? [String: Any])
                #expect(manifest["batch"] as? String == batch)
                #expect((manifest["jobs"] as? [[String: Any]])?.map { $0["status"] as? String } == ["FINISHED", "FINISHED"])
                // The link is signed: a changed signature, or the link of another batch, is refused.
                let forged = link.replacingOccurrences(of: "signature=", with: "signature=0")
                #expect(try await client.execute(uri: forged, method: .get).status == .forbidden)
                let other = link.replacingOccurrences(of: batch, with: UUID().uuidString.lowercased())
                #expect(try await client.execute(uri: other, method: .get).status == .forbidden)

                // Reuse: the same document with the same options finishes at once with the batch job's results.
                let again = try await Self.submit(client, one, options: #"{"lang": "eng", "mode": "document"}"#, token: alice.token)
                #expect(again.status == .accepted)
                #expect(again.json["status"] as? String == "FINISHED")
                #expect(again.json["reusedFrom"] as? String == first)
                let reused = try #require(again.json["id"] as? String)
                let view = try await Self.get(client, "/v1/jobs/\(reused)", token: alice.token)
                #expect(view.json["reusedFrom"] as? String == first)
                #expect(view.json["pagesTotal"] as? Int == 1 && view.json["pagesDone"] as? Int == 1)
                let history = try #require(view.json["history"] as? [[String: Any]])
                #expect(history.map { $0["status"] as? String } == ["QUEUED", "IN_PROGRESS", "FINISHED"])
                #expect(history.last?["reason"] as? String == "reused the results of job \(first)")
                let text = try await Self.get(client, "/v1/jobs/\(reused)/result?format=txt", token: alice.token)
                let copied = try await client.execute(uri: try #require(text.headers[.location]), method: .get)
                #expect(String(buffer: copied.body).contains("Batch page one"))
                // A copy, not a link: deleting the source leaves the reused job's results whole.
                #expect(try await client.execute(
                    uri: "/v1/jobs/\(first)", method: .delete, headers: [.authorization: "Bearer \(alice.token)"]).status == .noContent)
                let still = try await Self.get(client, "/v1/jobs/\(reused)/result?format=txt", token: alice.token)
                #expect(try await client.execute(uri: try #require(still.headers[.location]), method: .get).status == .ok)
                // The archive reports the deleted job as such.
                let after = try await client.execute(
                    uri: try #require(try await Self.get(client, "/v1/batches/\(batch)/archive", token: alice.token).headers[.location]),
                    method: .get)
                let afterEntries = try Self.unzip(Data(buffer: after.body))
                #expect(afterEntries["0001-one.png/result.txt"] == nil)
                #expect(afterEntries["manifest.json"]?.contains("\"DELETED\"") == true)

                // Not reused: other options, `reuse: false`, another user.
                let other1 = try await Self.submit(client, two, options: #"{"lang": "eng"}"#, token: alice.token)
                #expect(other1.json["status"] as? String == "QUEUED")
                let other2 = try await Self.submit(client, two, options: #"{"lang": "eng", "mode": "document", "reuse": false}"#, token: alice.token)
                #expect(other2.json["status"] as? String == "QUEUED")
                #expect(other2.json["reusedFrom"] == nil)
                let other3 = try await Self.submit(client, two, options: #"{"lang": "eng", "mode": "document"}"#, token: bob.token)
                #expect(other3.json["status"] as? String == "QUEUED")
                let bad = try await Self.submit(client, two, options: #"{"reuse": "no"}"#, token: alice.token)
                #expect(bad.errorCode == "invalid_options")
            }
        }
    }

    @Test("a bad batch creates nothing, and its error names the document")
    func refusals() async throws {
        try await TestHarness.run { harness in
            let alice = try await EngineTests.user(harness)
            let image = try TestImages.render(["Fine page"])
            try await harness.application().test(.router) { client in
                // Job folders are named by their ids (the spool folder beside them is not one).
                func folders() throws -> Int {
                    try FileManager.default.contentsOfDirectory(atPath: harness.storage.root.path).filter { UUID(uuidString: $0) != nil }.count
                }
                let before = try folders()

                var mixed = Multipart()
                mixed.add(name: "document", filename: "good.png", contentType: "image/png", data: image)
                mixed.add(name: "document", filename: "notes.txt", contentType: "text/plain", data: Data("plain text".utf8))
                let refused = try await Self.postBatch(client, mixed, token: alice.token)
                #expect(refused.status == .unsupportedMediaType)
                #expect(refused.errorCode == "unsupported_document_type")
                let message = (refused.json["error"] as? [String: Any])?["message"] as? String ?? ""
                #expect(message.hasPrefix("document 2 ('notes.txt')"), "\(message)")

                var empty = Multipart()
                empty.add(name: "options", json: #"{"lang": "eng"}"#)
                #expect(try await Self.postBatch(client, empty, token: alice.token).errorCode == "missing_document")

                var badOptions = Multipart()
                badOptions.add(name: "document", filename: "good.png", contentType: "image/png", data: image)
                badOptions.add(name: "options", json: #"{"lang": "xx-none"}"#)
                #expect(try await Self.postBatch(client, badOptions, token: alice.token).errorCode == "invalid_options")

                var tooMany = Multipart()
                for _ in 0...JobStore.maxBatchJobs { tooMany.add(name: "document", filename: "a.png", contentType: "image/png", data: Data([0x89])) }
                let many = try await Self.postBatch(client, tooMany, token: alice.token)
                #expect(many.errorCode == "too_many_documents", "\(String(buffer: many.body))")

                // Direct uploads need object storage.
                let json = try await client.execute(
                    uri: "/v1/batches", method: .post,
                    headers: [.authorization: "Bearer \(alice.token)", .contentType: "application/json"],
                    body: ByteBuffer(string: #"{"uploads": ["x"]}"#))
                #expect(json.errorCode == "direct_uploads_unavailable")
                let shape = try await client.execute(
                    uri: "/v1/batches", method: .post,
                    headers: [.authorization: "Bearer \(alice.token)", .contentType: "application/json"],
                    body: ByteBuffer(string: #"{"uploads": [7]}"#))
                #expect(shape.errorCode == "invalid_upload")

                #expect(try await Self.get(client, "/v1/batches/not-a-uuid", token: alice.token).errorCode == "invalid_batch_id")
                #expect(try await Self.get(client, "/v1/batches/\(UUID())", token: alice.token).errorCode == "batch_not_found")
                #expect(try await Self.get(client, "/v1/batches/\(UUID())?size=1", token: alice.token).errorCode == "unknown_parameter")

                // Nothing was stored by any refused batch.
                #expect(try folders() == before)
                let rows = try await harness.client.query("SELECT count(*) FROM jobs WHERE owner_id = \(alice.id)")
                for try await count in rows.decode(Int.self) { #expect(count == 0) }
            }
        }
    }

    @Test("cancelling a batch: queued jobs end at once, a running one's worker is asked; an ended batch is 409")
    func cancel() async throws {
        try await TestHarness.run { harness in
            let alice = try await EngineTests.user(harness)
            let image = try TestImages.render(["Cancel me"])
            var form = Multipart()
            for index in 1...3 { form.add(name: "document", filename: "p\(index).png", contentType: "image/png", data: image) }
            form.add(name: "options", json: #"{"reuse": false}"#)
            try await harness.application().test(.router) { [form] client in
                let created = try await Self.postBatch(client, form, token: alice.token)
                let batch = try #require(created.json["id"] as? String)
                // One job is running (claimed by hand: no worker will end it).
                let running = try #require(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60)))

                let cancelled = try await client.execute(
                    uri: "/v1/batches/\(batch)/cancel", method: .post, headers: [.authorization: "Bearer \(alice.token)"])
                #expect(cancelled.status == .accepted)
                let counts = try #require(cancelled.json["counts"] as? [String: Int])
                #expect(counts["FAILURE"] == 2 && counts["IN_PROGRESS"] == 1, "\(counts)")
                #expect(try await harness.jobs.cancelRequested([running.id]) == [running.id])

                // Its worker ends it as cancelled; then the batch has nothing left to cancel.
                try await harness.jobs.end(running.lease, as: .failure, reason: JobStore.cancelledReason)
                let again = try await client.execute(
                    uri: "/v1/batches/\(batch)/cancel", method: .post, headers: [.authorization: "Bearer \(alice.token)"])
                #expect(again.status == .conflict)
                #expect(again.errorCode == "batch_ended")
                let view = try await Self.get(client, "/v1/batches/\(batch)", token: alice.token)
                #expect(view.json["status"] as? String == "ENDED")
                let jobs = try #require(view.json["jobs"] as? [[String: Any]])
                #expect(jobs.allSatisfy { $0["reason"] as? String == "cancelled" })
            }
        }
    }

    @Test("reuse takes only the fleet's current engine, undeleted, same options, same owner")
    func reuseRules() async throws {
        try await TestHarness.run { harness in
            let owner = try await QueueTests.owner(harness)
            var job = QueueTests.makeJob(owner: owner)
            job.sha256 = Array(repeating: 7, count: 32)
            try await harness.jobs.create(job)
            let claimed = try #require(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60)))
            try await harness.jobs.end(claimed.lease, as: .finished, pages: 1, engineVersion: "engine-a")
            func find(_ options: String = #"{"lang":"eng"}"#, owner: Int64? = nil) async throws -> UUID? {
                try await harness.jobs.reusableJob(
                    ownerID: owner ?? job.ownerID, sha256: job.sha256, optionsJSON: options, maxAgeDays: nil)?.jobID
            }
            // No worker announced an engine yet.
            #expect(try await find() == nil)
            try await harness.jobs.announceEngine("engine-a")
            #expect(try await find() == job.id)
            // jsonb equality: the order of members does not matter, their values do.
            #expect(try await find(#"{"lang":"deu"}"#) == nil)
            #expect(try await find(owner: try await QueueTests.owner(harness)) == nil)
            // A newer engine announced: the old results are no longer reused; announced again, they are.
            try await harness.jobs.announceEngine("engine-b")
            #expect(try await find() == nil)
            try await harness.jobs.announceEngine("engine-a")
            #expect(try await find() == job.id)
            // A reused job can itself be reused, and says where its results came from.
            var copy = QueueTests.makeJob(owner: owner)
            copy.sha256 = job.sha256
            let source = try #require(try await harness.jobs.reusableJob(
                ownerID: owner, sha256: job.sha256, optionsJSON: #"{"lang":"eng"}"#, maxAgeDays: 30))
            #expect(try await harness.jobs.create(copy, idempotencyKey: nil, reusing: source).reused)
            let (record, history) = try #require(try await harness.jobs.job(copy.id, ownerID: owner))
            #expect(record.reusedFrom == job.id)
            #expect(record.pagesDone == 1 && record.pagesTotal == 1, "the source's page count: \(String(describing: record.pagesTotal))")
            #expect(history.map(\.status) == [.queued, .inProgress, .finished])
            #expect(try await harness.jobs.claimNext(worker: "w", leaseDuration: .seconds(60)) == nil)
            // The source is checked again when the job is created: another owner's, or one deleted meanwhile,
            // is not reused, and the job is queued as any other.
            let stranger = try await QueueTests.owner(harness)
            var theirs = QueueTests.makeJob(owner: stranger)
            theirs.sha256 = job.sha256
            #expect(try await harness.jobs.create(theirs, idempotencyKey: nil, reusing: source).reused == false)
            #expect(try #require(try await harness.jobs.job(theirs.id, ownerID: stranger)).0.status == .queued)
            // Deleted jobs are never reused.
            #expect(try await harness.jobs.delete(job.id, ownerID: owner) == .deleted)
            #expect(try await harness.jobs.delete(copy.id, ownerID: owner) == .deleted)
            #expect(try await find() == nil)
            var late = QueueTests.makeJob(owner: owner)
            late.sha256 = job.sha256
            #expect(try await harness.jobs.create(late, idempotencyKey: nil, reusing: source).reused == false)
            #expect(try #require(try await harness.jobs.job(late.id, ownerID: owner)).0.status == .queued)
        }
    }

    @Test("a ZIP past the 32-bit limits takes ZIP64 records, and Python's zipfile reads it whole")
    func zip64() throws {
        // A threshold of 100 bytes instead of 4 GiB: the same records, without writing gigabytes.
        var zip = ZipArchive(zip64Threshold: 100)
        var archive = ByteBuffer()
        var expected: [String: String] = [:]
        for index in 0..<5 {
            let text = String(repeating: "line \(index) of Lector's archive\n", count: 3)
            expected["\(index)/result.txt"] = text
            var entry = try zip.entry(name: "\(index)/result.txt", contents: Data(text.utf8))
            archive.writeBuffer(&entry)
        }
        var end = zip.finish()
        archive.writeBuffer(&end)
        #expect(try Self.unzip(Data(buffer: archive)) == expected)
        // The folder names of an archive: no separators, no names Windows refuses, no dot names.
        #expect(BatchesController.entryName("a/b\\c:d<e>f\"g|h?i*j") == "a_b_c_d_e_f_g_h_i_j")
        #expect(BatchesController.entryName("..") == "document")
        #expect(BatchesController.entryName("scan.png") == "scan.png")
    }
}
