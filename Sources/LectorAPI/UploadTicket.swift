import Foundation
import LectorCore
import LectorModel

/// A direct upload's id: stateless, no table. It carries what the job's submit must check and is signed with the
/// result-link key (HMAC-SHA256, in a domain of its own) over the owner's user id too:
///
///     <upload uuid>.<link expiry, unix seconds>.<declared size>.<document type>.<hex HMAC>
///
/// so it names one object (`<prefix>/.direct-uploads/<owner id>/<upload uuid>`) of one user, and any change (another
/// user, size, type, expiry or uuid) breaks the signature. The presigned PUT is valid until `expires`; the id
/// makes a job until `expires + ttl` (as long again, for a client that uploaded at the last moment).
struct UploadTicket: Sendable, Equatable {
    var upload: UUID
    var owner: Int64
    /// When the presigned PUT expires (unix seconds).
    var expires: Int
    var size: Int64
    var type: DocumentType

    enum Verdict: Sendable, Equatable {
        case valid(UploadTicket)
        case expired
        case invalid
    }

    static let domain = "lector-upload-v1"

    private var message: String {
        "\(owner)\n\(upload.uuidString.lowercased())\n\(expires)\n\(size)\n\(type.rawValue)"
    }

    func id(signer: ResultLinkSigner) -> String {
        let mac = signer.authenticationCode(domain: Self.domain, message).hexString
        return "\(upload.uuidString.lowercased()).\(expires).\(size).\(type.rawValue).\(mac)"
    }

    /// Checks `id` for `owner`: `.invalid` for anything not written by `id(signer:)` for this owner (another
    /// user's id included), `.expired` once `now` is past `expires + ttl`.
    static func verify(_ id: String, owner: Int64, signer: ResultLinkSigner, ttl: Int, now: Date = Date()) -> Verdict {
        guard id.utf8.count <= 200 else { return .invalid }
        let parts = id.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        func number(_ text: String) -> Int64? {
            guard (1...15).contains(text.utf8.count), text.utf8.allSatisfy({ (48...57).contains($0) }), text.first != "0"
            else { return nil }
            return Int64(text)
        }
        guard parts.count == 5, let upload = UUID(uuidString: parts[0]), parts[0] == upload.uuidString.lowercased(),
            let expires = number(parts[1]), let size = number(parts[2]), let type = DocumentType(rawValue: parts[3]),
            parts[4].utf8.count == 64, parts[4].utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) })
        else { return .invalid }
        let ticket = UploadTicket(upload: upload, owner: owner, expires: Int(expires), size: size, type: type)
        let expected = signer.authenticationCode(domain: domain, ticket.message).hexString
        // Constant time: every byte compared.
        guard expected.utf8.count == parts[4].utf8.count,
            zip(expected.utf8, parts[4].utf8).reduce(UInt8(0), { $0 | ($1.0 ^ $1.1) }) == 0
        else { return .invalid }
        return Int(now.timeIntervalSince1970) > ticket.expires + ttl ? .expired : .valid(ticket)
    }
}
