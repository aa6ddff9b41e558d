import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import LectorCore
@testable import LectorOCR
import LectorModel
import Testing

/// The engine's pipelines, preprocessing, PDF input and output formats, driven through `TesseractEngine` with
/// images rendered here.
@Suite("Pipelines, preprocessing and formats")
struct PipelineTests {
    static let lines = ["The quick brown fox jumps", "over the lazy dog again", "Invoice number 4217 total"]

    static func engine(maxPagePixels: Int = 20_000_000, maxPages: Int = 10, pdfDPI: Int = 150) throws -> any OCREngine {
        try TesseractEngineFactory(dataPath: nil, limits: OCRLimits(maxPagePixels: maxPagePixels, maxPages: maxPages),
                                   pdfDPI: pdfDPI).makeEngine()
    }

    static func recognize(_ engine: any OCREngine, _ data: Data, _ options: OCROptions) throws -> OCRResult {
        let type = try #require(DocumentType.detect(data))
        return try engine.recognize(OCRDocument(data: data, type: type), options: options, cancellation: OCRCancellation())
    }

    /// Converts an image with ImageMagick, e.g. `["-rotate", "180"]`.
    static func transform(_ image: Data, _ arguments: [String], format: String = "png") throws -> Data {
        let folder = FileManager.default.temporaryDirectory
        let input = folder.appendingPathComponent("lector-\(UUID().uuidString).png")
        let output = folder.appendingPathComponent("lector-\(UUID().uuidString).\(format)")
        defer {
            try? FileManager.default.removeItem(at: input)
            try? FileManager.default.removeItem(at: output)
        }
        try image.write(to: input)
        try TestImages.runTool(TestImages.convert, [input.path] + arguments + ["-depth", "8", "\(format):\(output.path)"])
        return try Data(contentsOf: output)
    }

    /// A colourful "photo" (a seeded plasma texture) with one rotated line of outlined text.
    static func scenePhoto() throws -> Data {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("lector-\(UUID().uuidString).jpg")
        defer { try? FileManager.default.removeItem(at: output) }
        try TestImages.runTool(TestImages.convert, [
            "-seed", "7", "-size", "900x600", "plasma:red-blue", "-font", "DejaVu-Sans-Bold", "-pointsize", "60",
            "-fill", "yellow", "-stroke", "black", "-draw", "rotate 12 text 200,250 'OPEN DAILY'", output.path,
        ])
        return try Data(contentsOf: output)
    }

    static func words(_ result: OCRResult) -> [String] {
        result.pages.flatMap { $0.lines.flatMap { $0.words.map(\.text) } }
    }

    // MARK: options

    @Test("operations parse from name[:argument]; bad names and arguments are refused with a reason")
    func operationParsing() throws {
        #expect(try PreprocessingOperation(parsing: "binarize") == .binarize(.otsu))
        #expect(try PreprocessingOperation(parsing: "binarize:adaptive") == .binarize(.adaptive))
        #expect(try PreprocessingOperation(parsing: "scale") == .scale(2))
        #expect(try PreprocessingOperation(parsing: "scale:1.5") == .scale(1.5))
        for bad in ["sharpen", "scale:9", "scale:0", "scale:nan", "scale:", "binarize:magic", "deskew:3", "", "orient:"] {
            #expect(throws: OCRError.self, "\(bad)") { try PreprocessingOperation(parsing: bad) }
        }
        do {
            _ = try PreprocessingOperation(parsing: "sharpen")
        } catch {
            #expect(error.message.contains("allowed: deskew, orient, grayscale, binarize, denoise, scale"))
        }
    }

    @Test("options round-trip through the stored JSON; old jobs (lang only) get the defaults")
    func optionsCoding() throws {
        let options = OCROptions(lang: "eng", mode: .scene, operations: [.deskew, .binarize(.adaptive), .scale(1.5)], detector: .db)
        let json = try JSONEncoder().encode(options)
        #expect(String(decoding: json, as: UTF8.self).contains(#""binarize:adaptive""#))
        #expect(try JSONDecoder().decode(OCROptions.self, from: json) == options)
        let old = try JSONDecoder().decode(OCROptions.self, from: Data(#"{"lang":"eng"}"#.utf8))
        // A job stored before `formats` existed was promised every format: it keeps them.
        #expect(old == OCROptions(lang: "eng", mode: .auto, operations: [], detector: .db, formats: ResultFormat.allCases))
        // New options: json and txt unless more are asked for; always sorted, without repeats, json and txt kept.
        #expect(OCROptions(lang: "eng").formats == [.json, .txt])
        let asked = OCROptions(lang: "eng", formats: [.pdf, .hocr, .pdf])
        #expect(asked.formats == [.json, .txt, .hocr, .pdf] && asked.wants(.pdf))
        #expect(try JSONDecoder().decode(OCROptions.self, from: JSONEncoder().encode(OCROptions(lang: "eng"))).formats == [.json, .txt])
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(OCROptions.self, from: Data(#"{"lang":"eng","operations":["melt"]}"#.utf8))
        }
        // EAST is refused up front when its model is not installed, unless the page layout pipeline is forced.
        #expect(throws: OCRError.self) {
            try OCROptions(lang: "eng", mode: .scene, detector: .east).validate(availableLanguages: ["eng"], availableDetectors: [.db])
        }
        try OCROptions(lang: "eng", mode: .document, detector: .east).validate(availableLanguages: ["eng"], availableDetectors: [.db])
    }

    // MARK: preprocessing

    @Test("orient turns an upside-down page back; without it Tesseract reads nonsense")
    func orient() throws {
        let engine = try Self.engine()
        let upsideDown = try Self.transform(try TestImages.render(Self.lines), ["-rotate", "180"])
        let plain = try Self.recognize(engine, upsideDown, OCROptions(lang: "eng", mode: .document))
        #expect(!plain.text.contains("quick brown fox"), "\(plain.text)")
        let oriented = try Self.recognize(engine, upsideDown, OCROptions(lang: "eng", mode: .document, operations: [.orient]))
        for line in Self.lines { #expect(oriented.text.contains(line), "\(oriented.text)") }
    }

    @Test("deskew, binarize, denoise and grayscale keep the text; scale changes the page's pixels and its boxes")
    func operations() throws {
        let engine = try Self.engine()
        let page = try TestImages.render(Self.lines)
        let skewed = try Self.transform(page, ["-background", "white", "-rotate", "4"])
        let cleaned = try Self.recognize(engine, skewed, OCROptions(
            lang: "eng", mode: .document, operations: [.deskew, .grayscale, .binarize(.adaptive), .denoise]))
        for line in Self.lines { #expect(cleaned.text.contains(line), "\(cleaned.text)") }
        // After deskewing, the words of one line sit level: their tops differ by a few pixels, not by the
        // ~60 px a 4° slope puts across a 900 px line.
        let firstLine = try #require(cleaned.pages.first?.lines.first)
        let tops = firstLine.words.map(\.box.y)
        #expect((tops.max() ?? 0) - (tops.min() ?? 0) < 15, "\(tops)")

        let plain = try Self.recognize(engine, page, OCROptions(lang: "eng", mode: .document))
        let scaled = try Self.recognize(engine, page, OCROptions(lang: "eng", mode: .document, operations: [.scale(2), .binarize(.otsu)]))
        #expect(scaled.pages[0].width == plain.pages[0].width * 2)
        #expect(scaled.pages[0].height == plain.pages[0].height * 2)
        let before = try #require(plain.pages[0].lines.first?.words.first?.box)
        let after = try #require(scaled.pages[0].lines.first?.words.first?.box)
        #expect(abs(after.x - 2 * before.x) <= 6 && abs(after.width - 2 * before.width) <= 8, "\(before) \(after)")
        // (Otsu on a 2× page sometimes reads "Jumps" for "jumps": compare case-insensitively.)
        for line in Self.lines { #expect(scaled.text.lowercased().contains(line.lowercased()), "\(scaled.text)") }

        // Scaling past the pixel limit fails the job with a reason instead of allocating.
        let small = try Self.engine(maxPagePixels: 1_000_000)
        do {
            _ = try Self.recognize(small, page, OCROptions(lang: "eng", operations: [.scale(4)]))
            Issue.record("scaled past the pixel limit")
        } catch let error as OCRError {
            #expect(error.kind == .limitExceeded)
        }
    }

    // MARK: pipelines

    @Test("scene: a rotated line on a textured photo is read, with a rotated polygon in the photo's pixels")
    func scene() throws {
        let engine = try Self.engine()
        let photo = try Self.scenePhoto()
        let result = try Self.recognize(engine, photo, OCROptions(lang: "eng", mode: .scene))
        let page = try #require(result.pages.first)
        #expect(page.mode == .scene)
        #expect(page.width == 900 && page.height == 600)
        let line = try #require(page.lines.first { $0.text.contains("OPEN") })
        #expect(line.text == "OPEN DAILY", "\(page.lines.map(\.text))")
        // The text was drawn from (200, 250) rotated 12° clockwise: the polygon's top edge slopes down to the
        // right by about tan(12°) and starts near the drawing origin.
        let p = line.polygon
        #expect(p.count == 4)
        let slope = Double(p[1].y - p[0].y) / Double(p[1].x - p[0].x)
        #expect(abs(slope - tan(12 * Double.pi / 180)) < 0.08, "\(p)")
        #expect(abs(p[3].x - 190) < 60 && abs(p[3].y - 290) < 60, "\(p)")
        // Words are mapped back too, inside the line's box.
        for word in line.words {
            #expect(word.box.x >= line.box.x - 3 && word.box.x + word.box.width <= line.box.x + line.box.width + 3, "\(word)")
        }
        // Tesseract's own layout on the same photo finds nothing of it: this is why the pipeline exists.
        let document = try Self.recognize(engine, photo, OCROptions(lang: "eng", mode: .document))
        #expect(!document.text.contains("OPEN DAILY"), "\(document.text)")
    }

    @Test("auto sends a rendered page to the document pipeline and a photo to the scene pipeline")
    func auto() throws {
        let engine = try Self.engine()
        let page = try Self.recognize(engine, try TestImages.render(Self.lines), OCROptions(lang: "eng"))
        #expect(page.pages[0].mode == .document)
        for line in Self.lines { #expect(page.text.contains(line)) }
        let photo = try Self.recognize(engine, try Self.scenePhoto(), OCROptions(lang: "eng"))
        #expect(photo.pages[0].mode == .scene)
        #expect(photo.text.contains("OPEN DAILY"))
        // A grey scan of a page (no colour, mostly paper) is still a document.
        let grey = try Self.transform(try TestImages.render(Self.lines), ["-fill", "gray85", "-opaque", "white", "-attenuate", "0.3", "+noise", "Gaussian", "-colorspace", "Gray"])
        #expect(try Self.recognize(engine, grey, OCROptions(lang: "eng")).pages[0].mode == .document)
        // Tinted paper is still paper; a photo taken at dusk is still a photo.
        let yellow = try Self.transform(try TestImages.render(Self.lines), ["-fill", "#f5eec0", "-opaque", "white"])
        #expect(try Self.recognize(engine, yellow, OCROptions(lang: "eng")).pages[0].mode == .document)
        let dusk = try Self.transform(try Self.scenePhoto(), ["-modulate", "40"])
        #expect(try Self.recognize(engine, dusk, OCROptions(lang: "eng")).pages[0].mode == .scene)
    }

    /// A receipt-like page, black on white, with two white-on-black bands: a table's header and a total.
    static func invertedBandsPage() throws -> Data {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("lector-\(UUID().uuidString).png")
        defer { try? FileManager.default.removeItem(at: output) }
        try TestImages.runTool(TestImages.convert, [
            "-size", "1200x600", "xc:white", "-font", "DejaVu-Sans", "-pointsize", "36", "-fill", "black",
            "-annotate", "+40+70", "ACME STORE SDN BHD", "-annotate", "+40+130", "Receipt no 10023 date 2017-03-01",
            "-draw", "rectangle 0,170 1200,240", "-fill", "white", "-annotate", "+40+220", "ITEM QTY PRICE AMOUNT",
            "-fill", "black", "-annotate", "+40+300", "Bread 1 3.50 3.50", "-annotate", "+40+360", "Milk 2 4.20 8.40",
            "-draw", "rectangle 0,460 1200,530", "-fill", "white", "-annotate", "+40+510", "TOTAL RM 11.90",
            "-depth", "8", "png:\(output.path)",
        ])
        return try Data(contentsOf: output)
    }

    @Test("white-on-black bands of a document page are read: Tesseract's second, inverted reading of low-confidence lines stays on")
    func invertedBands() throws {
        // tessedit_do_invert=0 would save ~5% of a receipt's recognition (BENCHMARKS.md, P1, sixth run) and leave
        // SROIE's bag-of-words F1 as it is, but it turns both bands below into nonsense ("OND Mew NiCle Nan").
        let engine = try Self.engine()
        let page = try Self.invertedBandsPage()
        for mode in [PipelineMode.document, .auto] {
            let result = try Self.recognize(engine, page, OCROptions(lang: "eng", mode: mode))
            #expect(result.pages[0].mode == .document)
            for line in ["ITEM QTY PRICE AMOUNT", "TOTAL RM 11.90", "Milk 2 4.20 8.40"] {
                #expect(result.text.contains(line), "\(mode): \(result.text)")
            }
        }
    }

    @Test("the inverted reading's check: dark bands and boxes keep it, dark text on paper does not")
    func darkAreaCheck() throws {
        func features(_ image: Data) throws -> PageClassifier.Features {
            let pages = try PageImages(document: OCRDocument(data: image, type: .png), limits: OCRLimits(maxPagePixels: 20_000_000, maxPages: 1))
            return try #require(PageClassifier.features(try pages.page(0)))
        }
        // Dark text only, on white and on pale yellow paper, even a large bold heading: the check skips it.
        let plain = try features(TestImages.render(Self.lines))
        #expect(!PageClassifier.mayHoldLightOnDark(plain), "\(plain)")
        let yellow = try features(Self.transform(TestImages.render(Self.lines), ["-fill", "#f5eec0", "-opaque", "white"]))
        #expect(!PageClassifier.mayHoldLightOnDark(yellow), "\(yellow)")
        let heading = try features(Self.page(["-font", "DejaVu-Sans-Bold", "-pointsize", "28", "-annotate", "+60+200", "STATEMENT",
                                              "-font", "DejaVu-Sans", "-pointsize", "30", "-annotate", "+60+320", "Account 1234 5678"]))
        #expect(!PageClassifier.mayHoldLightOnDark(heading), "\(heading)")
        // Display type as thick as a band keeps it too: a false alarm costs time, never text.
        let display = try features(Self.page(["-font", "DejaVu-Sans-Bold", "-pointsize", "96", "-annotate", "+60+200", "STATEMENT"]))
        #expect(PageClassifier.mayHoldLightOnDark(display), "\(display)")
        // White text on black bands, and a table header band 6 mm high on a 300 dpi A4 page: the check keeps it.
        // White text on an Office-blue header (luminance ~110) on a page that also has a black logo.
        let blue = try features(Self.page([
            "-draw", "rectangle 40,40 140,140", "-pointsize", "30", "-annotate", "+200+100", "Invoice 2041",
            "-fill", "#4472C4", "-draw", "rectangle 0,200 1200,250", "-fill", "white", "-annotate", "+40+235", "ITEM QTY PRICE",
        ]))
        #expect(PageClassifier.mayHoldLightOnDark(blue), "\(blue)")
        // A band at the very bottom edge.
        let footer = try features(Self.page(["-pointsize", "30", "-annotate", "+40+100", "Thank you",
                                             "-draw", "rectangle 0,770 1200,800", "-fill", "white", "-pointsize", "20", "-annotate", "+40+792", "PAID"]))
        #expect(PageClassifier.mayHoldLightOnDark(footer), "\(footer)")
        let bands = try features(Self.invertedBandsPage())
        #expect(PageClassifier.mayHoldLightOnDark(bands), "\(bands)")
        let thinBand = try features(Self.page([
            "-pointsize", "30", "-annotate", "+200+300", "A letter with a thin header band",
            "-draw", "rectangle 150,400 2300,470", "-fill", "white", "-pointsize", "40", "-annotate", "+200+455", "ITEM QTY PRICE",
        ], size: "2480x3508"))
        #expect(PageClassifier.mayHoldLightOnDark(thinBand), "\(thinBand)")
    }

    /// A white page drawn with ImageMagick arguments (black DejaVu Sans unless they say otherwise).
    static func page(_ drawing: [String], size: String = "1200x800") throws -> Data {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("lector-\(UUID().uuidString).png")
        defer { try? FileManager.default.removeItem(at: output) }
        try TestImages.runTool(TestImages.convert, ["-size", size, "xc:white", "-font", "DejaVu-Sans", "-fill", "black"]
            + drawing + ["-depth", "8", "png:\(output.path)"])
        return try Data(contentsOf: output)
    }

    @Test("a colour page is read from Tesseract's grey page, and its searchable PDF still shows it in colour")
    func colourPageAndPDF() throws {
        let engine = try Self.engine()
        let page = try Self.page([
            "-fill", "#1030a0", "-pointsize", "44", "-annotate", "+40+90", "Blue ink on a red ribbon",
            "-fill", "#c02020", "-draw", "rectangle 0,200 1200,260", "-fill", "black", "-annotate", "+40+360", "Invoice number 4217 total",
        ])
        let result = try Self.recognize(engine, page, OCROptions(lang: "eng", mode: .document, formats: [.pdf]))
        #expect(result.text.contains("Blue ink on a red ribbon") && result.text.contains("Invoice number 4217 total"), "\(result.text)")
        let pdf = try #require(result.renderings.pdf)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("lector-\(UUID().uuidString).pdf")
        defer { try? FileManager.default.removeItem(at: file) }
        try pdf.write(to: file)
        // pdfimages -list: one image, colour space "rgb" (a grey page would say "gray").
        let images = try TestImages.output("/usr/bin/pdfimages", ["-list", file.path])
        let rows = images.split(separator: "\n").dropFirst(2)
        #expect(rows.count == 1 && rows.first?.split(separator: " ", omittingEmptySubsequences: true)[5] == "rgb", "\(images)")
        // The same page again reads the same: nothing of the previous page's images stays in the handle.
        let again = try Self.recognize(engine, page, OCROptions(lang: "eng", mode: .document))
        #expect(again.text == result.text)
    }

    // MARK: the PP-OCR recogniser

    @Test("recognizer ppocr: lines read through the detector and PP-OCRv6, word boxes from CTC's time steps, pages upside down turned")
    func ppocrRecognizer() throws {
        let engine = try Self.engine()
        let page = try TestImages.render(Self.lines)
        let options = OCROptions(lang: "eng", mode: .scene, recognizer: .ppocr)
        let result = try Self.recognize(engine, page, options)
        #expect(result.pages[0].mode == .scene, "ppocr reads every page through the detector")
        for line in Self.lines { #expect(result.text.contains(line), "\(result.text)") }
        // Word boxes, not line boxes: each word of the first line in order, inside the line, not overlapping.
        let first = try #require(result.pages[0].lines.first { $0.text == Self.lines[0] })
        #expect(first.words.map(\.text) == Self.lines[0].split(separator: " ").map(String.init))
        for (a, b) in zip(first.words, first.words.dropFirst()) {
            #expect(a.box.x + a.box.width <= b.box.x + 2, "\(a.box) then \(b.box)")
        }
        let widest = first.words.map(\.box.width).max() ?? 0
        #expect(widest < first.box.width / 2, "\(first.words.map(\.box))")
        // "quick" starts near a fifth of the line ("The " before it), rendered at x = 40 on a 1200-px page.
        let quick = try #require(first.words.first { $0.text == "quick" })
        #expect(abs(quick.box.x - 150) < 45, "\(quick.box)")
        #expect(first.words.allSatisfy { $0.confidence > 80 && $0.polygon.count == 4 }, "\(first.words)")

        // The same page upside down: the angle classifier turns each region, and words come back in reading order.
        let turned = try Self.recognize(engine, try Self.transform(page, ["-rotate", "180"]), options)
        for line in Self.lines { #expect(turned.text.contains(line), "\(turned.text)") }

        // Auto reads through the detector too; a searchable PDF is Tesseract's layout only (refused at submit).
        let auto = try Self.recognize(engine, page, OCROptions(lang: "eng", formats: [.pdf], recognizer: .ppocr))
        #expect(auto.renderings.pdf == nil && auto.pages[0].mode == .scene && auto.text == result.text)
    }

    @Test("recognizer ppocr is refused for scripts its character set lacks and when its models are missing")
    func ppocrRefusals() throws {
        let options = OCROptions(lang: "eng+chi_sim", recognizer: .ppocr)
        do {
            try options.validate(availableLanguages: ["eng", "chi_sim"])
            Issue.record("chi_sim passed")
        } catch { #expect(error.message.contains("Latin-script") && error.message.contains("chi_sim"), "\(error)") }
        do {
            try OCROptions(lang: "eng", recognizer: .ppocr).validate(availableLanguages: ["eng"], availableRecognizers: [.tesseract])
            Issue.record("missing models passed")
        } catch { #expect(error.message.contains("ppocr-v6-rec"), "\(error)") }
        // An engine without the files fails the job with the same reason, at once.
        let missing = DetectorModels(db: DetectorModels.discover().db, east: nil,
                                     recognizer: RecognizerModels(folder: "/nonexistent", anglePath: nil))
        let engine = try TesseractEngineFactory(dataPath: nil, limits: OCRLimits(maxPagePixels: 20_000_000, maxPages: 2), models: missing).makeEngine()
        do {
            _ = try Self.recognize(engine, try TestImages.render(["no models here"]), OCROptions(lang: "eng", recognizer: .ppocr))
            Issue.record("read without models")
        } catch let error as OCRError { #expect(error.kind == .unsupportedOption && !error.isTransient, "\(error)") }
    }

    @Test("CTC decoding: repeats collapse, blanks separate doubled letters, spaces split words with their extents")
    func ctcDecoding() throws {
        let characters = ["a", "b", "l", "o", "t"]
        // steps:      0  1  2  3  4  5  6  7  8  9  10
        // classes:    b  o  o  t  ␣  a  l  _  l  _  _       (_ blank = 0, ␣ space = 6)
        let classes = [2, 4, 4, 5, 6, 1, 3, 0, 3, 0, 0]
        let probabilities: [Float] = [0.9, 0.8, 0.1, 0.7, 0.99, 0.6, 0.5, 0.9, 0.4, 0.9, 0.9]
        let line = try #require(LineRecognizer.decode(classes: classes, probabilities: probabilities, stepWidth: 10,
                                                     cropWidth: 110, characters: characters))
        #expect(line.text == "bot all")
        #expect(line.words.map(\.x0) == [0, 45] && line.words.map(\.x1) == [45, 95], "\(line.words)")
        #expect(line.words[0].confidence == 80 && line.words[1].confidence == 50, "first step of each run: \(line.words)")
        #expect(LineRecognizer.decode(classes: [0, 0, 6], probabilities: [1, 1, 1], stepWidth: 8, cropWidth: 24, characters: characters) == nil)
    }

    @Test("asking for EAST without its model fails the job with the way to install it")
    func eastMissing() throws {
        let models = DetectorModels.discover(east: "/nonexistent/frozen_east_text_detection.pb")
        #expect(models.available == [.db])
        let engine = try TesseractEngineFactory(dataPath: nil, limits: OCRLimits(maxPagePixels: 20_000_000, maxPages: 2),
                                                models: models).makeEngine()
        do {
            _ = try Self.recognize(engine, try Self.scenePhoto(), OCROptions(lang: "eng", mode: .scene, detector: .east))
            Issue.record("EAST ran without a model")
        } catch let error as OCRError {
            #expect(error.kind == .unsupportedOption && error.message.contains("lector models fetch east"), "\(error)")
            #expect(!error.isTransient)
        }
    }

    // MARK: formats

    @Test("a document's searchable PDF holds its text; read back as input, it gives the same text (poppler)")
    func pdfRoundTrip() throws {
        let engine = try Self.engine()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lector-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let first = folder.appendingPathComponent("1.png"), second = folder.appendingPathComponent("2.png")
        try TestImages.render(["first page of the letter"]).write(to: first)
        try TestImages.render(["second page signed here"]).write(to: second)
        let tiff = folder.appendingPathComponent("both.tiff")
        try TestImages.runTool(TestImages.convert, [first.path, second.path, tiff.path])

        let result = try Self.recognize(engine, try Data(contentsOf: tiff), OCROptions(lang: "eng", mode: .document, formats: [.hocr, .pdf]))
        let pdf = try #require(result.renderings.pdf)
        #expect(pdf.starts(with: Data("%PDF-".utf8)))
        let hocr = String(decoding: try #require(result.renderings.hocr), as: UTF8.self)
        #expect(hocr.contains("class='ocrx_word'") && hocr.contains(">letter</span>") && hocr.contains("id='page_2'"), "\(hocr.prefix(400))")

        // The PDF goes back in as a document: two pages, rasterised by pdftoppm, the same words.
        let again = try Self.recognize(engine, pdf, OCROptions(lang: "eng", mode: .document))
        #expect(again.pages.count == 2)
        #expect(again.pages[0].text.contains("first page of the letter"), "\(again.pages[0].text)")
        #expect(again.pages[1].text.contains("second page signed here"), "\(again.pages[1].text)")

        // Limits hold for PDFs too, from pdfinfo before anything is rendered.
        do {
            _ = try Self.recognize(try Self.engine(maxPages: 1), pdf, OCROptions(lang: "eng"))
            Issue.record("two pages passed a one-page limit")
        } catch let error as OCRError {
            #expect(error.kind == .limitExceeded && error.message.contains("more than 1 pages"), "\(error)")
        }
        do {
            _ = try Self.recognize(try Self.engine(maxPagePixels: 100_000, pdfDPI: 600), pdf, OCROptions(lang: "eng"))
            Issue.record("a page over the pixel limit was rendered")
        } catch let error as OCRError {
            #expect(error.kind == .limitExceeded, "\(error)")
        }
        // A broken PDF fails with a reason, not a crash.
        do {
            _ = try Self.recognize(engine, Data("%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage".utf8), OCROptions(lang: "eng"))
            Issue.record("a broken PDF was read")
        } catch let error as OCRError {
            #expect(error.kind == .unreadableDocument && error.message.contains("PDF"), "\(error)")
        }
    }

    /// A PDF with the given objects (1 is the catalog), xref and trailer written out.
    static func pdf(_ objects: [String]) -> Data {
        var out = "%PDF-1.7\n"
        var offsets: [Int] = []
        for (index, body) in objects.enumerated() {
            offsets.append(out.utf8.count)
            out += "\(index + 1) 0 obj\n\(body)\nendobj\n"
        }
        let xref = out.utf8.count
        out += "xref\n0 \(objects.count + 1)\n0000000000 65535 f \n"
        for offset in offsets { out += String(format: "%010d 00000 n \n", offset) }
        out += "trailer\n<< /Size \(objects.count + 1) /Root 1 0 R >>\nstartxref\n\(xref)\n%%EOF\n"
        return Data(out.utf8)
    }

    @Test("a PDF page is rendered at its crop box, the size that was checked against the pixel limit")
    func pdfCropBox() throws {
        // MediaBox 4000 pt square (16 Mpx at 72 dpi), CropBox 100 pt: only the crop box may be rendered.
        let document = Self.pdf([
            "<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 4000 4000] /CropBox [0 0 100 100] >>",
        ])
        let engine = try Self.engine(maxPagePixels: 200_000, pdfDPI: 72)
        let result = try Self.recognize(engine, document, OCROptions(lang: "eng", mode: .document))
        #expect(result.pages.count == 1)
        #expect(result.pages[0].width == 100 && result.pages[0].height == 100, "\(result.pages[0].width) × \(result.pages[0].height)")
    }

    @Test("hOCR and the PDF are rendered only when asked for; every stage's time is recorded")
    func formatsOnRequest() throws {
        let engine = try Self.engine()
        let page = try TestImages.render(["only what was asked"])
        let plain = try Self.recognize(engine, page, OCROptions(lang: "eng"))
        #expect(plain.renderings.hocr == nil && plain.renderings.pdf == nil)
        #expect(plain.text.contains("only what was asked"), "\(plain.text)")
        for stage in ["decode", "classify", "recognize"] { #expect(plain.stages.seconds[stage] != nil, "\(plain.stages)") }
        #expect(plain.stages.seconds["hocr"] == nil && plain.stages.seconds["pdf"] == nil, "\(plain.stages)")

        let hocrOnly = try Self.recognize(engine, page, OCROptions(lang: "eng", formats: [.hocr]))
        #expect(hocrOnly.renderings.hocr != nil && hocrOnly.renderings.pdf == nil)
        #expect(hocrOnly.text == plain.text, "the renderers do not change the recognition")
        let both = try Self.recognize(engine, page, OCROptions(lang: "eng", mode: .document, formats: [.pdf, .hocr]))
        #expect(both.renderings.hocr != nil && both.renderings.pdf?.starts(with: Data("%PDF-".utf8)) == true)
        #expect(both.stages.seconds["pdf"] != nil && both.stages.seconds["hocr"] != nil, "\(both.stages)")
        #expect(both.stages.seconds["classify"] != nil, "mode document measures the thumbnail too (the inverted reading's check)")
    }

    @Test("through a slot, the result's stage times also hold the hop to the slot's thread and the engine's untimed work")
    func slotStages() async throws {
        let slot = EngineSlot(factory: TesseractEngineFactory(dataPath: nil, limits: OCRLimits(maxPagePixels: 20_000_000, maxPages: 10)))
        let page = try TestImages.render(["timed through a slot"])
        let result = try await slot.recognize(OCRDocument(data: page, type: .png), options: OCROptions(lang: "eng"))
        await slot.shutdown()
        let slotSeconds = try #require(result.stages.seconds["slot"])
        let engineSeconds = try #require(result.stages.seconds["engine"])
        #expect(slotSeconds >= 0 && engineSeconds >= 0, "\(result.stages)")
        #expect(result.stages.seconds["recognize"] != nil && result.stages.total > slotSeconds + engineSeconds)
        #expect(result.stages.description.hasPrefix("slot="), "stages print in the order a job meets them: \(result.stages)")
        #expect(result.stages.engineCPU > 0 && result.stages.engineCPU <= result.stages.total + 0.01, "\(result.stages.engineCPU) s of CPU")
    }

    @Test("a slot measures its engine's CPU time, apart from its wall time: a busy engine costs CPU, a waiting one none")
    func slotEngineCPU() async throws {
        let slot = EngineSlot(factory: ScriptedEngineFactory(steps: [.busy(.milliseconds(300), "busy"), .slow(.milliseconds(300), "waiting")]))
        let document = OCRDocument(data: Data([0x89, 0x50, 0x4E, 0x47]), type: .png)
        let busy = try await slot.recognize(document, options: OCROptions(lang: "eng"))
        let waiting = try await slot.recognize(document, options: OCROptions(lang: "eng"))
        await slot.shutdown()
        // The busy loop runs 300 ms of wall time; on a loaded machine the thread may get less of it as CPU, never more.
        #expect(busy.stages.engineCPU > 0.1 && busy.stages.engineCPU < 0.5, "\(busy.stages.engineCPU)")
        #expect(waiting.stages.engineCPU < 0.05, "sleeping costs no CPU: \(waiting.stages.engineCPU)")
        // Not a stage: it overlaps them, so the stages' total (the wall time) leaves it out.
        #expect(waiting.stages.seconds["engineCPU"] == nil && !waiting.stages.description.contains("cpu"), "\(waiting.stages)")
        var merged = busy.stages
        merged.merge(waiting.stages)
        #expect(merged.engineCPU == busy.stages.engineCPU + waiting.stages.engineCPU)
    }

    @Test("a slot warmed with a language has its model loaded before the first job; a language not installed is an error")
    func warmUpLoadsLanguage() async throws {
        let engine = TesseractEngine(dataPath: nil, limits: OCRLimits(maxPagePixels: 20_000_000, maxPages: 10))
        #expect(throws: OCRError.self) { try engine.prepare(language: "qq") }
        #expect(!engine.isPrepared("eng"))
        try engine.prepare(language: "eng")
        #expect(engine.isPrepared("eng"))
        // Through a slot: the first job's untimed engine work no longer holds the model load (~0.15 s).
        let slot = EngineSlot(factory: TesseractEngineFactory(dataPath: nil, limits: OCRLimits(maxPagePixels: 20_000_000, maxPages: 10)))
        try await slot.warmUp(language: "eng")
        let page = try TestImages.render(["warmed up"])
        let result = try await slot.recognize(OCRDocument(data: page, type: .png), options: OCROptions(lang: "eng"))
        await slot.shutdown()
        #expect(result.text.contains("warmed"), "\(result.text)")
        let untimed = try #require(result.stages.seconds["engine"])
        let recognized = try #require(result.stages.seconds["recognize"])
        #expect(untimed < recognized, "\(result.stages)")
    }

    @Test("scene pages get Lector's hOCR (escaped) and no PDF: the renderer lays out only document pages")
    func sceneRenderings() throws {
        let engine = try Self.engine()
        let result = try Self.recognize(engine, try Self.scenePhoto(), OCROptions(lang: "eng", mode: .scene, formats: [.hocr, .pdf]))
        #expect(result.renderings.pdf == nil)
        let hocr = String(decoding: try #require(result.renderings.hocr), as: UTF8.self)
        #expect(hocr.contains("<span class='ocrx_word'") && hocr.contains(">OPEN</span>"), "\(hocr)")
        #expect(hocr.contains("title='bbox 0 0 900 600; ppageno 0'"))
        #expect(try XMLDocument(data: Data(hocr.utf8)).rootElement()?.name == "html")
    }

    @Test("a JPEG is its own preview only when a browser shows it as Leptonica decoded it")
    func jpegShownAsDecoded() throws {
        let jpeg = try TestImages.render(["as it is"], width: 400, format: "jpg")
        #expect(PagePreview.showsAsDecoded(jpeg, width: 400, height: 160))
        #expect(!PagePreview.showsAsDecoded(jpeg, width: 401, height: 160), "another size")
        for cut in [0, 1, 3, 20] { #expect(!PagePreview.showsAsDecoded(jpeg.prefix(cut), width: 400, height: 160), "\(cut) bytes") }
        let png = try TestImages.render(["as it is"], width: 400)
        #expect(!PagePreview.showsAsDecoded(png, width: 400, height: 160))
        let cmyk = FileManager.default.temporaryDirectory.appendingPathComponent("lector-\(UUID().uuidString).jpg")
        defer { try? FileManager.default.removeItem(at: cmyk) }
        try TestImages.runTool(TestImages.convert, ["-size", "400x160", "xc:white", "-colorspace", "CMYK", "jpg:\(cmyk.path)"])
        #expect(!PagePreview.showsAsDecoded(try Data(contentsOf: cmyk), width: 400, height: 160), "CMYK")
        // A segment whose length runs past the end of the file.
        var broken = Data(jpeg.prefix(2))
        broken.append(contentsOf: [0xFF, 0xE0, 0xFF, 0xFF, 0x00])
        #expect(!PagePreview.showsAsDecoded(broken, width: 400, height: 160))
        // Served as it is only within the preview's size and a byte per pixel: not padded with a large segment.
        #expect(PagePreview.servesAsIs(jpeg, width: 400, height: 160))
        let comment = Data([0xFF, 0xFE, 0xFF, 0xFF]) + Data(repeating: 0x20, count: 0xFFFD)
        let padded = Data(jpeg.prefix(2)) + comment + jpeg.dropFirst(2)
        #expect(PagePreview.showsAsDecoded(padded, width: 400, height: 160))
        #expect(!PagePreview.servesAsIs(padded, width: 400, height: 160))
    }
}

@Suite("Model installation")
struct ModelInstallerTests {
    @Test("an archive with the wrong SHA-1 installs nothing; the right one installs the member atomically")
    func checksum() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lector-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try Data("not really a network".utf8).write(to: folder.appendingPathComponent("model.pb"))
        let archive = folder.appendingPathComponent("model.tar.gz").path
        try TestImages.runTool("/usr/bin/tar", ["-czf", archive, "-C", folder.path, "model.pb"])
        let destination = folder.appendingPathComponent("installed/model.pb").path

        // The real EAST entry: this archive is not EAST, so its checksum does not match.
        let east = ModelInstaller(model: ModelInstaller.east)
        #expect(throws: ModelInstaller.Failure.self) { try east.install(to: destination, archive: archive) }
        #expect(!FileManager.default.fileExists(atPath: destination))

        let sha1 = try TestImages.output("/usr/bin/sha1sum", [archive]).prefix(40)
        let model = ModelInstaller.Model(name: "test", url: "file:///nowhere", archiveSHA1: String(sha1), member: "model.pb")
        try ModelInstaller(model: model).install(to: destination, archive: archive)
        #expect(FileManager.default.contents(atPath: destination) == Data("not really a network".utf8))
    }
}
