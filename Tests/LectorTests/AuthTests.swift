import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LectorAPI
import LectorCore
import Testing

@Suite("Authentication and isolation")
struct AuthTests {
    @Test("no key, a malformed key, an unknown key and a revoked key are all 401 with a JSON error")
    func rejectedKeys() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            let unknown = APIKey.generate().token
            try await harness.application().test(.router) { client in
                let cases: [HTTPFields] = [
                    [:],
                    [.authorization: "Bearer"],
                    [.authorization: "Basic dXNlcjpwYXNz"],
                    [.authorization: "Bearer not-a-key"],
                    [.authorization: "Bearer \(unknown)"],
                    // The right prefix with another secret.
                    [.authorization: "Bearer \(String(user.token.prefix(16)))\(String(repeating: "A", count: 43))"],
                ]
                for headers in cases {
                    let response = try await client.execute(uri: "/v1/jobs/\(UUID())", method: .get, headers: headers)
                    #expect(response.status == .unauthorized, "\(headers)")
                    #expect(response.errorCode == "unauthorized")
                }
                let ok = try await client.execute(
                    uri: "/v1/jobs/\(UUID())", method: .get, headers: [.authorization: "Bearer \(user.token)"])
                #expect(ok.status == .notFound)

                // Revocation takes effect on the next request.
                #expect(try await harness.keys.revokeKey(id: user.keyID))
                let revoked = try await client.execute(
                    uri: "/v1/jobs/\(UUID())", method: .get, headers: [.authorization: "Bearer \(user.token)"])
                #expect(revoked.status == .unauthorized)
                #expect(try await harness.keys.revokeKey(id: user.keyID) == false)
            }
        }
    }

    @Test("another user's job is 404 on status and result, as an unknown job is")
    func otherUsersJob() async throws {
        try await TestHarness.run { harness in
            let alice = try await harness.newUser("alice")
            let mallory = try await harness.newUser("mallory")
            let image = try TestImages.render(["private"])
            try await harness.application().test(.router) { client in
                let submitted = try await client.execute(
                    uri: "/v1/jobs", method: .post,
                    headers: [.authorization: "Bearer \(alice.token)", .contentType: "image/png"],
                    body: ByteBuffer(bytes: image))
                let id = try #require(submitted.json["id"] as? String)
                // The owner's answers, exactly: the job's status (200), and 202 while it waits in the queue.
                for (uri, expected) in [("/v1/jobs/\(id)", HTTPResponse.Status.ok), ("/v1/jobs/\(id)/result", .accepted),
                                        ("/v1/jobs/\(id)/result?wait=1", .accepted)] {
                    let response = try await client.execute(
                        uri: uri, method: .get, headers: [.authorization: "Bearer \(mallory.token)"])
                    #expect(response.status == .notFound, "\(uri)")
                    #expect(response.errorCode == "job_not_found")
                    let own = try await client.execute(
                        uri: uri, method: .get, headers: [.authorization: "Bearer \(alice.token)"])
                    #expect(own.status == expected, "\(uri)")
                }
                // The event stream too: 404 before any event is sent.
                let events = try await client.execute(
                    uri: "/v1/jobs/\(id)/events", method: .get, headers: [.authorization: "Bearer \(mallory.token)"])
                #expect(events.status == .notFound)
                #expect(events.errorCode == "job_not_found")
            }
        }
    }

    @Test("signed links refuse tampering and expiry with 403")
    func signedLinks() async throws {
        try await TestHarness.run { harness in
            let job = UUID()
            try await harness.storage.createJobFolder(
                id: job, documentFileName: "document.png", document: Data([1]), metadataJSON: Data("{}".utf8))
            try await harness.storage.writeResult(id: job, fileName: "result.txt", contents: Data("hello".utf8))
            let signer = harness.dependencies.signer
            let link = signer.link(job: job, file: "result.txt")
            try await harness.application().test(.router) { client in
                let ok = try await client.execute(uri: link, method: .get)
                #expect(ok.status == .ok)
                #expect(String(buffer: ok.body) == "hello")

                let flipped = link.dropLast() + (link.last == "0" ? "1" : "0")
                let tampered = try await client.execute(uri: String(flipped), method: .get)
                #expect(tampered.status == .forbidden)
                #expect(tampered.errorCode == "invalid_signature")

                let otherFile = link.replacingOccurrences(of: "result.txt", with: "result.json")
                #expect(try await client.execute(uri: otherFile, method: .get).status == .forbidden)

                let otherJob = link.replacingOccurrences(of: job.uuidString.lowercased(), with: UUID().uuidString.lowercased())
                #expect(try await client.execute(uri: otherJob, method: .get).status == .forbidden)

                let expires = link.split(separator: "expires=")[1].prefix { $0.isNumber }
                let later = link.replacingOccurrences(of: "expires=\(expires)", with: "expires=\(Int(expires)! + 1000)")
                #expect(try await client.execute(uri: later, method: .get).status == .forbidden)

                let old = signer.link(job: job, file: "result.txt", now: Date(timeIntervalSinceNow: -3600))
                let expired = try await client.execute(uri: old, method: .get)
                #expect(expired.status == .forbidden)
                #expect(expired.errorCode == "link_expired")

                // One spelling only: an upper-case id, a zero-padded expiry, a doubled slash, a repeated parameter.
                let upper = link.replacingOccurrences(of: job.uuidString.lowercased(), with: job.uuidString.uppercased())
                #expect(try await client.execute(uri: upper, method: .get).status == .forbidden)
                let padded = link.replacingOccurrences(of: "expires=", with: "expires=0")
                #expect(try await client.execute(uri: padded, method: .get).status == .forbidden)
                let doubled = link.replacingOccurrences(of: "/files/", with: "/files//")
                #expect(try await client.execute(uri: doubled, method: .get).status != .ok)
                let doubledInside = link.replacingOccurrences(of: "/result.txt", with: "//result.txt")
                #expect(try await client.execute(uri: doubledInside, method: .get).status != .ok)
                let repeated = try await client.execute(uri: link + "&expires=\(expires)", method: .get)
                #expect(repeated.status == .badRequest)
                #expect(repeated.errorCode == "repeated_parameter")

                let unsigned = try await client.execute(uri: "/files/\(job.uuidString.lowercased())/result.txt", method: .get)
                #expect(unsigned.status == .forbidden)

                let notAResult = try await client.execute(uri: "/files/\(job.uuidString.lowercased())/metadata.json", method: .get)
                #expect(notAResult.status == .notFound)
                let traversal = try await client.execute(uri: "/files/\(job.uuidString.lowercased())/..%2F..%2Fetc%2Fpasswd", method: .get)
                #expect(traversal.status == .notFound)
            }
        }
    }
}
