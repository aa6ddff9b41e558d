import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LectorAPI
import LectorCore
import Testing

@Suite("Bad requests get a 4xx with a JSON body naming the problem")
struct BadInputTests {
    struct Case: Sendable, CustomStringConvertible {
        let description: String
        let status: HTTPResponse.Status
        let code: String
        let contentType: String?
        let body: Data
        var uri = "/v1/jobs"
    }

    static func multipart(_ build: (inout Multipart) -> Void) -> (String, Data) {
        var form = Multipart()
        build(&form)
        return (form.contentType, Data(buffer: form.finished()))
    }

    static let png: Data = (try? TestImages.render(["x"])) ?? Data()

    static var cases: [Case] {
        var cases: [Case] = []
        func add(_ description: String, _ status: HTTPResponse.Status, _ code: String, _ form: (inout Multipart) -> Void) {
            let (type, body) = multipart(form)
            cases.append(Case(description: description, status: status, code: code, contentType: type, body: body))
        }
        add("metadata that is not JSON", .badRequest, "invalid_metadata") {
            $0.add(name: "document", filename: "a.png", data: png)
            $0.add(name: "metadata", json: "{not json")
        }
        add("metadata that is an array", .badRequest, "invalid_metadata") {
            $0.add(name: "document", filename: "a.png", data: png)
            $0.add(name: "metadata", json: "[1, 2]")
        }
        add("metadata holding U+0000", .badRequest, "invalid_metadata") {
            $0.add(name: "document", filename: "a.png", data: png)
            $0.add(name: "metadata", json: #"{"a": "x\u0000y"}"#)
        }
        add("metadata behind a byte-order mark", .badRequest, "invalid_metadata") {
            $0.add(name: "document", filename: "a.png", data: png)
            $0.add(name: "metadata", contentType: "application/json", data: Data([0xEF, 0xBB, 0xBF]) + Data(#"{"a": 1}"#.utf8))
        }
        add("metadata in UTF-16", .badRequest, "invalid_metadata") {
            $0.add(name: "document", filename: "a.png", data: png)
            $0.add(name: "metadata", contentType: "application/json", data: #"{"a": 1}"#.data(using: .utf16LittleEndian)!)
        }
        add("options that are not JSON", .badRequest, "invalid_options") {
            $0.add(name: "document", filename: "a.png", data: png)
            $0.add(name: "options", json: "lang=eng")
        }
        add("an unknown option", .badRequest, "invalid_options") {
            $0.add(name: "document", filename: "a.png", data: png)
            $0.add(name: "options", json: #"{"lang": "eng", "speed": 11}"#)
        }
        add("a language that is not installed", .badRequest, "invalid_options") {
            $0.add(name: "document", filename: "a.png", data: png)
            $0.add(name: "options", json: #"{"lang": "klingon"}"#)
        }
        add("a language code that is a path", .badRequest, "invalid_options") {
            $0.add(name: "document", filename: "a.png", data: png)
            $0.add(name: "options", json: #"{"lang": "../../etc/passwd"}"#)
        }
        add("no document part", .badRequest, "missing_document") {
            $0.add(name: "metadata", json: "{}")
        }
        add("an unknown part", .badRequest, "invalid_multipart") {
            $0.add(name: "document", filename: "a.png", data: png)
            $0.add(name: "extra", json: "{}")
        }
        add("two documents", .badRequest, "invalid_multipart") {
            $0.add(name: "document", filename: "a.png", data: png)
            $0.add(name: "document", filename: "b.png", data: png)
        }
        add("an empty document", .badRequest, "empty_document") {
            $0.add(name: "document", filename: "a.png", data: Data())
        }
        add("a text file named .png", .unsupportedMediaType, "unsupported_document_type") {
            $0.add(name: "document", filename: "a.png", contentType: "image/png", data: Data("hello, I am text".utf8))
        }
        add("options naming an unknown operation", .badRequest, "invalid_options") {
            $0.add(name: "document", filename: "a.png", contentType: "image/png", data: png)
            $0.add(name: "options", json: #"{"operations": ["sharpen"]}"#)
        }
        add("a GIF (its header reader decodes every frame: refused)", .unsupportedMediaType, "unsupported_document_type") {
            $0.add(name: "document", filename: "a.gif", data: Data("GIF89a".utf8) + Data(repeating: 0, count: 20))
        }
        cases.append({
            // A whole document part, then a metadata part cut off before its closing boundary.
            var form = Multipart()
            form.add(name: "document", filename: "a.png", data: png)
            var body = form.body
            body.writeString("--\(form.boundary)\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{\"a\": 1")
            return Case(description: "a multipart body cut short in its last part", status: .badRequest,
                        code: "invalid_multipart", contentType: form.contentType, body: Data(buffer: body))
        }())
        cases.append({
            var form = Multipart()
            form.add(name: "document", filename: "a.png", data: png)
            return Case(description: "a query parameter beside a multipart body", status: .badRequest, code: "unknown_parameter",
                        contentType: form.contentType, body: Data(buffer: form.finished()), uri: "/v1/jobs?lang=deu")
        }())
        cases.append(Case(description: "a multipart body without a boundary", status: .badRequest, code: "invalid_multipart",
                          contentType: "multipart/form-data", body: Data("--x\r\n".utf8)))
        cases.append(Case(description: "a truncated multipart body", status: .badRequest, code: "invalid_multipart",
                          contentType: "multipart/form-data; boundary=abc",
                          body: Data("--abc\r\nContent-Disposition: form-data; name=\"document\"\r\n\r\nxx".utf8)))
        cases.append(Case(description: "a form instead of a document", status: .unsupportedMediaType, code: "unsupported_media_type",
                          contentType: "application/x-www-form-urlencoded", body: Data("a=b".utf8)))
        // application/json names a direct upload: refused for what it is, and with file storage (the harness's) at all.
        cases.append(Case(description: "JSON without an upload id", status: .badRequest, code: "invalid_upload",
                          contentType: "application/json", body: Data("{}".utf8)))
        cases.append(Case(description: "JSON that is not an object", status: .badRequest, code: "invalid_json",
                          contentType: "application/json", body: Data("[1]".utf8)))
        cases.append(Case(description: "JSON with an unknown member", status: .badRequest, code: "invalid_json",
                          contentType: "application/json", body: Data(#"{"upload": "x", "colour": 1}"#.utf8)))
        cases.append(Case(description: "JSON with a repeated member", status: .badRequest, code: "invalid_json",
                          contentType: "application/json", body: Data(#"{"upload": "x", "upload": "y"}"#.utf8)))
        cases.append(Case(description: "an upload id with file storage", status: .conflict, code: "direct_uploads_unavailable",
                          contentType: "application/json", body: Data(#"{"upload": "x", "metadata": {"a": 1}}"#.utf8)))
        cases.append(Case(description: "an empty raw body", status: .badRequest, code: "empty_document",
                          contentType: "image/png", body: Data()))
        cases.append(Case(description: "an unknown query parameter", status: .badRequest, code: "unknown_parameter",
                          contentType: "image/png", body: png, uri: "/v1/jobs?colour=blue"))
        cases.append(Case(description: "a bad lang in the query", status: .badRequest, code: "invalid_options",
                          contentType: "image/png", body: png, uri: "/v1/jobs?lang=eng+"))
        return cases
    }

    @Test("submit refuses", arguments: cases)
    func submitRefuses(_ badCase: Case) async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            try await harness.application().test(.router) { client in
                var headers: HTTPFields = [.authorization: "Bearer \(user.token)"]
                if let type = badCase.contentType { headers[.contentType] = type }
                let response = try await client.execute(
                    uri: badCase.uri, method: .post, headers: headers, body: ByteBuffer(bytes: badCase.body))
                #expect(response.status == badCase.status)
                #expect(response.errorCode == badCase.code)
                let error = try #require(response.json["error"] as? [String: Any])
                #expect((error["message"] as? String)?.isEmpty == false)
                // Nothing was created: no job row, no folder.
                #expect(try await harness.jobs.countsByStatus().isEmpty)
                let folders = try FileManager.default.contentsOfDirectory(atPath: harness.storage.root.path)
                    .filter { !$0.hasPrefix(".") }
                #expect(folders.isEmpty)
            }
        }
    }

    @Test("a document over the size limit is 413")
    func tooLarge() async throws {
        try await TestHarness.run(environment: ["LECTOR_MAX_UPLOAD_BYTES": "2000"]) { harness in
            let user = try await harness.newUser()
            let big = Self.png + Data(repeating: 0, count: 3000)
            try await harness.application().test(.router) { client in
                let raw = try await client.execute(
                    uri: "/v1/jobs", method: .post,
                    headers: [.authorization: "Bearer \(user.token)", .contentType: "image/png"], body: ByteBuffer(bytes: big))
                #expect(raw.status == .contentTooLarge)
                #expect(raw.errorCode == "document_too_large")
                var form = Multipart()
                form.add(name: "document", filename: "big.png", data: big)
                let multipart = try await client.execute(
                    uri: "/v1/jobs", method: .post,
                    headers: [.authorization: "Bearer \(user.token)", .contentType: form.contentType], body: form.finished())
                #expect(multipart.status == .contentTooLarge)
                #expect(multipart.errorCode == "document_too_large")
            }
        }
    }

    @Test("bad ids, unknown jobs, formats, waits and routes")
    func badReads() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            let auth: HTTPFields = [.authorization: "Bearer \(user.token)"]
            try await harness.application().test(.router) { client in
                let notUUID = try await client.execute(uri: "/v1/jobs/12345", method: .get, headers: auth)
                #expect(notUUID.status == .badRequest)
                #expect(notUUID.errorCode == "invalid_job_id")
                let unknown = try await client.execute(uri: "/v1/jobs/\(UUID())", method: .get, headers: auth)
                #expect(unknown.status == .notFound)
                #expect(unknown.errorCode == "job_not_found")
                let unknownResult = try await client.execute(uri: "/v1/jobs/\(UUID())/result", method: .get, headers: auth)
                #expect(unknownResult.status == .notFound)

                let submitted = try await client.execute(
                    uri: "/v1/jobs", method: .post, headers: auth + [.contentType: "image/png"],
                    body: ByteBuffer(bytes: Self.png))
                let id = try #require(submitted.json["id"] as? String)
                let format = try await client.execute(uri: "/v1/jobs/\(id)/result?format=xml", method: .get, headers: auth)
                #expect(format.status == .badRequest)
                #expect(format.errorCode == "invalid_format")
                for wait in ["abc", "-1", "1.5"] {
                    let response = try await client.execute(uri: "/v1/jobs/\(id)/result?wait=\(wait)", method: .get, headers: auth)
                    #expect(response.status == .badRequest, "wait=\(wait)")
                    #expect(response.errorCode == "invalid_wait")
                }
                let route = try await client.execute(uri: "/v1/nothing-here", method: .get, headers: auth)
                #expect(route.status == .notFound)
                #expect(route.errorCode == "not_found")
                let languages = try await client.execute(uri: "/v1/languages", method: .get, headers: auth)
                #expect(languages.status == .ok)
                #expect((languages.json["languages"] as? [String])?.contains("eng") == true)
                #expect(languages.json["default"] as? String == "eng")
                #expect(try await client.execute(uri: "/v1/languages", method: .get).status == .unauthorized)
                let health = try await client.execute(uri: "/healthz", method: .get)
                #expect(health.status == .ok)
                let ready = try await client.execute(uri: "/readyz", method: .get)
                #expect(ready.status == .ok)
                #expect(ready.json["database"] as? String == "ok")
            }
        }
    }
}

extension HTTPFields {
    static func + (lhs: HTTPFields, rhs: HTTPFields) -> HTTPFields {
        var result = lhs
        result.append(contentsOf: rhs)
        return result
    }
}
