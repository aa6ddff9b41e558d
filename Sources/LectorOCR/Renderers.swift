import CTesseract
import Foundation
import LectorModel

/// A searchable PDF built page by page with Tesseract's PDF renderer (page image + invisible text layer).
///
/// The renderer writes a file; it goes to a private temporary folder and is read back by `finish()`.
final class PDFRendering {
    private let folder: URL
    private let renderer: OpaquePointer
    private var pages = 0
    private var failed = false

    /// Nil when the renderer cannot start (no `pdf.ttf` in Tesseract's data folder): the result then has no PDF.
    init?(dataPath: String, title: String) throws(OCRError) {
        do {
            folder = try ScratchFolder.create(kind: "render")
        } catch {
            throw OCRError(.engineFailure, "could not create a temporary folder: \(error.localizedDescription)")
        }
        guard FileManager.default.fileExists(atPath: dataPath + "/pdf.ttf") || FileManager.default.fileExists(atPath: dataPath + "pdf.ttf"),
            let renderer = TessPDFRendererCreate(folder.appendingPathComponent("result").path, dataPath, 0)
        else {
            try? FileManager.default.removeItem(at: folder)
            return nil
        }
        self.renderer = renderer
        // Every stored property is set: returning nil runs deinit, which deletes the renderer and the folder.
        guard TessResultRendererBeginDocument(renderer, title) != 0 else { return nil }
    }

    deinit {
        TessDeleteResultRenderer(renderer)
        try? FileManager.default.removeItem(at: folder)
    }

    /// Adds the page whose results are in `api`; false when the renderer refused it.
    func add(_ api: OpaquePointer) -> Bool {
        guard !failed else { return false }
        if TessResultRendererAddImage(renderer, api) == 0 { failed = true }
        pages += 1
        return !failed
    }

    /// Ends the document and returns the PDF's bytes (nil when a page was refused or nothing was added).
    func finish() -> Data? {
        guard !failed, pages > 0, TessResultRendererEndDocument(renderer) != 0 else { return nil }
        return try? Data(contentsOf: folder.appendingPathComponent("result.pdf"))
    }
}

/// hOCR (https://kba.github.io/hocr-spec/1.2/) for the result. Pages read by the document pipeline use
/// Tesseract's own hOCR (blocks, paragraphs, lines, words, baselines); scene pages are written here from the
/// result: lines and words with their boxes and confidences.
enum HOCR {
    static func document(pages: [String], engine: String, language: String) -> String {
        """
        <?xml version="1.0" encoding="UTF-8"?>
        <!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
            "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
        <html xmlns="http://www.w3.org/1999/xhtml" xml:lang="\(escape(language))" lang="\(escape(language))">
         <head>
          <title></title>
          <meta http-equiv="Content-Type" content="text/html;charset=utf-8"/>
          <meta name="ocr-system" content="\(escape(engine)) (Lector)"/>
          <meta name="ocr-capabilities" content="ocr_page ocr_carea ocr_par ocr_line ocrx_word ocrp_wconf"/>
         </head>
         <body>
        \(pages.joined())
         </body>
        </html>

        """
    }

    static func page(_ page: OCRPage) -> String {
        let n = page.number
        var out = "  <div class='ocr_page' id='page_\(n)' title='bbox 0 0 \(page.width) \(page.height); ppageno \(n - 1)'>\n"
        for (l, line) in page.lines.enumerated() {
            out += "   <span class='ocr_line' id='line_\(n)_\(l + 1)' title='\(bbox(line.box)); x_wconf \(Int(line.confidence))'>"
            for (w, word) in line.words.enumerated() {
                if w > 0 { out += " " }
                out += "<span class='ocrx_word' id='word_\(n)_\(l + 1)_\(w + 1)' title='\(bbox(word.box)); x_wconf \(Int(word.confidence))'>\(escape(word.text))</span>"
            }
            out += "</span>\n"
        }
        return out + "  </div>\n"
    }

    private static func bbox(_ box: BoundingBox) -> String {
        "bbox \(box.x) \(box.y) \(box.x + box.width) \(box.y + box.height)"
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(character)
            }
        }
        return out
    }
}
