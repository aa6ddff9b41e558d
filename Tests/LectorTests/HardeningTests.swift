import Foundation
import Hummingbird
import HummingbirdTesting
@testable import LectorAPI
import LectorCore
@testable import LectorOCR
import LectorModel
import NIOCore
import NIOPosix
import Testing

/// The defects of the attack pass (issue: hardening), each checked against a running API or worker.
@Suite("Hardening: uploads, timeouts, full storage, errors, leftovers")
struct HardeningTests {
    // MARK: the multipart parser

    /// Collects what the parser hands out.
    final class Collector: MultipartPartConsumer {
        var parts: [(headers: [String: String], body: [UInt8])] = []
        func beginPart(headers: [String: String]) { parts.append((headers, [])) }
        func partData(_ bytes: UnsafeRawBufferPointer) { parts[parts.count - 1].body.append(contentsOf: bytes) }
        func endPart() {}
    }

    @Test("the streaming multipart parser gives the same parts however the body is split, on hostile bytes too")
    func multipartSplits() throws {
        let boundary = "b0undary"
        // Bytes that look like delimiters without being one: CRs, CRLF--, the boundary's prefix, its full
        // text not preceded by CRLF, and a CRLF-- before a longer boundary-like word.
        var document: [UInt8] = []
        for index in 0..<3000 {
            switch index % 5 {
            case 0: document += Array("\r\r\n\r\n--b0und".utf8)
            case 1: document += Array("--b0undary\r\n".utf8)
            case 2: document += [0x0D, UInt8(index % 256), 0x0A, 0x2D]
            case 3: document += Array("\r\n-b0undary".utf8)
            default: document += Array("\r\n--b0undar".utf8)
            }
        }
        var body = Array("preamble\r\n--\(boundary)\r\nContent-Disposition: form-data; name=\"document\"; filename=\"a.png\"\r\n\r\n".utf8)
        body += document
        body += Array("\r\n--\(boundary)\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{\"a\": 1}\r\n--\(boundary)--\r\nepilogue".utf8)
        var generator = SystemRandomNumberGenerator()
        for round in 0..<40 {
            var parser = MultipartStreamParser(boundary: boundary)
            let collector = Collector()
            var offset = 0
            while offset < body.count {
                let size = round == 0 ? 1 : Int.random(in: 1...4096, using: &generator)
                let end = min(body.count, offset + size)
                try body[offset..<end].withUnsafeBytes { try parser.feed($0, into: collector) }
                offset = end
            }
            try parser.finish()
            #expect(collector.parts.count == 2)
            #expect(collector.parts[0].headers["content-disposition"]?.contains("name=\"document\"") == true)
            #expect(collector.parts[0].body == document)
            #expect(collector.parts[1].body == Array("{\"a\": 1}".utf8))
        }
        // Cut short: no closing delimiter.
        var parser = MultipartStreamParser(boundary: boundary)
        try body[0..<(body.count - 20)].withUnsafeBytes { try parser.feed($0, into: Collector()) }
        #expect(throws: MultipartStreamParser.Failure.incomplete) { try parser.finish() }
    }

    // MARK: uploads streamed to disk, and the cap on uploads in flight

    @Test("an upload is spooled and moved into its job folder; a refused upload leaves no file behind")
    func uploadsLeaveNothing() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            let auth: HTTPFields = [.authorization: "Bearer \(user.token)"]
            let image = try TestImages.render(["spooled"])
            try await harness.application().test(.router) { client in
                var form = Multipart()
                form.add(name: "document", filename: "a.png", data: image)
                var headers = auth
                headers[.contentType] = form.contentType
                let accepted = try await client.execute(uri: "/v1/jobs", method: .post, headers: headers, body: form.finished())
                #expect(accepted.status == .accepted)
                let id = try #require(accepted.json["id"] as? String)
                let stored = try Data(contentsOf: harness.storage.root.appendingPathComponent("\(id)/document.png"))
                #expect(stored == image)

                // Refused after the document was received: an unknown part.
                var bad = Multipart()
                bad.add(name: "document", filename: "a.png", data: image)
                bad.add(name: "surprise", json: "{}")
                headers[.contentType] = bad.contentType
                let refused = try await client.execute(uri: "/v1/jobs", method: .post, headers: headers, body: bad.finished())
                #expect(refused.status == .badRequest)
                #expect(refused.errorCode == "invalid_multipart")
                let spool = try FileManager.default.contentsOfDirectory(atPath: harness.storage.spoolDirectory)
                #expect(spool.isEmpty, "\(spool)")
            }
        }
    }

    @Test("beyond the cap on uploads in flight, a submit is answered 503 with Retry-After before its body is read")
    func uploadCap() async throws {
        try await TestHarness.run(environment: ["LECTOR_MAX_UPLOADS_IN_FLIGHT": "1"]) { harness in
            let user = try await harness.newUser()
            try await harness.application().test(.live) { client in
                let port = try #require(client.port)
                // One upload held open: its head and part of its body.
                let held = try RawConnection(port: port)
                try held.send("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(user.token)\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n")
                try held.send(String(repeating: "x", count: 1000))
                try await Task.sleep(for: .milliseconds(500))
                let second = try await client.execute(
                    uri: "/v1/jobs", method: .post,
                    headers: [.authorization: "Bearer \(user.token)", .contentType: "image/png"],
                    body: ByteBuffer(bytes: try TestImages.render(["second"])))
                #expect(second.status == .serviceUnavailable)
                #expect(second.errorCode == "too_many_uploads")
                #expect(second.headers[.retryAfter] != nil)
                held.close()
            }
        }
    }

    // MARK: timeouts and the HTTP parser's errors

    @Test("a half-sent head is closed after the header timeout; a trickled body is answered 408 in JSON")
    func slowClients() async throws {
        let environment = [
            "LECTOR_HTTP_HEADER_TIMEOUT": "1", "LECTOR_HTTP_MIN_BODY_RATE": "10000", "LECTOR_HTTP_RATE_WINDOW": "1",
        ]
        try await TestHarness.run(environment: environment) { harness in
            let user = try await harness.newUser()
            try await harness.application().test(.live) { client in
                let port = try #require(client.port)
                let half = try RawConnection(port: port)
                try half.send("GET /healthz HTTP/1.1\r\nHost: x\r\n")
                let closedHalf = try await half.readUntilClosed(timeout: 15)
                #expect(closedHalf.closed)
                #expect(closedHalf.text.isEmpty)

                let trickle = try RawConnection(port: port)
                try trickle.send("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(user.token)\r\nContent-Type: image/png\r\nContent-Length: 1000000\r\n\r\n")
                for _ in 0..<40 where !trickle.peerClosed {
                    try? trickle.send("xxxxxxxxxx")
                    try await Task.sleep(for: .milliseconds(200))
                }
                let answer = try await trickle.readUntilClosed(timeout: 15)
                #expect(answer.text.hasPrefix("HTTP/1.1 408"), "\(answer.text.prefix(200))")
                #expect(answer.text.contains("\"request_timeout\""))
            }
        }
    }

    @Test("a long head and the body's start in one read: the connection is not cut at the head timeout")
    func longHeadWithBody() async throws {
        try await TestHarness.run(environment: ["LECTOR_HTTP_HEADER_TIMEOUT": "1"]) { harness in
            let user = try await harness.newUser()
            let image = try TestImages.render(["a long head"])
            try await harness.application().test(.live) { client in
                let port = try #require(client.port)
                let connection = try RawConnection(port: port)
                // A 6 KB head (a long header) and 8 KB of body in one send: NIO reads them into one buffer, whose
                // blank line is not among its last 4 KB (the timer once looked only there).
                let padding = String(repeating: "p", count: 6000)
                let body = Array(image + Data(count: 24_000))  // bytes after a PNG's end are stored as sent
                let head = Array(("POST /v1/jobs?filename=long.png HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(user.token)\r\n"
                    + "X-Padding: \(padding)\r\nContent-Type: image/png\r\nContent-Length: \(body.count)\r\n\r\n").utf8)
                try connection.sendBytes(head + body[0..<8000])
                // The rest trickles in well above the minimum rate, for longer than the head timeout.
                var offset = 8000
                while offset < body.count {
                    try await Task.sleep(for: .milliseconds(150))
                    try connection.sendBytes(Array(body[offset..<min(body.count, offset + 1500)]))
                    offset += 1500
                }
                let answer = try await connection.readUntil(timeout: 15) { $0.contains("\r\n\r\n") && $0.contains("}") }
                #expect(answer.hasPrefix("HTTP/1.1 202"), "\(answer.prefix(200))")
                connection.close()
            }
        }
    }

    @Test("errors of the HTTP parser (oversized head, invalid request) are answered with a JSON body")
    func parserErrorsAreJSON() async throws {
        try await TestHarness.run { harness in
            try await harness.application().test(.live) { client in
                let port = try #require(client.port)
                let long = try RawConnection(port: port)
                try long.send("GET /healthz?\(String(repeating: "a", count: 120_000)) HTTP/1.1\r\nHost: x\r\n\r\n")
                let longAnswer = try await long.readUntilClosed(timeout: 15)
                #expect(longAnswer.text.hasPrefix("HTTP/1.1 431"), "\(longAnswer.text.prefix(200))")
                #expect(longAnswer.text.contains("\"request_header_too_large\""))

                let header = try RawConnection(port: port)
                try header.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "b", count: 120_000))\r\n\r\n")
                let headerAnswer = try await header.readUntilClosed(timeout: 15)
                #expect(headerAnswer.text.hasPrefix("HTTP/1.1 431"), "\(headerAnswer.text.prefix(200))")

                let garbage = try RawConnection(port: port)
                try garbage.send("GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
                let garbageAnswer = try await garbage.readUntilClosed(timeout: 15)
                #expect(garbageAnswer.text.hasPrefix("HTTP/1.1 400"), "\(garbageAnswer.text.prefix(200))")
                #expect(garbageAnswer.text.contains("application/json"))
                #expect(garbageAnswer.text.contains("\"malformed_request\""))
            }
        }
    }

    // MARK: client input the database would refuse

    @Test("a metadata number that jsonb cannot hold is a 400 at parse time; data errors of the database are 400s")
    func numbersBeyondJSONB() async throws {
        #expect(JSONValue.firstNumberBeyondPostgres(in: Array(#"{"a": 1e-20000}"#.utf8)) != nil)
        #expect(JSONValue.firstNumberBeyondPostgres(in: Array(#"{"a": 1e200000}"#.utf8)) != nil)
        #expect(JSONValue.firstNumberBeyondPostgres(in: Array(#"{"a": "1e-20000", "b": 1.5e300, "c": -0.001}"#.utf8)) == nil)
        try await TestHarness.run { harness in
            // What the parser now refuses, the database refuses too: the check is not stricter than jsonb.
            await #expect(throws: (any Error).self) {
                try await harness.client.query("SELECT '{\"a\": 1e-20000}'::jsonb", logger: TestDatabase.logger)
            }
            let user = try await harness.newUser()
            try await harness.application().test(.router) { client in
                var form = Multipart()
                form.add(name: "document", filename: "a.png", data: try TestImages.render(["x"]))
                form.add(name: "metadata", json: #"{"tiny": 1e-20000}"#)
                let response = try await client.execute(
                    uri: "/v1/jobs", method: .post,
                    headers: [.authorization: "Bearer \(user.token)", .contentType: form.contentType], body: form.finished())
                #expect(response.status == .badRequest)
                #expect(response.errorCode == "invalid_metadata")
            }
            // A data error raised by the database itself (bypassing the parser) maps to 400, not 503.
            do {
                try await harness.client.query("SELECT '{\"a\": 1e-20000}'::jsonb", logger: TestDatabase.logger)
                Issue.record("jsonb took the number")
            } catch {
                let answer = ErrorMiddleware<LectorRequestContext>.databaseError(error, logger: TestDatabase.logger)
                #expect(answer.status == .badRequest)
                #expect(answer.code == .invalidValue)
            }
        }
    }

    // MARK: a full disk

    @Test(
        "storage full: submits 507, /readyz says so, workers stop claiming instead of failing jobs, then resume",
        .enabled(if: getuid() == 0, "mounting a small tmpfs needs root"))
    func fullStorage() async throws {
        let mount = FileManager.default.temporaryDirectory.appendingPathComponent("lector-full-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: mount, withIntermediateDirectories: true)
        try TestImages.runTool("/bin/mount", ["-t", "tmpfs", "-o", "size=8m,nr_inodes=400", "tmpfs", mount.path])
        defer {
            try? TestImages.runTool("/bin/umount", ["-l", mount.path])
            try? FileManager.default.removeItem(at: mount)
        }
        let root = mount.appendingPathComponent("storage")
        let environment = [
            "LECTOR_STORAGE_ROOT": root.path, "LECTOR_STORAGE_RESERVE_BYTES": "2000000", "LECTOR_STORAGE_RESERVE_INODES": "20",
        ]
        try await TestHarness.run(environment: environment) { harness in
            let user = try await harness.newUser()
            let auth: HTTPFields = [.authorization: "Bearer \(user.token)", .contentType: "image/png"]
            let image = try TestImages.render(["full disk"])
            try await harness.application().test(.router) { client in
                let queued = try await client.execute(uri: "/v1/jobs", method: .post, headers: auth, body: ByteBuffer(bytes: image))
                #expect(queued.status == .accepted)
                let id = try #require((queued.json["id"] as? String).flatMap(UUID.init(uuidString:)))

                // Fill the space: a ballast file leaves less than the reserve.
                let ballast = mount.appendingPathComponent("ballast")
                try Data(count: 6_500_000).write(to: ballast)
                try await Task.sleep(for: .milliseconds(1100))  // the health verdict is kept for a second
                let refused = try await client.execute(uri: "/v1/jobs", method: .post, headers: auth, body: ByteBuffer(bytes: image))
                #expect(refused.status.code == 507)
                #expect(refused.errorCode == "storage_full")
                let ready = try await client.execute(uri: "/readyz", method: .get)
                #expect(ready.status == .serviceUnavailable)
                #expect(ready.json["storage"] as? String == "full")

                // A worker does not claim the queued job while storage is full...
                try await harness.withWorker {
                    try await Task.sleep(for: .seconds(2))
                    let state = try await harness.jobs.state(of: id, ownerID: try await harness.ownerID(of: id))
                    #expect(state?.status == .queued)
                    #expect(try await harness.attempts(of: id) == 0)
                    // ...and runs it once there is room again.
                    try FileManager.default.removeItem(at: ballast)
                    let deadline = ContinuousClock.now + .seconds(60)
                    while ContinuousClock.now < deadline {
                        if try await harness.jobs.state(of: id, ownerID: try await harness.ownerID(of: id))?.status == .finished { break }
                        try await Task.sleep(for: .milliseconds(200))
                    }
                    #expect(try await harness.jobs.state(of: id, ownerID: try await harness.ownerID(of: id))?.status == .finished)
                }

                // Out of inodes: 507 as well, never a 500.
                var index = 0
                while index < 1000, (try? Data().write(to: mount.appendingPathComponent("inode-\(index)"))) != nil { index += 1 }
                try await Task.sleep(for: .milliseconds(1100))
                let noInodes = try await client.execute(uri: "/v1/jobs", method: .post, headers: auth, body: ByteBuffer(bytes: image))
                #expect(noInodes.status.code == 507)
            }
        }
    }

    @Test("a write that finds the disk full is 507, not a 500, even below the reserve check")
    func enospcDuringUpload() async throws {
        let error = StorageError(errno: ENOSPC, doing: "write an upload")
        #expect(error.kind == .full)
        let answer = ErrorMiddleware<LectorRequestContext>.storageError(error, logger: TestDatabase.logger)
        #expect(answer.status.code == 507)
        #expect(StorageError(errno: EIO, doing: "x").kind == .unavailable)
        #expect(StorageError(errno: ENOENT, doing: "x").isTransient == false)
        let foundation = StorageError.from(CocoaError(.fileWriteOutOfSpace, userInfo: [NSUnderlyingErrorKey: NSError(domain: NSPOSIXErrorDomain, code: Int(ENOSPC))]), doing: "x")
        #expect(foundation.kind == .full)
    }

    // MARK: leftovers

    @Test("the sweeper removes old uploads, staging folders, orphan job folders and dead workers' scratch folders")
    func sweeper() async throws {
        try await TestHarness.run { harness in
            let storage = harness.storage
            let fm = FileManager.default
            let old = Date(timeIntervalSinceNow: -7200)
            func age(_ url: URL) throws { try fm.setAttributes([.modificationDate: old], ofItemAtPath: url.path) }

            let spool = URL(fileURLWithPath: storage.spoolDirectory)
            try fm.createDirectory(at: spool, withIntermediateDirectories: true)
            let oldUpload = spool.appendingPathComponent("a.upload"), newUpload = spool.appendingPathComponent("b.upload")
            try Data([1]).write(to: oldUpload)
            try Data([1]).write(to: newUpload)
            try age(oldUpload)
            let staging = storage.root.appendingPathComponent(".staging-\(UUID().uuidString.lowercased())")
            try fm.createDirectory(at: staging, withIntermediateDirectories: true)
            try age(staging)
            let orphan = UUID(), youngOrphan = UUID()
            try await storage.createJobFolder(id: orphan, documentFileName: "document.png", document: Data([1]), metadataJSON: Data("{}".utf8))
            try await storage.createJobFolder(id: youngOrphan, documentFileName: "document.png", document: Data([1]), metadataJSON: Data("{}".utf8))
            try age(storage.folder(of: orphan))
            // A real job's folder, just as old, stays.
            let user = try await harness.newUser()
            let owner = try await harness.ownerID(ofUserWithKey: user.keyID)
            let real = UUID()
            try await storage.createJobFolder(id: real, documentFileName: "document.png", document: Data([1]), metadataJSON: Data("{}".utf8))
            _ = try await harness.jobs.create(NewJob(
                id: real, ownerID: owner, documentName: "a", contentType: "image/png", sizeBytes: 1,
                sha256: Array(repeating: 0, count: 32), optionsJSON: "{}", metadataJSON: "{}"))
            try age(storage.folder(of: real))

            let sweeper = StorageSweeper(storage: storage, jobs: harness.jobs, logger: TestDatabase.logger)
            let removed = try await sweeper.sweep()
            #expect(removed == StorageSweeper.Removed(uploads: 1, staging: 1, orphans: 1))
            #expect(!fm.fileExists(atPath: oldUpload.path) && fm.fileExists(atPath: newUpload.path))
            #expect(!fm.fileExists(atPath: staging.path))
            #expect(!fm.fileExists(atPath: storage.folder(of: orphan).path))
            #expect(fm.fileExists(atPath: storage.folder(of: youngOrphan).path))
            #expect(fm.fileExists(atPath: storage.folder(of: real).path))
            // A second sweeper finds nothing more to do.
            #expect(try await sweeper.sweep().total == 0)

            // Scratch folders: a dead process's old folder goes; ours stays.
            let temp = fm.temporaryDirectory.appendingPathComponent("lector-scratch-test-\(UUID().uuidString)")
            try fm.createDirectory(at: temp, withIntermediateDirectories: true)
            defer { try? fm.removeItem(at: temp) }
            let dead = Process()
            dead.executableURL = URL(fileURLWithPath: "/bin/true")
            try dead.run()
            dead.waitUntilExit()
            let deadFolder = temp.appendingPathComponent("lector-scratch-\(dead.processIdentifier)-pdf-x")
            let liveFolder = temp.appendingPathComponent("lector-scratch-\(getpid())-pdf-y")
            for folder in [deadFolder, liveFolder] {
                try fm.createDirectory(at: folder, withIntermediateDirectories: true)
                try age(folder)
            }
            #expect(ScratchFolder.sweep(olderThan: 60, directory: temp) == 1)
            #expect(!fm.fileExists(atPath: deadFolder.path) && fm.fileExists(atPath: liveFolder.path))
        }
    }

    // MARK: work bounded by content

    @Test("tiny and blank pages cost no detector run; a document's pixel and time budgets fail the job with a reason")
    func documentBudgets() throws {
        // 60 tiny pages and one blank page, read as scenes: all empty, and the detector was never loaded.
        let tiff = try TestImages.multiPageTIFF(pages: 60, width: 8, height: 8, noise: true)
        let engine = TesseractEngine(dataPath: nil, limits: OCRLimits(maxPagePixels: 20_000_000, maxPages: 200))
        let result = try engine.recognize(OCRDocument(data: tiff, type: .tiff), options: OCROptions(lang: "eng", mode: .scene), cancellation: OCRCancellation())
        #expect(result.pages.count == 60)
        #expect(result.pages.allSatisfy { $0.lines.isEmpty })
        #expect(engine.loadedDetectors == 0)
        let blank = try TestImages.multiPageTIFF(pages: 1, width: 800, height: 600, noise: false)
        _ = try engine.recognize(OCRDocument(data: blank, type: .tiff), options: OCROptions(lang: "eng", mode: .scene), cancellation: OCRCancellation())
        #expect(engine.loadedDetectors == 0)

        // Pixels: 3 pages of 100 × 100 against a budget of 25,000.
        let three = try TestImages.multiPageTIFF(pages: 3, width: 100, height: 100, noise: true)
        let small = TesseractEngine(dataPath: nil, limits: OCRLimits(maxPagePixels: 20_000_000, maxPages: 200, maxDocumentPixels: 25_000))
        #expect {
            try small.recognize(OCRDocument(data: three, type: .tiff), options: OCROptions(lang: "eng"), cancellation: OCRCancellation())
        } throws: { error in
            (error as? OCRError)?.kind == .limitExceeded && (error as? OCRError)?.message.contains("LECTOR_MAX_DOCUMENT_PIXELS") == true
        }

        // Time: a budget that has passed before the first page.
        let page = try TestImages.render(["time budget"])
        let hurried = TesseractEngine(dataPath: nil, limits: OCRLimits(maxPagePixels: 20_000_000, maxPages: 5, maxDocumentTime: .zero))
        #expect {
            try hurried.recognize(OCRDocument(data: page, type: .png), options: OCROptions(lang: "eng"), cancellation: OCRCancellation())
        } throws: { error in
            (error as? OCRError)?.kind == .limitExceeded && (error as? OCRError)?.message.contains("LECTOR_MAX_DOCUMENT_SECONDS") == true
        }
    }
}

extension TestHarness {
    func ownerID(of job: UUID) async throws -> Int64 {
        let rows = try await client.query("SELECT owner_id FROM jobs WHERE id = \(job)", logger: TestDatabase.logger)
        for try await owner in rows.decode(Int64.self) { return owner }
        throw TestFailure("no job \(job)")
    }

    func ownerID(ofUserWithKey key: Int64) async throws -> Int64 {
        let rows = try await client.query("SELECT user_id FROM api_keys WHERE id = \(key)", logger: TestDatabase.logger)
        for try await owner in rows.decode(Int64.self) { return owner }
        throw TestFailure("no key \(key)")
    }

    func attempts(of job: UUID) async throws -> Int {
        let rows = try await client.query("SELECT attempts FROM jobs WHERE id = \(job)", logger: TestDatabase.logger)
        for try await attempts in rows.decode(Int.self) { return attempts }
        throw TestFailure("no job \(job)")
    }
}

extension TestImages {
    /// A multi-page 8-bit grey TIFF of small pages: random noise, or plain white.
    static func multiPageTIFF(pages: Int, width: Int, height: Int, noise: Bool) throws -> Data {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("lector-\(UUID().uuidString).tiff")
        defer { try? FileManager.default.removeItem(at: output) }
        var arguments: [String] = []
        for _ in 0..<pages {
            arguments += ["-size", "\(width)x\(height)", noise ? "xc:gray50" : "xc:white"]
            if noise { arguments += ["+noise", "Random"] }
        }
        arguments += ["-colorspace", "Gray", "-depth", "8", "tiff:\(output.path)"]
        try runTool(convert, arguments)
        return try Data(contentsOf: output)
    }
}

/// A blocking TCP connection to the test server, for what an HTTP client library will not send.
final class RawConnection: @unchecked Sendable {
    private let fd: Int32
    var descriptor: Int32 { fd }
    private var closed = false
    private(set) var peerClosed = false

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw TestFailure("connect failed: errno \(errno)") }
    }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else {
                peerClosed = true
                throw TestFailure("send failed: errno \(errno)")
            }
            offset += sent
        }
    }

    func sendBytes(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw TestFailure("send failed: errno \(errno)") }
            offset += sent
        }
    }

    /// Reads until the server closes the connection or `timeout` seconds pass.
    func readUntilClosed(timeout: Double) async throws -> (text: String, closed: Bool) {
        try await NIOThreadPool.singleton.runIfActive { [fd] in
            var timeval = timeval(tv_sec: 1, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeval, socklen_t(MemoryLayout<timeval>.size))
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            let deadline = Date(timeIntervalSinceNow: timeout)
            while Date() < deadline {
                let count = recv(fd, &buffer, buffer.count, 0)
                if count == 0 { return (String(decoding: received, as: UTF8.self), true) }
                if count < 0 {
                    if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { continue }
                    return (String(decoding: received, as: UTF8.self), true)  // reset by the server
                }
                received += buffer[0..<count]
            }
            return (String(decoding: received, as: UTF8.self), false)
        }
    }

    func close() {
        if !closed { Glibc.close(fd) }
        closed = true
    }

    deinit { close() }
}
