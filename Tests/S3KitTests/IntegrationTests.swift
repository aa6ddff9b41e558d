import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import Testing

@testable import S3Kit

/// The store the integration tests use, from the environment (`deploy/scripts/weed.sh env` prints it).
enum TestStore {
    static let environment = ProcessInfo.processInfo.environment
    static let endpoint = environment["LECTOR_TEST_S3_ENDPOINT"]
    static var isConfigured: Bool { endpoint != nil }

    static func configuration(
        endpoint: String? = nil, retry: RetryPolicy = RetryPolicy(), timeout: Duration = .seconds(60)
    ) -> S3Configuration {
        S3Configuration(
            endpoint: URL(string: endpoint ?? self.endpoint ?? "http://127.0.0.1:18433")!,
            region: environment["LECTOR_TEST_S3_REGION"] ?? "us-east-1",
            bucket: environment["LECTOR_TEST_S3_BUCKET"] ?? "s3kit-test",
            keyPrefix: "s3kit-tests/\(UUID().uuidString)/",
            accessKey: environment["LECTOR_TEST_S3_ACCESS_KEY"] ?? "s3kitaccess",
            secretKey: environment["LECTOR_TEST_S3_SECRET_KEY"] ?? "s3kitsecret0123456789",
            requestTimeout: timeout, retry: retry)
    }

    static func client(_ configuration: S3Configuration = configuration()) throws -> S3Client {
        try S3Client(configuration: configuration, httpClient: .shared)
    }
}

/// The peak resident set size of this process, in bytes (`VmHWM`), and a way to reset it.
enum Memory {
    static func peak() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
        else { return 0 }
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
    }

    static func current() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return 0 }
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
    }

    /// Resets `VmHWM` to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`).
    static func resetPeak() {
        try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
    }
}

/// Round trips against a real S3 store; run only when `LECTOR_TEST_S3_ENDPOINT` is set. Serialized so
/// that the memory measurement of the large transfer is not disturbed by other tests.
@Suite(.enabled(if: TestStore.isConfigured, "LECTOR_TEST_S3_ENDPOINT is not set"), .serialized)
struct IntegrationTests {
    @Test func putGetHeadDeleteRoundTrip() async throws {
        let client = try TestStore.client()
        let data = Data("hello, lector\n".utf8)
        let etag = try await client.putObject(
            key: "small.txt", data: data, contentType: "text/plain", metadata: ["Job-Id": "42"])
        #expect(etag == Insecure_md5Hex(data))

        let info = try #require(try await client.headObject(key: "small.txt"))
        #expect(info.size == Int64(data.count))
        #expect(info.contentType == "text/plain")
        #expect(info.etag == etag)
        #expect(info.metadata["job-id"] == "42")

        #expect(try await client.getObjectData(key: "small.txt", maxBytes: 1024) == data)
        await #expect(throws: S3Error.self) {
            _ = try await client.getObjectData(key: "small.txt", maxBytes: 4)
        }

        try await client.copyObject(from: "small.txt", to: "copy.txt")
        #expect(try await client.getObjectData(key: "copy.txt", maxBytes: 1024) == data)

        try await client.deleteObject(key: "small.txt")
        try await client.deleteObject(key: "copy.txt")
        #expect(try await client.headObject(key: "small.txt") == nil)
        try await client.deleteObject(key: "small.txt")  // deleting a missing key succeeds
    }

    @Test func missingObject() async throws {
        let client = try TestStore.client()
        #expect(try await client.headObject(key: "no/such/key") == nil)
        let error = await #expect(throws: S3Error.self) {
            _ = try await client.getObjectData(key: "no/such/key", maxBytes: 10)
        }
        #expect(error?.statusCode == 404)
        #expect(error?.code == "NoSuchKey")
        #expect(error?.isTransient == false)
        #expect(error?.attempts == 1)
    }

    @Test func keyWithSpacesUnicodeAndReservedCharacters() async throws {
        let client = try TestStore.client()
        let key = "dir with space/ünïcødé 日本 résumé +~%=&;(1)!.txt"
        let data = Data("unicode".utf8)
        try await client.putObject(key: key, data: data)
        #expect(try await client.getObjectData(key: key, maxBytes: 100) == data)
        let listed = try await client.listObjects(prefix: "dir with space/")
        #expect(listed.map(\.key) == [key])
        try await client.deleteObject(key: key)
    }

    @Test func listingFollowsContinuationTokensAndBatchDelete() async throws {
        let client = try TestStore.client()
        let keys = (0..<7).map { "list/item-\($0).txt" }
        for key in keys {
            try await client.putObject(key: key, data: Data(key.utf8))
        }
        try await client.putObject(key: "other/x.txt", data: Data("x".utf8))
        let first = try await client.listObjectsPage(prefix: "list/", maxKeys: 3)
        #expect(first.objects.count == 3)
        #expect(first.continuationToken != nil)
        let all = try await client.listObjects(prefix: "list/", pageSize: 3)
        #expect(all.map(\.key) == keys)
        #expect(all.allSatisfy { $0.size == Int64($0.key.utf8.count) && $0.lastModified != nil })

        let failed = try await client.deleteObjects(keys: keys + ["other/x.txt"])
        #expect(failed.isEmpty)
        #expect(try await client.listObjects().isEmpty)
    }

    @Test func largeFileStreamsBothWaysWithLowMemory() async throws {
        let client = try TestStore.client()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("s3kit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = directory.appendingPathComponent("big.bin").path
        let target = directory.appendingPathComponent("back.bin").path
        let size = 48 * 1024 * 1024
        // Write 48 MiB of pseudo-random bytes, 1 MiB at a time.
        _ = FileManager.default.createFile(atPath: source, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: source))
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<(size >> 20) {
            let chunk = (0..<(1 << 17)).map { _ in generator.next() as UInt64 }
            try handle.write(contentsOf: chunk.withUnsafeBytes { Data($0) })
        }
        try handle.close()

        let baseline = Memory.current()
        Memory.resetPeak()
        try await client.putObject(key: "big.bin", filePath: source, contentType: "application/octet-stream")
        let info = try await client.getObject(key: "big.bin", toFile: target)
        let growth = Memory.peak() - baseline
        print("large transfer: \(size) bytes each way, peak RSS growth \(growth / 1024) KiB")
        #expect(info.size == Int64(size))
        #expect(growth < 24 * 1024 * 1024, "peak RSS grew by \(growth) bytes for a \(size)-byte file")
        #expect(
            FileManager.default.contentsEqual(atPath: source, andPath: target),
            "downloaded file differs from the uploaded one")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(leftovers == ["back.bin", "big.bin"])
        try await client.deleteObject(key: "big.bin")
    }

    @Test func presignedGet() async throws {
        let client = try TestStore.client()
        let data = Data("presigned body".utf8)
        try await client.putObject(key: "pre/get me.txt", data: data, contentType: "text/plain")
        let url = try client.presignedGET(
            key: "pre/get me.txt", expires: .seconds(300), responseContentType: "application/x-lector",
            responseContentDisposition: "attachment; filename=\"résumé 2024.txt\"")

        let ok = try await fetch(url.absoluteString)
        #expect(ok.status == 200)
        #expect(ok.body == data)
        print("presigned GET response overrides: content-type=\(ok.contentType ?? "-") "
            + "content-disposition=\(ok.contentDisposition ?? "-")")

        var text = url.absoluteString
        let last = text.removeLast()
        text.append(last == "0" ? "1" : "0")
        #expect(try await fetch(text).status == 403, "tampered signature")

        let other = url.absoluteString.replacingOccurrences(of: "get%20me.txt", with: "get%20you.txt")
        #expect(try await fetch(other).status == 403, "signature for another key")

        let expired = try client.presignedGET(
            key: "pre/get me.txt", expires: .seconds(60), now: Date().addingTimeInterval(-3600))
        #expect(try await fetch(expired.absoluteString).status == 403, "expired")
        try await client.deleteObject(key: "pre/get me.txt")
    }

    @Test func presignedPutBindsLengthAndType() async throws {
        let client = try TestStore.client()
        let data = Data("uploaded through a presigned URL".utf8)
        let url = try client.presignedPUT(
            key: "pre/put.txt", expires: .seconds(300), contentType: "text/plain", contentLength: Int64(data.count))

        #expect(try await fetch(url.absoluteString, method: .PUT, body: data, contentType: "text/plain").status == 200)
        let info = try #require(try await client.headObject(key: "pre/put.txt"))
        #expect(info.size == Int64(data.count))
        #expect(info.contentType == "text/plain")

        let longer = try await fetch(url.absoluteString, method: .PUT, body: data + Data("!".utf8), contentType: "text/plain")
        #expect(longer.status == 403, "a body longer than the signed content-length")
        let wrongType = try await fetch(url.absoluteString, method: .PUT, body: data, contentType: "image/png")
        #expect(wrongType.status == 403, "a content-type other than the signed one")
        #expect(try await client.getObjectData(key: "pre/put.txt", maxBytes: 1000) == data)
        try await client.deleteObject(key: "pre/put.txt")
    }

    @Test func storeVerifiesChecksums() async throws {
        let client = try TestStore.client()
        let data = ByteBuffer(string: "checksummed")
        let wrong = Data(SHA256Hash("something else")).base64EncodedString()
        var request = S3Client.Request(operation: "PutObject", method: .PUT, key: "bad-checksum")
        request.body = .bytes(data)
        request.payloadHash = SigV4Signer.hexSHA256(data.readableBytesView)
        request.headers = [(name: "x-amz-checksum-sha256", value: wrong)]
        let error = await #expect(throws: S3Error.self) { try await client.send(request) { _ in () } }
        #expect(error?.statusCode == 400)
        print("wrong x-amz-checksum-sha256: \(error.map { "\($0)" } ?? "accepted")")

        request.headers = [(name: "content-md5", value: Data(Insecure_md5("something else")).base64EncodedString())]
        let md5Error = await #expect(throws: S3Error.self) { try await client.send(request) { _ in () } }
        #expect(md5Error?.code == "BadDigest")

        // A signed payload hash that does not match the body: recorded, not asserted.
        request.headers = []
        request.payloadHash = SigV4Signer.hexSHA256(Data("something else".utf8))
        do {
            try await client.send(request) { _ in () }
            print("wrong x-amz-content-sha256: ACCEPTED (the store does not verify the payload hash)")
        } catch {
            print("wrong x-amz-content-sha256: rejected: \(error)")
        }
        try await client.deleteObject(key: "bad-checksum")
    }

    @Test func wrongCredentialsAreNotTransient() async throws {
        var configuration = TestStore.configuration()
        configuration.secretKey = "wrong"
        let client = try TestStore.client(configuration)
        let error = await #expect(throws: S3Error.self) { _ = try await client.getObjectData(key: "x", maxBytes: 1) }
        #expect(error?.statusCode == 403)
        #expect(error?.isTransient == false)
        #expect(error?.attempts == 1)
    }

    @Test func stoppedStoreGivesTransientErrorAfterBoundedRetries() async throws {
        // Nothing listens on this port: what a stopped store looks like to a client.
        let configuration = TestStore.configuration(
            endpoint: "http://127.0.0.1:18499",
            retry: RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(50), maxDelay: .milliseconds(200)),
            timeout: .seconds(2))
        let client = try TestStore.client(configuration)
        let start = ContinuousClock.now
        let error = await #expect(throws: S3Error.self) { try await client.putObject(key: "x", data: Data("x".utf8)) }
        let elapsed = ContinuousClock.now - start
        print("stopped store: \(error.map { "\($0)" } ?? "-") in \(elapsed)")
        #expect(error?.kind == .transport)
        #expect(error?.isTransient == true)
        #expect(error?.attempts == 3)
        #expect(elapsed < .seconds(10))
    }

    // MARK: - Helpers

    struct Fetched {
        var status: Int
        var body: Data
        var contentType: String?
        var contentDisposition: String?
    }

    /// A plain (unsigned) request with AsyncHTTPClient, as a browser or another service would send.
    func fetch(_ url: String, method: HTTPMethod = .GET, body: Data? = nil, contentType: String? = nil) async throws
        -> Fetched
    {
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let body {
            request.body = .bytes(ByteBuffer(data: body))
        }
        if let contentType {
            request.headers.add(name: "content-type", value: contentType)
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let buffer = try await response.body.collect(upTo: 1 << 20)
        return Fetched(
            status: Int(response.status.code), body: Data(buffer: buffer),
            contentType: response.headers.first(name: "content-type"),
            contentDisposition: response.headers.first(name: "content-disposition"))
    }
}

/// Virtual-host addressing against the store (`deploy/scripts/weed.sh` sets `-s3.domainName`): the bucket
/// name is in the host, which AsyncHTTPClient's `dnsOverride` maps to 127.0.0.1.
@Suite(.enabled(if: TestStore.environment["LECTOR_TEST_S3_VHOST_DOMAIN"] != nil && TestStore.isConfigured))
struct VirtualHostTests {
    @Test func roundTripWithBucketInHostName() async throws {
        let domain = try #require(TestStore.environment["LECTOR_TEST_S3_VHOST_DOMAIN"])
        let endpoint = try #require(URLComponents(string: TestStore.endpoint ?? ""))
        var configuration = TestStore.configuration(endpoint: "http://\(domain):\(endpoint.port ?? 80)")
        configuration.addressing = .virtualHost
        var httpConfiguration = HTTPClient.Configuration()
        httpConfiguration.dnsOverride = [
            "\(configuration.bucket).\(domain)": endpoint.host ?? "127.0.0.1", domain: endpoint.host ?? "127.0.0.1",
        ]
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfiguration)
        do {
            let client = try S3Client(configuration: configuration, httpClient: http)
            let data = Data("virtual host".utf8)
            try await client.putObject(key: "v h/ü.txt", data: data)
            #expect(try await client.getObjectData(key: "v h/ü.txt", maxBytes: 100) == data)
            #expect(try await client.listObjects().map(\.key) == ["v h/ü.txt"])
            let url = try client.presignedGET(key: "v h/ü.txt", expires: .seconds(60))
            #expect(url.host() == "\(configuration.bucket).\(domain)")
            let response = try await http.execute(HTTPClientRequest(url: url.absoluteString), timeout: .seconds(10))
            #expect(response.status == .ok)
            try await client.deleteObject(key: "v h/ü.txt")
        } catch {
            try await http.shutdown()
            throw error
        }
        try await http.shutdown()
    }
}
