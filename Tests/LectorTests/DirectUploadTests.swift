import Foundation
@testable import LectorAPI
import LectorCore
import LectorOCR
import Testing

@Suite("Direct uploads: the upload id, the JSON submit's members")
struct DirectUploadTests {
    let signer = ResultLinkSigner(key: Array("a result-link key of some length".utf8), ttl: 60)

    @Test("an upload id is valid for its owner only, unchanged, until its link's expiry and the TTL after it")
    func uploadTicket() throws {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let ticket = UploadTicket(upload: UUID(), owner: 42, expires: Int(now.timeIntervalSince1970) + 900, size: 1234, type: .png)
        let id = ticket.id(signer: signer)
        #expect(UploadTicket.verify(id, owner: 42, signer: signer, ttl: 900, now: now) == .valid(ticket))
        // Still valid after the link expired, for as long again; then expired.
        #expect(UploadTicket.verify(id, owner: 42, signer: signer, ttl: 900, now: now.addingTimeInterval(1700)) == .valid(ticket))
        #expect(UploadTicket.verify(id, owner: 42, signer: signer, ttl: 900, now: now.addingTimeInterval(1801)) == .expired)
        // Another user's, another key's, or any part changed: invalid (an expired forgery is invalid, not expired).
        #expect(UploadTicket.verify(id, owner: 43, signer: signer, ttl: 900, now: now) == .invalid)
        let other = ResultLinkSigner(key: Array("another key".utf8), ttl: 60)
        #expect(UploadTicket.verify(id, owner: 42, signer: other, ttl: 900, now: now) == .invalid)
        var parts = id.split(separator: ".").map(String.init)
        #expect(parts.count == 5)
        for (index, replacement) in [(1, String(Int(parts[1])! + 3600)), (2, "99999"), (3, "pdf"), (0, UUID().uuidString.lowercased()),
                                     (4, String(repeating: "0", count: 64)), (1, "0" + parts[1]), (0, parts[0].uppercased()),
                                     (4, parts[4].uppercased())] {
            var changed = parts
            changed[index] = replacement
            #expect(UploadTicket.verify(changed.joined(separator: "."), owner: 42, signer: signer, ttl: 900, now: now) == .invalid,
                    "part \(index) changed to \(replacement)")
        }
        parts.append("x")
        for bad in [parts.joined(separator: "."), "", ".", "x.y.z", String(repeating: "a", count: 5000), id + " ", " " + id] {
            #expect(UploadTicket.verify(bad, owner: 42, signer: signer, ttl: 900, now: now) == .invalid)
        }
        // A result-link signature is no upload signature (separate domains).
        #expect(signer.authenticationCode(domain: UploadTicket.domain, "x") != signer.authenticationCode(domain: "other", "x"))
    }

    @Test("LECTOR_UPLOAD_URL_TTL: 900 s by default, 60 s to a day; the sweeper's age is twice it and 10 minutes")
    func uploadSettings() {
        #expect(Settings(environment: [:]).uploadURLTTL == 900)
        #expect(Settings(environment: [:]).uploadMaxAge == 2400)
        #expect(Settings(environment: ["LECTOR_UPLOAD_URL_TTL": "5"]).uploadURLTTL == 60)
        #expect(Settings(environment: ["LECTOR_UPLOAD_URL_TTL": "999999999"]).uploadURLTTL == 86_400)
        #expect(Settings(environment: ["LECTOR_UPLOAD_URL_TTL": "-3"]).uploadURLTTL == 900)
    }

    @Test("the JSON submit's members keep their text exactly")
    func rawMembers() throws {
        let text = #" { "upload" : "a.b" , "metadata": {"n": 1.000000000000000000001, "s": "},\"{["}, "options":{"lang":"eng"},"e\u0078":[1,[2]] } "#
        let members = try #require(UploadsController.rawMembers(Array(text.utf8)))
        #expect(members.map(\.key) == ["upload", "metadata", "options", "ex"])
        #expect(members.map { String(decoding: $0.value, as: UTF8.self) } == [
            #""a.b""#, #"{"n": 1.000000000000000000001, "s": "},\"{["}"#, #"{"lang":"eng"}"#, "[1,[2]]",
        ])
        #expect(UploadsController.rawMembers(Array("{}".utf8))?.isEmpty == true)
        #expect(UploadsController.rawMembers(Array("[1]".utf8)) == nil)
        #expect(UploadsController.rawMembers(Array(#"{"a": "unterminated"#.utf8)) == nil)
    }
}
