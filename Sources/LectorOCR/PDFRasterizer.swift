import CTesseract
import Foundation
import LectorModel

/// Rasterises PDF pages with poppler's command-line tools (`pdfinfo`, `pdftoppm`), one page at a time.
///
/// PDFs are hostile input with a large attack surface, so poppler runs in its own process: a crash or a hang
/// costs that process, not the worker. Each run is limited in time and address space; the page count and the
/// page sizes come from `pdfinfo` first, so that the pixel limit is checked before anything is rendered.
final class PDFRasterizer {
    /// The folder (private to this document) holding the PDF and the rendered page.
    private let folder: URL
    private let file: URL
    let dpi: Int
    private let maxPagePixels: Int
    /// One time budget for the whole document, shared by every poppler run on it.
    private let deadline: ContinuousClock.Instant

    static let timeLimitSeconds = 300
    static let memoryLimitBytes = 2 << 30
    /// The most of a tool's error output kept (its end): a hostile PDF can make poppler print gigabytes.
    static let maxErrorBytes = 8 * 1024

    static var isInstalled: Bool {
        tool("pdftoppm") != nil && tool("pdfinfo") != nil
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/timeout")
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/prlimit")
    }

    init(_ data: Data, dpi: Int, maxPagePixels: Int = Int.max) throws(OCRError) {
        self.maxPagePixels = maxPagePixels
        deadline = .now + .seconds(Self.timeLimitSeconds)
        guard Self.isInstalled else {
            throw OCRError(.unsupportedOption, "PDF input needs poppler's pdftoppm and pdfinfo (Debian package poppler-utils)")
        }
        self.dpi = dpi
        do {
            folder = try ScratchFolder.create(kind: "pdf")
            file = folder.appendingPathComponent("document.pdf")
            try data.write(to: file)
        } catch {
            throw OCRError(.engineFailure, "could not write the PDF to a temporary folder: \(error.localizedDescription)")
        }
    }

    deinit { try? FileManager.default.removeItem(at: folder) }

    /// The pages' sizes in pixels at `dpi`, at most `maxPages + 1` of them (one more than allowed tells that
    /// the limit is exceeded without listing a million pages).
    func pageSizes(maxPages: Int) throws(OCRError) -> [(width: Int, height: Int)] {
        try pageSizes(first: 1, last: maxPages + 1, fillDeclared: true)
    }

    /// The sizes of pages `first`...`last` (1-based) in pixels at `dpi`; with `fillDeclared`, pages the document
    /// declares but `pdfinfo` gave no size for count with the last size seen.
    func pageSizes(first: Int, last: Int, fillDeclared: Bool = false) throws(OCRError) -> [(width: Int, height: Int)] {
        let maxPages = last - 1
        let output = try run("pdfinfo", ["-f", String(first), "-l", String(last), file.path])
        var declared = 0
        var sizes: [(width: Int, height: Int)] = []
        for line in output.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.first == "Pages:", fields.count == 2, let count = Int(fields[1]) { declared = count }
            // "Page    1 size: 612 x 792 pts (letter)"; with /Rotate, "Page    1 rot:  90" follows separately.
            if fields.count >= 6, fields[0] == "Page", fields[2] == "size:", let w = Double(fields[3]), let h = Double(fields[5]) {
                guard w.isFinite, h.isFinite, w > 0, h > 0, w < 1e6, h < 1e6 else {
                    throw OCRError(.unreadableDocument, "PDF page \(fields[1]) has an invalid size")
                }
                sizes.append((Int((w / 72 * Double(dpi)).rounded(.up)), Int((h / 72 * Double(dpi)).rounded(.up))))
            }
            if fields.count >= 4, fields[0] == "Page", fields[2] == "rot:", let rotation = Int(fields[3]),
                rotation % 180 != 0, let last = sizes.popLast()
            {
                sizes.append((last.height, last.width))
            }
        }
        if fillDeclared, declared > sizes.count {
            sizes += Array(repeating: sizes.last ?? (1, 1), count: min(declared, maxPages + 1) - sizes.count)
        }
        return sizes
    }

    /// Renders one page (1-based) as an image. The crop box is rendered: the size `pdfinfo` reported. As PPM,
    /// poppler's own format: the same pixels as PNG, without the compression, which cost 12 times the rest of
    /// `pdftoppm`'s work (0.29 s of CPU against 0.024 for a receipt page at 300 dpi: BENCHMARKS.md, PAGES).
    func render(page: Int, cancellation: OCRCancellation = OCRCancellation()) throws(OCRError) -> Pix {
        let prefix = folder.appendingPathComponent("page")
        let image = folder.appendingPathComponent("page.ppm")
        defer { try? FileManager.default.removeItem(at: image) }
        _ = try run("pdftoppm", ["-q", "-cropbox", "-r", String(dpi), "-f", String(page), "-l", String(page),
                                 "-singlefile", file.path, prefix.path], cancellation: cancellation)
        // The rendered size again, from the image's header, before its pixels are decoded.
        var format: Int32 = 0, w: Int32 = 0, h: Int32 = 0, bps: Int32 = 0, spp: Int32 = 0, cmap: Int32 = 0
        guard pixReadHeader(image.path, &format, &w, &h, &bps, &spp, &cmap) == 0 else {
            throw OCRError(.unreadableDocument, "PDF page \(page) could not be rasterised")
        }
        guard Int(w) * Int(h) <= maxPagePixels else {
            throw OCRError(.limitExceeded, "PDF page \(page) renders to \(w) × \(h) pixels, over the limit of \(maxPagePixels) pixels per page")
        }
        let pix = try Pix(owning: pixRead(image.path), failure: "PDF page \(page) could not be rasterised")
        _ = pixSetResolution(pix.pointer, Int32(dpi), Int32(dpi))
        return pix
    }

    /// Runs a poppler tool under `timeout` and `prlimit`; returns its standard output.
    private func run(_ tool: String, _ arguments: [String], cancellation: OCRCancellation = OCRCancellation()) throws(OCRError) -> String {
        guard let executable = Self.tool(tool) else { throw OCRError(.unsupportedOption, "\(tool) is not installed") }
        let left = (deadline - .now).components
        let remaining = Int(left.seconds) + (left.attoseconds > 0 ? 1 : 0)
        guard remaining > 0 else {
            throw OCRError(.unreadableDocument, "the PDF took more than \(Self.timeLimitSeconds) s to rasterise")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        process.arguments = ["-s", "KILL", String(remaining), "/usr/bin/prlimit",
                             "--as=\(Self.memoryLimitBytes)", "--", executable] + arguments
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw OCRError(.engineFailure, "could not start \(tool): \(error.localizedDescription)")
        }
        // Drain both pipes (keeping only the end of each) before waiting, so a chatty tool can neither block on
        // a full pipe nor fill the worker's memory; stop the tool when the job is cancelled.
        let errorData = PipeDrain(errors, keep: Self.maxErrorBytes)
        let outputData = PipeDrain(output, keep: 1 << 20)
        while outputData.done.wait(timeout: .now() + .milliseconds(200)) == .timedOut {
            if cancellation.shouldStop, process.isRunning { process.terminate() }
        }
        errorData.done.wait()
        process.waitUntilExit()
        try cancellation.check()
        let status = process.terminationStatus
        guard process.terminationReason == .exit, status == 0 else {
            // `timeout -s KILL` kills its own process group, and the memory limit ends the tool with a signal.
            if process.terminationReason == .uncaughtSignal || status == 124 || status == 137 {
                throw OCRError(.unreadableDocument, "the PDF took more than \(Self.timeLimitSeconds) s or too much memory to \(tool == "pdfinfo" ? "read" : "rasterise")")
            }
            let message = String(decoding: errorData.value, as: UTF8.self)
                .split(separator: "\n").last.map(String.init) ?? "exit status \(status)"
            if message.contains("password") { throw OCRError(.unreadableDocument, "the PDF is encrypted (password-protected)") }
            throw OCRError(.unreadableDocument, "not a readable PDF: \(message.prefix(200))")
        }
        return String(decoding: outputData.value, as: UTF8.self)
    }

    /// The tool's path on the PATH, or in /usr/bin.
    /// poppler's version (`pdftoppm -v`, first line), or "none"; read once per process.
    static let version: String = {
        guard let path = tool("pdftoppm") else { return "none" }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["-v"]
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = pipe
        guard (try? process.run()) != nil else { return "unknown" }
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let line = String(decoding: output, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? "unknown"
        return String(line.prefix(80))
    }()

    /// Where poppler's tools are looked for: the package managers' folders, not the process's PATH (library code
    /// never reads the environment; a worker's PATH should not choose which program reads hostile PDFs).
    static let toolFolders = ["/usr/bin", "/usr/local/bin", "/opt/homebrew/bin", "/bin"]

    static func tool(_ name: String) -> String? {
        for folder in toolFolders {
            let candidate = "\(folder)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}

/// Drains a pipe on a background thread, keeping at most its last `keep` bytes; `done` is signalled at its end.
private final class PipeDrain: @unchecked Sendable {
    // Written only by the thread before `done` is signalled, read only after waiting on `done`.
    var value = Data()
    let done = DispatchSemaphore(value: 0)

    init(_ pipe: Pipe, keep: Int) {
        let handle = pipe.fileHandleForReading
        Thread.detachNewThread { [self] in
            while let chunk = try? handle.read(upToCount: 64 * 1024), !chunk.isEmpty {
                value.append(chunk)
                if value.count > 2 * keep { value = value.suffix(keep) }
            }
            if value.count > keep { value = value.suffix(keep) }
            done.signal()
        }
    }
}
