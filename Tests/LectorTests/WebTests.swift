import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LectorAPI
import LectorCore
import LectorModel
import Testing

@Suite("Web page, job list, page previews")
struct WebTests {
    /// Submits `image` as `name` for `token`; returns the job's id.
    static func submit(_ client: some TestClientProtocol, token: String, name: String, image: Data) async throws -> String {
        var form = Multipart()
        form.add(name: "document", filename: name, contentType: "image/png", data: image)
        let response = try await client.execute(
            uri: "/v1/jobs", method: .post,
            headers: [.authorization: "Bearer \(token)", .contentType: form.contentType], body: form.finished())
        #expect(response.status == .accepted)
        return try #require(response.json["id"] as? String)
    }

    static func list(_ client: some TestClientProtocol, token: String, _ query: String) async throws -> TestResponse {
        try await client.execute(uri: "/v1/jobs?\(query)", method: .get, headers: [.authorization: "Bearer \(token)"])
    }

    @Test("GET /v1/jobs: newest first, keyset pages, status filter, only the caller's jobs, bad parameters are 400")
    func listJobs() async throws {
        try await TestHarness.run { harness in
            let alice = try await harness.newUser()
            let bob = try await harness.newUser()
            let image = try TestImages.render(["list"])
            try await harness.application().test(.router) { client in
                var submitted: [String] = []
                for index in 0..<5 {
                    submitted.append(try await Self.submit(client, token: alice.token, name: "page-\(index).png", image: image))
                }
                let bobs = try await Self.submit(client, token: bob.token, name: "bob.png", image: image)

                // One page with everything: newest first, Bob's job absent.
                let all = try await Self.list(client, token: alice.token, "limit=100")
                #expect(all.status == .ok)
                let jobs = try #require(all.json["jobs"] as? [[String: Any]])
                #expect(jobs.compactMap { $0["id"] as? String } == submitted.reversed())
                #expect(all.json["nextCursor"] == nil)
                let first = try #require(jobs.first)
                #expect(first["status"] as? String == "QUEUED")
                #expect((first["document"] as? [String: Any])?["name"] as? String == "page-4.png")
                #expect((first["links"] as? [String: String])?["self"] == "/v1/jobs/\(submitted[4])")
                #expect(first["endedAt"] == nil && first["startedAt"] == nil)

                // Pages of two: 2, 2, 1, the same order, no job twice.
                var paged: [String] = []
                var cursor: String?
                var pages = 0
                repeat {
                    let page = try await Self.list(client, token: alice.token, "limit=2" + (cursor.map { "&cursor=\($0)" } ?? ""))
                    #expect(page.status == .ok)
                    paged += (page.json["jobs"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
                    cursor = page.json["nextCursor"] as? String
                    pages += 1
                } while cursor != nil && pages < 10
                #expect(pages == 3)
                #expect(paged == submitted.reversed())

                // Status filter: one job failed (QUEUED → FAILURE is a legal move), with its reason.
                try await harness.client.query(
                    "INSERT INTO job_transitions (job_id, status, reason) VALUES (\(UUID(uuidString: submitted[1])!), 'FAILURE', 'the page was blank')",
                    logger: TestDatabase.logger)
                let failed = try await Self.list(client, token: alice.token, "status=FAILURE")
                let failedJobs = try #require(failed.json["jobs"] as? [[String: Any]])
                #expect(failedJobs.compactMap { $0["id"] as? String } == [submitted[1]])
                #expect(failedJobs.first?["reason"] as? String == "the page was blank")
                #expect(failedJobs.first?["endedAt"] is String)
                let queued = try await Self.list(client, token: alice.token, "status=QUEUED")
                #expect((queued.json["jobs"] as? [[String: Any]])?.count == 4)

                // Bob sees his job only.
                let bobsList = try await Self.list(client, token: bob.token, "")
                #expect((bobsList.json["jobs"] as? [[String: Any]])?.compactMap { $0["id"] as? String } == [bobs])
                // Alice's cursor does not open Bob's jobs to her, nor hers to him: it is a position, not a grant.
                let aliceCursor = try #require(try await Self.list(client, token: alice.token, "limit=1").json["nextCursor"] as? String)
                let crossed = try await Self.list(client, token: bob.token, "cursor=\(aliceCursor)")
                #expect(crossed.status == .ok)
                #expect(((crossed.json["jobs"] as? [[String: Any]]) ?? []).allSatisfy { ($0["id"] as? String) == bobs })

                // Bad parameters: 400 with a JSON error.
                let forged = Data("12.not-a-uuid".utf8).base64EncodedString()
                for (query, code) in [
                    ("cursor=nonsense!", "invalid_cursor"), ("cursor=\(forged)", "invalid_cursor"), ("cursor=", "invalid_cursor"),
                    ("limit=0", "invalid_limit"), ("limit=101", "invalid_limit"), ("limit=ten", "invalid_limit"),
                    ("status=DONE", "invalid_status"), ("page=2", "unknown_parameter"),
                ] {
                    let bad = try await Self.list(client, token: alice.token, query)
                    #expect(bad.status == .badRequest, "\(query)")
                    #expect(bad.errorCode == code, "\(query): \(bad.json)")
                    #expect(bad.headers[.contentType]?.hasPrefix("application/json") == true)
                }
                let anonymous = try await client.execute(uri: "/v1/jobs", method: .get)
                #expect(anonymous.status == .unauthorized)
            }
        }
    }

    @Test("a running job's page progress, recorded for the lease holder, shows in the list and stays once it ended")
    func progress() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            let image = try TestImages.render(["progress"])
            try await harness.application().test(.router) { client in
                let id = try await Self.submit(client, token: user.token, name: "long.png", image: image)
                let claimed = try #require(try await harness.jobs.claimNext(worker: "w/1", leaseDuration: .seconds(60)))
                #expect(claimed.id.uuidString.lowercased() == id)
                var job = try #require((try await Self.list(client, token: user.token, "").json["jobs"] as? [[String: Any]])?.first)
                #expect(job["status"] as? String == "IN_PROGRESS")
                #expect(job["startedAt"] is String)
                #expect(job["progress"] == nil, "no progress before the worker reports any")
                #expect(try await harness.jobs.reportProgress(claimed.lease, done: 2, total: 5))
                job = try #require((try await Self.list(client, token: user.token, "").json["jobs"] as? [[String: Any]])?.first)
                #expect(job["progress"] as? [String: Int] == ["pagesDone": 2, "pagesTotal": 5])
                // A stale attempt records nothing.
                let stale = Lease(jobID: claimed.lease.jobID, worker: claimed.lease.worker, attempt: claimed.lease.attempt + 1)
                #expect(try await harness.jobs.reportProgress(stale, done: 4, total: 5) == false)
                try await harness.jobs.end(claimed.lease, as: .failure, reason: "page 3 could not be decoded")
                job = try #require((try await Self.list(client, token: user.token, "").json["jobs"] as? [[String: Any]])?.first)
                #expect(job["progress"] as? [String: Int] == ["pagesDone": 2, "pagesTotal": 5])
                #expect(job["reason"] as? String == "page 3 could not be decoded")
                #expect(job["endedAt"] is String)
            }
        }
    }

    @Test("the list cursor: one spelling, round trip")
    func cursor() {
        let cursor = JobListCursor(createdAtMicros: 1_764_400_000_123_456, id: UUID())
        #expect(JobListCursor(token: cursor.token) == cursor)
        #expect(!cursor.token.contains("=") && !cursor.token.contains("+") && !cursor.token.contains("/"))
        #expect(JobListCursor(token: "") == nil)
        #expect(JobListCursor(token: Data("012.\(cursor.id.uuidString.lowercased())".utf8).base64EncodedString()) == nil)
        #expect(JobListCursor(token: Data("-1.\(cursor.id.uuidString.lowercased())".utf8).base64EncodedString()) == nil)
        #expect(JobListCursor(token: Data("12.\(cursor.id.uuidString)".utf8).base64EncodedString()) == nil)
    }

    @Test("page file names: page-N.jpg and thumb-N.jpg, one spelling")
    func pageFileNames() {
        for name in ["result.json", "result.pdf", "page-1.jpg", "thumb-12.jpg", "page-99999.jpg"] {
            #expect(ResultFiles.isResultFile(name), "\(name)")
        }
        for name in ["page-0.jpg", "page-01.jpg", "page-.jpg", "page-1.png", "page-1.jpg/..", "thumb-x.jpg", "page-100000.jpg",
                     "document.png", "metadata.json", ".page-1.jpg", "page--1.jpg"] {
            #expect(!ResultFiles.isResultFile(name), "\(name)")
        }
    }

    @Test("the worker writes each page's preview (long side at most 1600) and thumbnail; the API links them")
    func previews() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            // 2400 px wide: the preview is halved (2 × 2 averages) to 1200, the largest halving within 1600.
            let image = try TestImages.render(["Lector draws boxes over this page"], width: 2400)
            try await harness.application().test(.router) { client in
                let id = try await Self.submit(client, token: user.token, name: "wide.png", image: image)
                let auth: HTTPFields = [.authorization: "Bearer \(user.token)"]
                let pending = try await client.execute(uri: "/v1/jobs/\(id)/pages/1", method: .get, headers: auth)
                #expect(pending.status == .accepted)
                let finished = try await harness.withWorker {
                    try await client.execute(uri: "/v1/jobs/\(id)/result?wait=30", method: .get, headers: auth)
                }
                #expect(finished.status == .found)
                let folder = harness.storage.folder(of: try #require(UUID(uuidString: id)))
                let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { !$0.hasPrefix(".") }.sorted()
                // hOCR and the PDF only when a job lists them in `formats`; the pictures always.
                #expect(files == ["document.png", "metadata.json", "page-1.jpg", "result.json", "result.txt", "thumb-1.jpg"])

                for (size, file, longSide) in [("preview", "page-1.jpg", 1200), ("thumbnail", "thumb-1.jpg", 240)] {
                    let link = try await client.execute(uri: "/v1/jobs/\(id)/pages/1?size=\(size)", method: .get, headers: auth)
                    #expect(link.status == .found)
                    let location = try #require(link.headers[.location])
                    #expect(location.hasPrefix("/files/\(id)/\(file)?expires="))
                    let picture = try await client.execute(uri: location, method: .get)
                    #expect(picture.status == .ok)
                    #expect(picture.headers[.contentType] == "image/jpeg")
                    let bytes = Data(buffer: picture.body)
                    #expect(bytes.prefix(3) == Data([0xFF, 0xD8, 0xFF]))
                    let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("lector-\(UUID().uuidString).jpg")
                    defer { try? FileManager.default.removeItem(at: scratch) }
                    try bytes.write(to: scratch)
                    let size = try TestImages.output("/usr/bin/identify", ["-format", "%w %h", scratch.path])
                    let dimensions = size.split(separator: " ").compactMap { Int($0) }
                    #expect(dimensions.first == longSide, "\(file): \(size)")
                    // The page is 2400 × 160: the same shape, rounded.
                    #expect(abs(Double(dimensions.last ?? 0) - Double(longSide) * 160 / 2400) <= 1, "\(file): \(size)")
                }
                let missing = try await client.execute(uri: "/v1/jobs/\(id)/pages/2", method: .get, headers: auth)
                #expect(missing.status == .notFound)
                #expect(missing.errorCode == "page_unavailable")
                for bad in ["/v1/jobs/\(id)/pages/01", "/v1/jobs/\(id)/pages/0", "/v1/jobs/\(id)/pages/1?size=huge"] {
                    let answer = try await client.execute(uri: bad, method: .get, headers: auth)
                    #expect(answer.status == .badRequest, "\(bad)")
                }
                let stranger = try await harness.newUser()
                let hidden = try await client.execute(
                    uri: "/v1/jobs/\(id)/pages/1", method: .get, headers: [.authorization: "Bearer \(stranger.token)"])
                #expect(hidden.status == .notFound)
            }
        }
    }

    @Test("a 1-bit page and a small one get previews too (converted for JPEG, never enlarged)")
    func previewsOfOtherDepths() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            let grey = FileManager.default.temporaryDirectory.appendingPathComponent("lector-\(UUID().uuidString).png")
            let bilevel = FileManager.default.temporaryDirectory.appendingPathComponent("lector-\(UUID().uuidString).png")
            defer {
                try? FileManager.default.removeItem(at: grey)
                try? FileManager.default.removeItem(at: bilevel)
            }
            try TestImages.render(["one bit per pixel"], width: 1000).write(to: grey)
            try TestImages.runTool(TestImages.convert, [grey.path, "-type", "bilevel", "-depth", "1", "png:\(bilevel.path)"])
            // The PNG header's bit depth (byte 24; ImageMagick's identify reports 8 for it).
            let depth = try Data(contentsOf: bilevel)[24]
            #expect(depth == 1, "the test page is 1-bit: \(depth)")
            try await harness.application().test(.router) { client in
                let id = try await Self.submit(client, token: user.token, name: "bilevel.png", image: try Data(contentsOf: bilevel))
                let auth: HTTPFields = [.authorization: "Bearer \(user.token)"]
                let finished = try await harness.withWorker {
                    try await client.execute(uri: "/v1/jobs/\(id)/result?wait=30", method: .get, headers: auth)
                }
                #expect(finished.status == .found)
                let folder = harness.storage.folder(of: try #require(UUID(uuidString: id)))
                let preview = folder.appendingPathComponent("page-1.jpg")
                let size = try TestImages.output("/usr/bin/identify", ["-format", "%w %h", preview.path])
                #expect(size == "1000 160", "kept at its size: \(size)")
                let thumbnail = try TestImages.output("/usr/bin/identify", ["-format", "%w", folder.appendingPathComponent("thumb-1.jpg").path])
                #expect(thumbnail == "240")
            }
        }
    }

    @Test("a JPEG page read as it is is its own preview; one with EXIF, or preprocessed, is encoded again")
    func jpegPreviews() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            let jpeg = try TestImages.render(["a receipt photographed as a JPEG"], width: 1000, format: "jpg")
            // An EXIF segment (an empty TIFF directory) after the start marker: a browser would apply its orientation.
            let exif = Data(jpeg.prefix(2)) + Data([0xFF, 0xE1, 0x00, 0x12] + Array("Exif\0\0".utf8) + [0x4D, 0x4D, 0x00, 0x2A, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00])
                + jpeg.dropFirst(2)
            try await harness.application().test(.router) { client in
                let auth: HTTPFields = [.authorization: "Bearer \(user.token)"]
                var ids: [(id: String, document: Data, asIs: Bool)] = []
                for (document, options, asIs) in [(jpeg, nil, true), (exif, nil, false), (jpeg, #"{"operations": ["deskew"]}"#, false)] {
                    var form = Multipart()
                    form.add(name: "document", filename: "page.jpg", contentType: "image/jpeg", data: document)
                    if let options { form.add(name: "options", json: options) }
                    let response = try await client.execute(
                        uri: "/v1/jobs", method: .post, headers: auth + [.contentType: form.contentType], body: form.finished())
                    #expect(response.status == .accepted, "\(String(buffer: response.body))")
                    ids.append((try #require(response.json["id"] as? String), document, asIs))
                }
                let jobs = ids
                try await harness.withWorker {
                    for job in jobs {
                        let finished = try await client.execute(uri: "/v1/jobs/\(job.id)/result?wait=30", method: .get, headers: auth)
                        #expect(finished.status == .found)
                    }
                }
                for job in jobs {
                    let folder = harness.storage.folder(of: try #require(UUID(uuidString: job.id)))
                    let preview = folder.appendingPathComponent("page-1.jpg")
                    #expect((try Data(contentsOf: preview) == job.document) == job.asIs, "\(job)")
                    let size = try TestImages.output("/usr/bin/identify", ["-format", "%w", preview.path])
                    #expect(size == "1000")
                    let thumbnail = try TestImages.output("/usr/bin/identify", ["-format", "%w", folder.appendingPathComponent("thumb-1.jpg").path])
                    #expect(thumbnail == "240")
                }
            }
        }
    }

    @Test("the web page is served with a strict Content-Security-Policy, from the embedded copy of Web/")
    func webPage() async throws {
        try await TestHarness.run { harness in
            try await harness.application().test(.router) { client in
                let page = try await client.execute(uri: "/", method: .get)
                #expect(page.status == .ok)
                #expect(page.headers[.contentType] == "text/html; charset=utf-8")
                let policy = try #require(page.headers[HTTPField.Name("Content-Security-Policy")!])
                #expect(policy.contains("script-src 'self'") && !policy.contains("unsafe"))
                #expect(String(buffer: page.body).contains(#"<script type="module" src="/web/app.js"></script>"#))
                let script = try await client.execute(uri: "/web/app.js", method: .get)
                #expect(script.status == .ok)
                #expect(script.headers[.contentType] == "text/javascript; charset=utf-8")
                #expect(script.headers[HTTPField.Name("X-Content-Type-Options")!] == "nosniff")
                for missing in ["/web/nope.js", "/web/..%2Fopenapi.json", "/web/index.htm"] {
                    let answer = try await client.execute(uri: missing, method: .get)
                    #expect(answer.status == .notFound, "\(missing)")
                    #expect(answer.errorCode == "not_found")
                }
            }
        }
        // The binary's copy is the folder's (`make web` regenerates it).
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/LectorAPI/Web")
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
        #expect(names == ["api.js", "app.css", "app.js", "dom.js", "icon.svg", "index.html", "viewer.js"])
        for name in names {
            #expect(try Data(contentsOf: folder.appendingPathComponent(name)) == WebAssets.contents(of: name), "run `make web`: \(name)")
        }
    }
}
