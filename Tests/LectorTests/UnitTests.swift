import Foundation
import LectorAPI
import LectorCore
import LectorModel
import LectorOCR
import Testing

@Suite("Units")
struct UnitTests {
    @Test("the SQL splitter keeps dollar-quoted bodies, quotes and comments whole")
    func splitter() {
        let script = """
            -- a comment; with a semicolon
            CREATE TABLE a (x text DEFAULT 'a;b');
            /* block; comment */
            CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'x;y'; END;
            $$;
            SELECT "odd;name" FROM a
            """
        let statements = SQLStatementSplitter.split(script)
        #expect(statements.count == 3)
        #expect(statements[0] == "CREATE TABLE a (x text DEFAULT 'a;b')")
        #expect(statements[1].hasPrefix("CREATE FUNCTION f()"))
        #expect(statements[1].hasSuffix("$$"))
        #expect(statements[1].contains("END;"))
        #expect(statements[2] == "SELECT \"odd;name\" FROM a")
    }

    @Test("the migration files split into statements the database accepts")
    func migrationsParse() throws {
        let migrator = try Migrator(directory: TestDatabase.migrationsDirectory)
        #expect(migrator.migrations.first?.version == 1)
        #expect(SQLStatementSplitter.split(migrator.migrations[0].sql).count > 8)
    }

    @Test("document types come from the bytes")
    func detection() throws {
        #expect(DocumentType.detect(try TestImages.render(["a"], format: "png")) == .png)
        #expect(DocumentType.detect(try TestImages.render(["a"], format: "jpeg")) == .jpeg)
        #expect(DocumentType.detect(try TestImages.render(["a"], format: "tiff")) == .tiff)
        #expect(DocumentType.detect(try TestImages.render(["a"], format: "bmp")) == .bmp)
        #expect(DocumentType.detect(try TestImages.render(["a"], format: "gif")) == .gif)
        #expect(DocumentType.detect(Data("%PDF-1.7".utf8)) == .pdf)
        #expect(DocumentType.detect(Data("hello".utf8)) == nil)
        #expect(DocumentType.detect(Data()) == nil)
        #expect(DocumentType.detect(Data([0x89, 0x50])) == nil)
    }

    @Test("API keys parse only in their own shape")
    func apiKeys() {
        let key = APIKey.generate()
        #expect(APIKey(token: key.token) == key)
        #expect(key.token.hasPrefix("lk_"))
        #expect(key.secretDigest.count == 32)
        #expect(APIKey(token: "") == nil)
        #expect(APIKey(token: "lk_short_secret") == nil)
        #expect(APIKey(token: "lk_zzzzzzzzzzzz_" + String(repeating: "a", count: 43)) == nil)
        #expect(APIKey(token: "xx_" + key.token.dropFirst(3)) == nil)
        #expect(APIKey.generate() != key)
        #expect(constantTimeEquals([1, 2, 3], [1, 2, 3]))
        #expect(!constantTimeEquals([1, 2, 3], [1, 2, 4]))
        #expect(!constantTimeEquals([1, 2], [1, 2, 3]))
    }

    @Test("a signal sent between register and wait is not lost")
    func waitRegistry() async {
        let registry = WaitRegistry<Int>()
        let ticket = registry.register(7)
        registry.signal(7)
        #expect(await registry.wait(ticket, timeout: .seconds(10)))
        // Consumed: the next wait times out.
        #expect(await registry.wait(ticket, timeout: .milliseconds(50)) == false)
        registry.signal(8)
        #expect(await registry.wait(ticket, timeout: .milliseconds(50)) == false)
        registry.unregister(ticket)
        #expect(registry.count == 0)
    }

    @Test("one signal wakes every waiter on its key")
    func waitRegistryFanOut() async {
        let registry = WaitRegistry<String>()
        let tickets = (0..<100).map { _ in registry.register("job") }
        let woken = await withTaskGroup(of: Bool.self) { group in
            for ticket in tickets {
                group.addTask { await registry.wait(ticket, timeout: .seconds(30)) }
            }
            while registry.count < 100 { await Task.yield() }
            try? await Task.sleep(for: .milliseconds(50))
            registry.signal("job")
            var count = 0
            for await wokenUp in group where wokenUp { count += 1 }
            return count
        }
        #expect(woken == 100)
        tickets.forEach(registry.unregister)
        #expect(registry.count == 0)
    }

    @Test("the result-link signer accepts its links and refuses changed ones")
    func signer() {
        let signer = ResultLinkSigner(key: Array("k".utf8), ttl: 60)
        let job = UUID()
        let link = signer.link(job: job, file: "result.json")
        let query = link.split(separator: "?")[1].split(separator: "&").map { $0.split(separator: "=") }
        let expires = String(query[0][1]), signature = String(query[1][1])
        #expect(signer.verify(job: job, file: "result.json", expires: expires, signature: signature) == .valid)
        #expect(signer.verify(job: job, file: "result.txt", expires: expires, signature: signature) == .invalid)
        #expect(signer.verify(job: UUID(), file: "result.json", expires: expires, signature: signature) == .invalid)
        #expect(signer.verify(job: job, file: "result.json", expires: expires, signature: nil) == .invalid)
        #expect(signer.verify(job: job, file: "result.json", expires: "x", signature: signature) == .invalid)
        // Only the exact spelling we write: no sign, no leading "+", no upper-case hex.
        #expect(signer.verify(job: job, file: "result.json", expires: "+" + expires, signature: signature) == .invalid)
        #expect(signer.verify(job: job, file: "result.json", expires: expires, signature: signature.uppercased()) == .invalid)
        #expect(signer.verify(job: job, file: "result.json", expires: expires, signature: "+" + signature.dropFirst()) == .invalid)
        #expect(signer.verify(job: job, file: "result.json", expires: expires, signature: signature,
                              now: Date(timeIntervalSinceNow: 3600)) == .expired)
        let other = ResultLinkSigner(key: Array("other".utf8), ttl: 60)
        #expect(other.verify(job: job, file: "result.json", expires: expires, signature: signature) == .invalid)
    }

    @Test("settings come from LECTOR_ variables with defaults")
    func settings() throws {
        let defaults = Settings(environment: [:])
        #expect(defaults.httpPort == 8080)
        #expect(defaults.maxUploadBytes == 50_000_000)
        #expect(defaults.storageRoot == "storage")
        let custom = Settings(environment: ["LECTOR_HTTP_PORT": "9000", "LECTOR_WORKER_CONCURRENCY": "3", "LECTOR_MAX_UPLOAD_BYTES": "-5"])
        #expect(custom.httpPort == 9000)
        #expect(custom.workerConcurrency == 3)
        #expect(custom.maxUploadBytes == 50_000_000)
        let tcp = try DatabaseURL.configuration(from: "postgres://bob:secret@db.example:6543/jobs")
        #expect(tcp.host == "db.example")
        #expect(tcp.port == 6543)
        #expect(tcp.username == "bob")
        #expect(tcp.password == "secret")
        #expect(tcp.database == "jobs")
        let socket = try DatabaseURL.configuration(from: "postgres://bob@/jobs?host=/run/pg&port=5433")
        #expect(socket.unixSocketPath == "/run/pg/.s.PGSQL.5433")
        #expect(throws: DatabaseURL.Invalid.self) { try DatabaseURL.configuration(from: "mysql://x/y") }
    }

    @Test("the engine reads every page of a TIFF and refuses pixel bombs from the header")
    func engineLimits() throws {
        let factory = TesseractEngineFactory(dataPath: nil, limits: OCRLimits(maxPagePixels: 2_000_000, maxPages: 5))
        let engine = try factory.makeEngine()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lector-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let first = directory.appendingPathComponent("1.png"), second = directory.appendingPathComponent("2.png")
        try TestImages.render(["first page"]).write(to: first)
        try TestImages.render(["second page"]).write(to: second)
        let tiff = directory.appendingPathComponent("both.tiff")
        try TestImages.runTool(TestImages.convert, [first.path, second.path, tiff.path])
        let result = try engine.recognize(OCRDocument(data: Data(contentsOf: tiff), type: .tiff), options: OCROptions(lang: "eng"), cancellation: OCRCancellation())
        #expect(result.pages.count == 2)
        #expect(result.pages[0].text.contains("first page"))
        #expect(result.pages[1].text.contains("second page"))
        #expect(result.text.contains("\u{0C}"))

        // 1,500 x 1,500 declared in the header: over 2,000,000 pixels, refused before decoding.
        let big = directory.appendingPathComponent("big.png")
        try TestImages.runTool(TestImages.convert, ["-size", "1500x1500", "xc:white", big.path])
        #expect(throws: OCRError.self) {
            try engine.recognize(OCRDocument(data: Data(contentsOf: big), type: .png), options: OCROptions(lang: "eng"), cancellation: OCRCancellation())
        }
        let bigData = try Data(contentsOf: big)
        do {
            _ = try engine.recognize(OCRDocument(data: bigData, type: .png), options: OCROptions(lang: "eng"), cancellation: OCRCancellation())
            Issue.record("a pixel bomb was decoded")
        } catch {
            #expect(error.kind == .limitExceeded)
            #expect(error.message.contains("1500 × 1500"))
        }
    }
}
