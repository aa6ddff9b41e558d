import Crypto
import Foundation

/// MD5 of `text`'s UTF-8 bytes.
func Insecure_md5(_ text: String) -> Insecure.MD5.Digest {
    Insecure.MD5.hash(data: Data(text.utf8))
}

/// MD5 of `data` in lowercase hex (a single-part upload's ETag).
func Insecure_md5Hex(_ data: Data) -> String {
    Insecure.MD5.hash(data: data).map { String(format: "%02x", $0) }.joined()
}

/// SHA-256 of `text`'s UTF-8 bytes.
func SHA256Hash(_ text: String) -> SHA256.Digest {
    SHA256.hash(data: Data(text.utf8))
}
