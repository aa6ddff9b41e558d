import Foundation
import LectorModel
import Testing

@testable import LectorWorker

/// The end encodes a finished attempt's results (`UnstagedResults.files()`), but the outcome names the files
/// before that (`fileNames`): both must agree, file for file, whatever the job asked for.
@Suite struct UnstagedResultsTests {
    private func result(hocr: Bool, pdf: Bool, previews: [PagePreview?]) -> OCRResult {
        let word = OCRWord(text: "TOTAL", box: BoundingBox(x: 1, y: 2, width: 30, height: 10), confidence: 91)
        let line = OCRLine(text: "TOTAL", box: word.box, confidence: 91, words: [word])
        let pages = previews.indices.map { OCRPage(number: $0 + 1, width: 100, height: 200, lines: [line], text: "TOTAL") }
        return OCRResult(
            engine: "test", language: "eng", pages: pages,
            renderings: Renderings(hocr: hocr ? Data("<html/>".utf8) : nil, pdf: pdf ? Data("%PDF".utf8) : nil, previews: previews))
    }

    private let preview = PagePreview(image: Data([0xFF, 0xD8, 1]), width: 100, height: 200, thumbnail: Data([0xFF, 0xD8, 2]))

    @Test(arguments: [false, true], [false, true])
    func namesMatchTheFiles(hocr: Bool, pdf: Bool) throws {
        // Page 2's picture could not be encoded: it has none, and neither list names one.
        let unstaged = UnstagedResults(result: result(hocr: hocr, pdf: pdf, previews: [preview, nil, preview]), pictures: true)
        let files = try unstaged.files()
        #expect(files.map(\.name) == unstaged.fileNames)
        var expected = ["result.json", "result.txt"]
        if hocr { expected.append("result.hocr") }
        if pdf { expected.append("result.pdf") }
        expected += ["page-1.jpg", "thumb-1.jpg", "page-3.jpg", "thumb-3.jpg"]
        #expect(unstaged.fileNames == expected)
        #expect(files.first { $0.name == "thumb-3.jpg" }?.contents == preview.thumbnail)
        #expect(files.first { $0.name == "result.txt" }?.contents == Data(unstaged.result.text.utf8))
        let decoded = try JSONDecoder().decode(OCRResult.self, from: files[0].contents)
        #expect(decoded.pages.map(\.text) == ["TOTAL", "TOTAL", "TOTAL"])
    }

    /// An assembled job's pages wrote their own pictures: its end stages none.
    @Test func assembledJobsStageNoPictures() throws {
        let unstaged = UnstagedResults(result: result(hocr: false, pdf: true, previews: [preview]), pictures: false)
        #expect(unstaged.fileNames == ["result.json", "result.txt", "result.pdf"])
        #expect(try unstaged.files().map(\.name) == unstaged.fileNames)
    }
}
