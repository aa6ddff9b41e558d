import Foundation
import Testing

@testable import S3Kit

/// Offline checks of the signer against AWS's published S3 examples and of its building blocks.
/// (The botocore comparison over many more cases is `check_sigv4.py`.)
@Suite struct SigV4Tests {
    /// The credentials of AWS's S3 SigV4 documentation examples.
    let signer = SigV4Signer(
        accessKey: "AKIAIOSFODNN7EXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", region: "us-east-1")
    /// 2013-05-24T00:00:00Z, the examples' date.
    let date = Date(timeIntervalSince1970: 1_369_353_600)

    @Test func awsExampleGetObjectWithRange() throws {
        let url = try #require(URL(string: "https://examplebucket.s3.amazonaws.com/test.txt"))
        let added = signer.sign(
            method: "GET", url: url, headers: [(name: "Range", value: "bytes=0-9")],
            payloadHash: SigV4Signer.emptyPayloadHash, date: date)
        let headers = Dictionary(added.map { ($0.name, $0.value) }, uniquingKeysWith: { $1 })
        #expect(headers["host"] == "examplebucket.s3.amazonaws.com")
        #expect(headers["x-amz-date"] == "20130524T000000Z")
        #expect(
            headers["authorization"]
                == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                + "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    @Test func awsExamplePresignedGet() throws {
        let url = try #require(URL(string: "https://examplebucket.s3.amazonaws.com/test.txt"))
        let signed = signer.presign(method: "GET", url: url, headers: [], expires: 86_400, date: date)
        #expect(
            signed.absoluteString
                == "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                + "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
                + "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
                + "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    }

    @Test func encoding() {
        #expect(S3URIEncoding.encode("a b+~/ü%=&", keepSlash: true) == "a%20b%2B~/%C3%BC%25%3D%26")
        #expect(S3URIEncoding.encode("a/b", keepSlash: false) == "a%2Fb")
        #expect(S3URIEncoding.canonicalPath("/b/a%20b/(x)") == "/b/a%20b/%28x%29")
        #expect(S3URIEncoding.canonicalPath("") == "/")
        #expect(S3URIEncoding.canonicalQuery("b=2&a=1&a&A=0&a=0") == "A=0&a=&a=0&a=1&b=2")
        #expect(S3URIEncoding.decode("100%") == Array("100%".utf8))
    }

    @Test func dates() {
        #expect(AMZDate(Date(timeIntervalSince1970: 0)).full == "19700101T000000Z")
        #expect(AMZDate(Date(timeIntervalSince1970: 1_709_251_199)).full == "20240229T235959Z")
        #expect(AMZDate(Date(timeIntervalSince1970: 951_782_400)).full == "20000229T000000Z")
        #expect(AMZDate(Date(timeIntervalSince1970: 4_102_444_799.9)).full == "20991231T235959Z")
    }

    @Test func headerCanonicalisation() {
        let result = SigV4Signer.canonicalHeaders([
            (name: "X-B", value: "  two   words\t here "), (name: "x-a", value: "1"), (name: "X-A", value: "2"),
            (name: "User-Agent", value: "never signed"),
        ])
        #expect(result.block == "x-a:1,2\nx-b:two words here\n")
        #expect(result.signedNames == "x-a;x-b")
    }

    @Test func errorXML() throws {
        let body = Data(
            "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Reduce &amp; retry</Message><RequestId>r1</RequestId></Error>"
                .utf8)
        let root = try #require(XMLNode.parse(body))
        #expect(root.text("Code") == "SlowDown")
        #expect(root.text("Message") == "Reduce & retry")
        let error = S3Error(kind: .http, operation: "GetObject", statusCode: 503, code: "SlowDown", message: "x")
        #expect(error.isTransient)
        #expect(!S3Error(kind: .http, operation: "GetObject", statusCode: 403, code: "AccessDenied", message: "x").isTransient)
        #expect(S3Error(kind: .http, operation: "GetObject", statusCode: 429, message: "x").isTransient)
        #expect(S3Error(kind: .http, operation: "GetObject", statusCode: 400, code: "RequestTimeout", message: "x").isTransient)
    }

    @Test func backoffIsBoundedWithFullJitter() {
        let policy = RetryPolicy(maxAttempts: 5, baseDelay: .milliseconds(100), maxDelay: .milliseconds(300))
        for retry in 1...6 {
            let delay = policy.delay(beforeRetry: retry)
            #expect(delay >= .zero)
            #expect(delay <= .milliseconds(min(300, 100 << (retry - 1))))
        }
    }
}

@Suite struct ClientOfflineTests {
    func client(_ addressing: S3Configuration.Addressing, prefix: String = "p/") throws -> S3Client {
        let configuration = S3Configuration(
            endpoint: URL(string: "https://s3.example.com:8443/base/")!, region: "eu-west-1", bucket: "bkt",
            keyPrefix: prefix, accessKey: "a", secretKey: "s", addressing: addressing)
        return try S3Client(configuration: configuration, httpClient: .shared)
    }

    @Test func urls() throws {
        let path = try client(.path)
        #expect(path.url(key: "a b/ü+.txt", query: []) == "https://s3.example.com:8443/base/bkt/p/a%20b/%C3%BC%2B.txt")
        #expect(path.url(key: nil, query: [("list-type", "2"), ("prefix", "p/x y")])
            == "https://s3.example.com:8443/base/bkt?list-type=2&prefix=p%2Fx%20y")
        let virtual = try client(.virtualHost)
        #expect(virtual.url(key: "k", query: [("delete", nil)]) == "https://bkt.s3.example.com:8443/base/p/k?delete")
    }

    @Test func rejectsBadArguments() throws {
        let client = try client(.path, prefix: "")
        #expect(throws: S3Error.self) { try client.validate(metadata: ["name": "é"]) }
        #expect(throws: S3Error.self) { try client.validate(metadata: ["bad name": "x"]) }
        #expect(throws: S3Error.self) { try client.validate(key: "", operation: "Put") }
        #expect(throws: S3Error.self) { try client.validate(key: String(repeating: "k", count: 1025), operation: "Put") }
        #expect(throws: S3Error.self) { _ = try client.presignedGET(key: "k", expires: .seconds(604_801)) }
        #expect(throws: S3Error.self) { _ = try client.presignedGET(key: "k", expires: .zero) }
        #expect(throws: S3Error.self) {
            _ = try S3Client(
                configuration: S3Configuration(
                    endpoint: URL(string: "ftp://x")!, region: "r", bucket: "b", accessKey: "a", secretKey: "s"),
                httpClient: .shared)
        }
    }
}
