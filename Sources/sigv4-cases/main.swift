// Reads SigV4 test cases (a JSON array) on stdin and prints what S3Kit's signer makes of them, as a
// JSON array, for `check_sigv4.py` to compare with botocore byte for byte.
import Foundation
import S3Kit

/// One case, as `check_sigv4.py` writes it.
struct Case: Decodable {
    var id: String
    /// `sign` (Authorization header) or `presign` (query string).
    var kind: String
    var method: String
    var url: String
    var headers: [[String]]
    var payloadHash: String?
    var expires: Int?
    /// Seconds since 1970, UTC.
    var timestamp: Double
    var accessKey: String
    var secretKey: String
    var region: String
    var sessionToken: String?
    /// A raw object key, to check `S3URIEncoding` against Python's `quote(key, safe='/~')`.
    var rawKey: String?
}

/// What the signer produced for one case.
struct Result: Encodable {
    var id: String
    var headers: [String: String]?
    var url: String?
    var encodedKey: String?
}

let decoder = JSONDecoder()
decoder.keyDecodingStrategy = .convertFromSnakeCase
let encoder = JSONEncoder()
encoder.keyEncodingStrategy = .convertToSnakeCase
encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]

let input = FileHandle.standardInput.readDataToEndOfFile()
let cases = try decoder.decode([Case].self, from: input)
var results: [Result] = []
for item in cases {
    guard let url = URL(string: item.url) else {
        FileHandle.standardError.write(Data("case \(item.id): invalid URL \(item.url)\n".utf8))
        exit(2)
    }
    let signer = SigV4Signer(
        accessKey: item.accessKey, secretKey: item.secretKey, region: item.region, sessionToken: item.sessionToken)
    let headers = item.headers.map { (name: $0[0], value: $0[1]) }
    let date = Date(timeIntervalSince1970: item.timestamp)
    var result = Result(id: item.id)
    if item.kind == "presign" {
        let signed = signer.presign(
            method: item.method, url: url, headers: headers, expires: item.expires ?? 3600, date: date)
        result.url = signed.absoluteString
    } else {
        let added = signer.sign(
            method: item.method, url: url, headers: headers,
            payloadHash: item.payloadHash ?? SigV4Signer.emptyPayloadHash, date: date)
        result.headers = Dictionary(added.map { ($0.name, $0.value) }, uniquingKeysWith: { $1 })
    }
    result.encodedKey = item.rawKey.map { S3URIEncoding.encode($0, keepSlash: true) }
    results.append(result)
}
FileHandle.standardOutput.write(try encoder.encode(results))
FileHandle.standardOutput.write(Data("\n".utf8))
