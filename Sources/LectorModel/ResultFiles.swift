/// The files of a finished job, named once: the API serves them, the worker writes them, storage checks names
/// against them, reuse copies them.
extension ResultFormat {
    /// The name of the format's file in a job folder: `result.json`, `result.txt`, `result.hocr`, `result.pdf`.
    public var fileName: String { "result.\(rawValue)" }

    /// The `Content-Type` the file is served with.
    public var contentType: String {
        switch self {
        case .json: "application/json; charset=utf-8"
        case .txt: "text/plain; charset=utf-8"
        case .hocr: "text/vnd.hocr+html; charset=utf-8"
        case .pdf: "application/pdf"
        }
    }
}

public enum ResultFiles {
    /// The format files a job folder may hold; anything else but page pictures is refused.
    public static let formatFileNames: Set<String> = Set(ResultFormat.allCases.map(\.fileName))

    /// The preview of page `number` (1-based): the page as read, long side at most 1600 px, JPEG.
    public static func preview(page number: Int) -> String { "page-\(number).jpg" }
    /// The thumbnail of page `number`: long side at most 240 px, JPEG.
    public static func thumbnail(page number: Int) -> String { "thumb-\(number).jpg" }

    /// Whether `name` is a result file: a format's file, or `page-N.jpg` / `thumb-N.jpg` with N a page number
    /// written without leading zeros (one spelling per file, as for signed links).
    public static func isResultFile(_ name: String) -> Bool {
        if formatFileNames.contains(name) { return true }
        for prefix in ["page-", "thumb-"] where name.hasPrefix(prefix) && name.hasSuffix(".jpg") {
            let digits = name.dropFirst(prefix.count).dropLast(4)
            return (1...5).contains(digits.count) && digits.first != "0" && digits.allSatisfy { ("0"..."9").contains($0) }
        }
        return false
    }

    /// A page task's part for page `number` (`part-NNNNN.json`: the page read alone; `part-NNNNN.pdf`: its
    /// one-page searchable PDF), left for the job's assembly and removed once the job ended.
    public static func pagePart(page number: Int, pdf: Bool = false) -> String {
        let digits = String(number)
        return "part-" + String(repeating: "0", count: max(0, 5 - digits.count)) + digits + (pdf ? ".pdf" : ".json")
    }

    /// Every part pages 1...`pages` may have left.
    public static func pageParts(pages: Int) -> [String] {
        pages < 1 ? [] : (1...pages).flatMap { [pagePart(page: $0), pagePart(page: $0, pdf: true)] }
    }

    /// Whether `name` is a page task's part (`part-NNNNN.json` or `.pdf`, five digits: `PagePart`), which the job's
    /// coordinator reads back and removes once the job ended. Never served.
    public static func isPagePart(_ name: String) -> Bool {
        guard name.hasPrefix("part-"), name.hasSuffix(".json") || name.hasSuffix(".pdf") else { return false }
        let digits = name.dropFirst(5).prefix { $0 != "." }
        return digits.count == 5 && digits.allSatisfy { ("0"..."9").contains($0) }
            && (name.dropFirst(10) == ".json" || name.dropFirst(10) == ".pdf")
    }

    /// Whether `name` is a page picture (served as JPEG).
    public static func isPagePicture(_ name: String) -> Bool { isResultFile(name) && name.hasSuffix(".jpg") }
}
