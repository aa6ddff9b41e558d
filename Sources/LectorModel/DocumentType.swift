/// The document formats Lector recognises, detected from the bytes, never from a header or a file name.
public enum DocumentType: String, Sendable, CaseIterable, Codable {
    case png, jpeg, tiff, bmp, webp, gif, pnm, pdf

    /// The media type reported to clients and stored with the job.
    public var mediaType: String {
        switch self {
        case .png: "image/png"
        case .jpeg: "image/jpeg"
        case .tiff: "image/tiff"
        case .bmp: "image/bmp"
        case .webp: "image/webp"
        case .gif: "image/gif"
        case .pnm: "image/x-portable-anymap"
        case .pdf: "application/pdf"
        }
    }

    /// The name under which the document is stored in its job folder.
    public var storedFileName: String { "document.\(rawValue)" }

    public init?(mediaType: String) {
        guard let match = Self.allCases.first(where: { $0.mediaType == mediaType }) else { return nil }
        self = match
    }

    /// Detects the type from the first bytes (magic numbers); nil when none matches.
    public static func detect<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> DocumentType? {
        let head = Array(bytes.prefix(16))
        func starts(_ magic: [UInt8], at offset: Int = 0) -> Bool {
            head.count >= offset + magic.count && Array(head[offset..<offset + magic.count]) == magic
        }
        if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if starts([0xFF, 0xD8, 0xFF]) { return .jpeg }
        if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A]) { return .tiff }
        if starts(Array("%PDF-".utf8)) { return .pdf }
        if starts(Array("RIFF".utf8)) && starts(Array("WEBP".utf8), at: 8) { return .webp }
        if starts(Array("GIF87a".utf8)) || starts(Array("GIF89a".utf8)) { return .gif }
        if starts(Array("BM".utf8)) && head.count >= 14 { return .bmp }
        if head.count >= 3, head[0] == UInt8(ascii: "P"), (UInt8(ascii: "1")...UInt8(ascii: "6")).contains(head[1]),
            [UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t")].contains(head[2])
        {
            return .pnm
        }
        return nil
    }
}
