import Foundation
import LectorModel
import NIOPosix

/// What a page task leaves for its job's coordinator (`part-NNNNN.json` in the job's storage, beside the one-page
/// PDF `part-NNNNN.pdf` when it made one), and how the coordinator puts the parts together: the same result the
/// engine makes of the whole document (docs/design/queue.md, "Page tasks").
public struct PagePart: Codable, Sendable, Equatable {
    public var page: OCRPage
    /// The page's hOCR `ocr_page` element, when the job asked for hOCR.
    public var hocr: String?
    /// Whether `part-NNNNN.pdf` holds the page's searchable PDF.
    public var pdf: Bool
    public var mode: PipelineMode
    public var seconds: Double
    /// The engine that read the page ("tesseract 5.3.0").
    public var engine: String

    public init(_ reading: PageReading) {
        self.page = reading.page
        self.hocr = reading.hocr
        self.pdf = reading.pdf != nil
        self.mode = reading.timing.mode
        let parts = reading.timing.duration.components
        self.seconds = Double(parts.seconds) + Double(parts.attoseconds) / 1e18
        self.engine = reading.engine
    }

    /// The storage names of page `page`'s part (`ResultFiles.pagePart`): not result files of any format, and
    /// removed once the job ended.
    public static func jsonName(page: Int) -> String { ResultFiles.pagePart(page: page) }
    public static func pdfName(page: Int) -> String { ResultFiles.pagePart(page: page, pdf: true) }
}

public enum PageAssembly {
    /// `result`, on NIO's blocking thread pool (joining the pages' PDFs runs a tool and waits for it).
    public static func assemble(parts: [PagePart], pdfs: [Data], options: OCROptions) async throws -> OCRResult {
        try await NIOThreadPool.singleton.runIfActive { try result(parts: parts, pdfs: pdfs, options: options, engine: "") }
    }

    /// The document's result from its pages' parts (in any order; each page once): the pages in order, their
    /// text, hOCR when the job asked for it, and the searchable PDF when it asked for it and every page has one
    /// (`pdfs[i]` the PDF of `parts` sorted by page, read by the caller for those parts whose `pdf` is true).
    public static func result(
        parts: [PagePart], pdfs: [Data], options: OCROptions, engine fallback: String
    ) throws(OCRError) -> OCRResult {
        let sorted = parts.sorted { $0.page.number < $1.page.number }
        let engine = sorted.first?.engine ?? fallback
        var hocr: Data?
        if options.wants(.hocr) {
            hocr = Data(HOCR.document(pages: sorted.map { $0.hocr ?? HOCR.page($0.page) }, engine: engine, language: options.lang).utf8)
        }
        var pdf: Data?
        if options.wants(.pdf), !sorted.isEmpty, sorted.allSatisfy(\.pdf), pdfs.count == sorted.count {
            pdf = try unite(pdfs)
        }
        var result = OCRResult(engine: engine, language: options.lang, pages: sorted.map(\.page), renderings: Renderings(hocr: hocr, pdf: pdf))
        result.pageTimings = sorted.map { PageTiming(mode: $0.mode, duration: .seconds($0.seconds)) }
        return result
    }

    /// One PDF of the given one-page PDFs, in order (poppler's `pdfunite`, under the rasteriser's time and memory
    /// limits).
    static func unite(_ pdfs: [Data]) throws(OCRError) -> Data {
        if pdfs.count == 1 { return pdfs[0] }
        guard let tool = PDFRasterizer.tool("pdfunite") else {
            throw OCRError(.engineFailure, "pdfunite (poppler-utils) is not installed: the pages' PDFs cannot be joined")
        }
        let folder: URL
        do {
            folder = try ScratchFolder.create(kind: "unite")
        } catch {
            throw OCRError(.engineFailure, "could not create a temporary folder: \(error.localizedDescription)")
        }
        defer { try? FileManager.default.removeItem(at: folder) }
        var arguments = ["-s", "KILL", String(PDFRasterizer.timeLimitSeconds), "/usr/bin/prlimit",
                         "--as=\(PDFRasterizer.memoryLimitBytes)", "--", tool]
        do {
            for (index, pdf) in pdfs.enumerated() {
                let file = folder.appendingPathComponent("\(index).pdf")
                try pdf.write(to: file)
                arguments.append(file.path)
            }
        } catch {
            throw OCRError(.engineFailure, "could not write a page's PDF: \(error.localizedDescription)")
        }
        let output = folder.appendingPathComponent("document.pdf")
        arguments.append(output.path)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw OCRError(.engineFailure, "could not start pdfunite: \(error.localizedDescription)")
        }
        process.waitUntilExit()
        guard process.terminationReason == .exit, process.terminationStatus == 0,
            let united = try? Data(contentsOf: output)
        else {
            throw OCRError(.engineFailure, "pdfunite could not join the pages' PDFs (exit status \(process.terminationStatus))")
        }
        return united
    }
}
