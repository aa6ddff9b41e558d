import Foundation
import HTTPTypes
import Hummingbird
import LectorModel
import NIOCore

/// The web page: `index.html` at `/`, its scripts and style sheet under `/web/`. The files live in
/// `Sources/LectorAPI/Web/` and are embedded into the binary by `make web` (`WebAssets+Files.swift`).
///
/// Every answer carries a Content-Security-Policy that allows scripts and styles from this origin only (no
/// inline script, no `eval`, no inline style), pictures from here and from `blob:` (page previews), and no
/// framing; job data is put into the page with `textContent` and attributes, never as HTML.
public enum WebAssets {
    public static let contentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
        + "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    /// A file's bytes as served (the embedded text and its final newline).
    public static func contents(of name: String) -> Data? {
        files[name].map { Data(($0 + "\n").utf8) }
    }

    static func contentType(of name: String) -> String? {
        if name.hasSuffix(".html") { return "text/html; charset=utf-8" }
        if name.hasSuffix(".js") { return "text/javascript; charset=utf-8" }
        if name.hasSuffix(".css") { return "text/css; charset=utf-8" }
        if name.hasSuffix(".svg") { return "image/svg+xml" }
        return nil
    }

    static func addRoutes(to router: Router<LectorRequestContext>) {
        router.get("/") { _, _ in try response("index.html") }
        router.get("web/:file") { _, context in try response(context.parameters.get("file") ?? "") }
    }

    static func response(_ name: String) throws -> Response {
        guard let data = contents(of: name), let type = contentType(of: name) else {
            throw APIError(.notFound, .notFound, "no such file")
        }
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[HTTPField.Name("Content-Security-Policy")!] = contentSecurityPolicy
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        // Small files, changed with the binary: revalidate each time rather than risk a stale script.
        headers[.cacheControl] = "no-cache"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
