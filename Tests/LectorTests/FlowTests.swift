import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LectorAPI
import LectorCore
import Testing

@Suite("Job flow through HTTP")
struct FlowTests {
    @Test("submit, status, 202 while queued, worker runs, 302 to a file holding the words")
    func fullFlow() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            let image = try TestImages.render(["Lector reads this line", "Invoice 4217 total"])
            try await harness.application().test(.router) { client in
                var form = Multipart()
                form.add(name: "document", filename: "../../etc/scan.png", contentType: "image/png", data: image)
                form.add(name: "metadata", json: #"{"customer": "acme", "pages": [1, 2], "big": 12345678901234, "huge": 123456789012345678901234567890}"#)
                form.add(name: "options", json: #"{"lang": "eng"}"#)
                let submitted = try await client.execute(
                    uri: "/v1/jobs", method: .post,
                    headers: [.authorization: "Bearer \(user.token)", .contentType: form.contentType],
                    body: form.finished())
                #expect(submitted.status == .accepted)
                let idString = try #require(submitted.json["id"] as? String)
                let id = try #require(UUID(uuidString: idString))
                #expect(submitted.json["status"] as? String == "QUEUED")
                #expect(submitted.json["createdAt"] is String)
                #expect(submitted.headers[.location] == "/v1/jobs/\(idString)")
                #expect(submitted.headers[.retryAfter] == "1")
                let links = try #require(submitted.json["links"] as? [String: String])
                #expect(links["result"] == "/v1/jobs/\(idString)/result")

                // The folder is complete: document (under our name, not the client's) and metadata.
                let folder = harness.storage.folder(of: id)
                let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
                #expect(files == ["document.png", "metadata.json"])
                #expect(try Data(contentsOf: folder.appendingPathComponent("document.png")) == image)
                let folderMetadata = try String(contentsOf: folder.appendingPathComponent("metadata.json"), encoding: .utf8)
                #expect(folderMetadata.contains("123456789012345678901234567890"), "stored as given: \(folderMetadata)")
                #expect(folderMetadata.contains(#""documentName":"scan.png""#))

                let status = try await client.execute(
                    uri: "/v1/jobs/\(idString)", method: .get, headers: [.authorization: "Bearer \(user.token)"])
                #expect(status.status == .ok)
                #expect(status.json["status"] as? String == "QUEUED")
                let metadata = try #require(status.json["metadata"] as? [String: Any])
                #expect(metadata["customer"] as? String == "acme")
                #expect((metadata["big"] as? NSNumber)?.int64Value == 12345678901234)
                let document = try #require(status.json["document"] as? [String: Any])
                #expect(document["name"] as? String == "scan.png")
                #expect(document["contentType"] as? String == "image/png")
                let history = try #require(status.json["history"] as? [[String: Any]])
                #expect(history.map { $0["status"] as? String } == ["QUEUED"])

                // No worker yet: the result is not ready.
                let pending = try await client.execute(
                    uri: "/v1/jobs/\(idString)/result", method: .get, headers: [.authorization: "Bearer \(user.token)"])
                #expect(pending.status == .accepted)
                #expect(pending.headers[.retryAfter] == "1")
                #expect(pending.json["status"] as? String == "QUEUED")

                let finished = try await harness.withWorker {
                    try await client.execute(
                        uri: "/v1/jobs/\(idString)/result?wait=30", method: .get,
                        headers: [.authorization: "Bearer \(user.token)"])
                }
                #expect(finished.status == .found)
                let location = try #require(finished.headers[.location])
                #expect(location.hasPrefix("/files/\(idString)/result.json?expires="))

                // The link works without an API key and holds the words of the image.
                let file = try await client.execute(uri: location, method: .get)
                #expect(file.status == .ok)
                #expect(file.headers[.contentType]?.hasPrefix("application/json") == true)
                let result = try JSONDecoder().decode(ResultShape.self, from: Data(buffer: file.body))
                #expect(result.schemaVersion == 1)
                let words = Set(result.pages.flatMap { $0.lines.flatMap { $0.words.map(\.text) } })
                for expected in ["Lector", "reads", "this", "line", "Invoice", "4217", "total"] {
                    #expect(words.contains(expected), "missing \(expected) in \(words.sorted())")
                }
                #expect(result.pages.first?.width == 1200)
                let firstWord = try #require(result.pages.first?.lines.first?.words.first)
                #expect(firstWord.box.width > 0 && firstWord.confidence > 50)

                let text = try await client.execute(
                    uri: "/v1/jobs/\(idString)/result?format=txt", method: .get,
                    headers: [.authorization: "Bearer \(user.token)"])
                #expect(text.status == .found)
                let textFile = try await client.execute(uri: try #require(text.headers[.location]), method: .get)
                #expect(String(buffer: textFile.body).contains("Invoice 4217 total"))
                #expect(textFile.headers[.contentType]?.hasPrefix("text/plain") == true)

                let done = try await client.execute(
                    uri: "/v1/jobs/\(idString)", method: .get, headers: [.authorization: "Bearer \(user.token)"])
                let doneHistory = try #require(done.json["history"] as? [[String: Any]])
                #expect(doneHistory.map { $0["status"] as? String } == ["QUEUED", "IN_PROGRESS", "FINISHED"])
                #expect(done.json["status"] as? String == "FINISHED")
            }
        }
    }

    @Test("a raw body with the document's own content type, options in the query")
    func rawBodySubmit() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            let image = try TestImages.render(["Raw body upload"], format: "tiff")
            try await harness.application().test(.router) { client in
                let submitted = try await client.execute(
                    uri: "/v1/jobs?lang=eng&filename=page.tif", method: .post,
                    headers: [.authorization: "Bearer \(user.token)", .contentType: "application/octet-stream"],
                    body: ByteBuffer(bytes: image))
                #expect(submitted.status == .accepted)
                let id = try #require(submitted.json["id"] as? String)
                let status = try await client.execute(
                    uri: "/v1/jobs/\(id)", method: .get, headers: [.authorization: "Bearer \(user.token)"])
                let document = try #require(status.json["document"] as? [String: Any])
                #expect(document["contentType"] as? String == "image/tiff")
                #expect(document["name"] as? String == "page.tif")
                let result = try await harness.withWorker {
                    try await client.execute(
                        uri: "/v1/jobs/\(id)/result?format=txt", method: .get,
                        headers: [.authorization: "Bearer \(user.token)", HTTPField.Name("Prefer")!: "respond-async, wait=30"])
                }
                #expect(result.status == .found)
                #expect(result.headers[HTTPField.Name("Preference-Applied")!] == "wait=30")
                let text = try await client.execute(uri: try #require(result.headers[.location]), method: .get)
                #expect(String(buffer: text.body).contains("Raw body upload"))
            }
        }
    }

    @Test("a document that cannot be decoded ends in FAILURE with its reason")
    func failingDocument() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            // A PNG signature followed by garbage: accepted at submit (the bytes say PNG), unreadable by the engine.
            let truncated = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) + Data(repeating: 0x41, count: 200)
            try await harness.application().test(.router) { client in
                let submitted = try await client.execute(
                    uri: "/v1/jobs", method: .post,
                    headers: [.authorization: "Bearer \(user.token)", .contentType: "image/png"],
                    body: ByteBuffer(bytes: truncated))
                #expect(submitted.status == .accepted)
                let id = try #require(submitted.json["id"] as? String)
                let failed = try await harness.withWorker {
                    try await client.execute(
                        uri: "/v1/jobs/\(id)/result?wait=30", method: .get,
                        headers: [.authorization: "Bearer \(user.token)"])
                }
                #expect(failed.status == .conflict)
                #expect(failed.errorCode == "job_failed")
                let error = try #require(failed.json["error"] as? [String: Any])
                let reason = try #require(error["reason"] as? String)
                #expect(reason.contains("not a readable PNG"), "reason: \(reason)")

                let status = try await client.execute(
                    uri: "/v1/jobs/\(id)", method: .get, headers: [.authorization: "Bearer \(user.token)"])
                #expect(status.json["status"] as? String == "FAILURE")
                let history = try #require(status.json["history"] as? [[String: Any]])
                #expect(history.last?["reason"] as? String == reason)
            }
        }
    }
}

/// The parts of result.json the tests read.
struct ResultShape: Decodable {
    struct Box: Decodable { let x, y, width, height: Int }
    struct Word: Decodable { let text: String; let box: Box; let confidence: Double }
    struct Line: Decodable { let text: String; let box: Box; let words: [Word] }
    struct Page: Decodable { let number, width, height: Int; let lines: [Line] }
    let schemaVersion: Int
    let pages: [Page]
    let text: String
}
