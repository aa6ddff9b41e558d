import ArgumentParser
import Foundation
import LectorCore
import LectorModel
import LectorOCR

struct OCR: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ocr", abstract: "Run the engine on local files (no database, no server) and print or write the results.")

    /// The API's format names (`txt`, …); `text` is kept as an alias.
    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text = "txt", json, hocr, pdf
        var fileExtension: String { rawValue }

        init?(argument: String) {
            self.init(rawValue: argument == "text" ? "txt" : argument)
        }
    }

    @Argument(help: "Documents: PNG, JPEG, TIFF (all pages), PDF, BMP, WebP, PNM.") var files: [String]
    @Option(help: "Languages joined by '+' (see `tesseract --list-langs`).") var lang: String?
    @Option(help: "auto, document or scene.") var mode: PipelineMode = .auto
    @Option(help: "txt (or text), json, hocr or pdf (pdf: document pages only).") var format: Format = .text
    @Option(help: "Text detector of the scene pipeline: db or east.") var detector: DetectorKind = .db
    @Option(help: "What reads each line: tesseract, or ppocr (every page through the detector; Latin-script languages).")
    var recognizer: RecognizerKind = .tesseract
    @Option(help: "Preprocessing, comma-separated, in order: deskew, orient, grayscale, binarize[:otsu|adaptive], denoise, scale[:factor].")
    var operations: String?
    @Option(help: "Write <name>.<format> for each file into this folder instead of printing (required for several files).")
    var output: String?

    func validate() throws {
        if files.count > 1, output == nil { throw ValidationError("with several files, name a folder with --output") }
        if format == .pdf, output == nil, isatty(STDOUT_FILENO) != 0 { throw ValidationError("--format pdf: redirect stdout or use --output") }
    }

    func run() async throws {
        let settings = Runtime.settings()
        let engines = Runtime.engineFactory(settings)
        // hOCR and the PDF are rendered only when asked for (they cost a good share of a page's time).
        let formats: [ResultFormat] = format == .hocr ? [.hocr] : format == .pdf ? [.pdf] : []
        var options = OCROptions(lang: lang ?? settings.defaultLanguage, mode: mode, detector: detector, formats: formats,
                                  recognizer: recognizer)
        do {
            options.operations = try (operations ?? "").split(separator: ",").map {
                try PreprocessingOperation(parsing: $0.trimmingCharacters(in: .whitespaces))
            }
            try options.validate(availableLanguages: try engines.availableLanguages(), availableDetectors: engines.models.available,
                                 availableRecognizers: engines.availableRecognizers)
        } catch let error as OCRError {
            throw ValidationError(error.message)
        }
        if let output { try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true) }
        let slot = EngineSlot(factory: engines)
        var failures = 0
        for file in files {
            do {
                try await recognize(file, options: options, engines: engines, slot: slot)
            } catch {
                failures += 1
                FileHandle.standardError.write(Data("\(file): \(error)\n".utf8))
            }
        }
        await slot.shutdown()
        if failures > 0 { throw CommandFailure(description: "\(failures) of \(files.count) files failed") }
    }

    private func recognize(_ file: String, options: OCROptions, engines: TesseractEngineFactory, slot: EngineSlot) async throws {
        guard let data = FileManager.default.contents(atPath: file) else { throw CommandFailure(description: "cannot read the file") }
        guard let type = DocumentType.detect(data), engines.supportedTypes.contains(type) else {
            throw CommandFailure(description: "not a document this engine reads")
        }
        let started = ContinuousClock.now
        let result = try await slot.recognize(OCRDocument(data: data, type: type), options: options)
        let seconds = (ContinuousClock.now - started).secondsValue
        let bytes: Data
        switch format {
        case .text: bytes = Data((result.text + "\n").utf8)
        case .json: bytes = try JSONEncoder.lector(pretty: true).encode(result) + Data("\n".utf8)
        case .hocr: bytes = result.renderings.hocr ?? Data()
        case .pdf:
            guard let pdf = result.renderings.pdf else {
                throw CommandFailure(description: "no searchable PDF: Tesseract's PDF renderer covers pages read by the document pipeline (use --mode document)")
            }
            bytes = pdf
        }
        if let output {
            let name = URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent + "." + format.fileExtension
            try bytes.write(to: URL(fileURLWithPath: output).appendingPathComponent(name))
        } else {
            FileHandle.standardOutput.write(bytes)
        }
        let modes = result.pages.compactMap { $0.mode?.rawValue }.joined(separator: ",")
        FileHandle.standardError.write(Data(String(format: "%@: %d page(s), mode %@, %.3f s\n", file, result.pages.count, modes, seconds).utf8))
    }
}

extension PipelineMode: ExpressibleByArgument {}
extension DetectorKind: ExpressibleByArgument {}
extension RecognizerKind: ExpressibleByArgument {}
