import Foundation
import LectorModel
import Testing

@testable import LectorWorker

/// The end encodes a finished attempt's results (`UnstagedResults.files()`): the formats the job's renderings hold,
/// and each page's pictures for a read job, not for an assembled one.
@Suite struct UnstagedResultsTests {
    private func result(hocr: Bool, pdf: Bool, previews: [PagePreview?]) -> OCRResult {
        let word = OCRWord(text: "TOTAL", box: BoundingBox(x: 1, y: 2, width: 30, height: 10), confidence: 91)
        let line = OCRLine(text: "TOTAL", box: word.box, confidence: 91, words: [word])
        let pages = previews.indices.map { OCRPage(number: $0 + 1, width: 100, height: 200, lines: [line], text: "TOTAL") }
        return OCRResult(
            engine: "test", language: "eng", pages: pages,
            renderings: Renderings(hocr: hocr ? Data("<html/>".utf8) : nil, pdf: pdf ? Data("%PDF".utf8) : nil, previews: previews))
    }

    /// A NaN confidence cannot be written as JSON: `encodeUnstaged` answers the error, timed, and lets the results go.
    @Test func unencodableResults() throws {
        let facts = AttemptFacts()
        var bad = result(hocr: false, pdf: false, previews: [])
        bad.pages = [OCRPage(number: 1, width: 10, height: 10, lines: [OCRLine(text: "x", box: BoundingBox(x: 0, y: 0, width: 1, height: 1), confidence: .nan, words: [])], text: "x")]
        facts.unstaged = UnstagedResults(result: bad, pictures: true)
        guard case .failure = facts.encodeUnstaged() else { throw TestFailure("a NaN confidence was encoded") }
        #expect(facts.unstaged == nil)
        #expect(facts.encodeUnstaged() == nil)
    }

    private let preview = PagePreview(image: Data([0xFF, 0xD8, 1]), width: 100, height: 200, thumbnail: Data([0xFF, 0xD8, 2]))

    @Test(arguments: [false, true], [false, true])
    func filesOfAReadJob(hocr: Bool, pdf: Bool) throws {
        // Page 2's picture could not be encoded: it has none.
        let unstaged = UnstagedResults(result: result(hocr: hocr, pdf: pdf, previews: [preview, nil, preview]), pictures: true)
        let files = try unstaged.files()
        var expected = ["result.json", "result.txt"]
        if hocr { expected.append("result.hocr") }
        if pdf { expected.append("result.pdf") }
        expected += ["page-1.jpg", "thumb-1.jpg", "page-3.jpg", "thumb-3.jpg"]
        #expect(files.map(\.name) == expected)
        #expect(files.first { $0.name == "thumb-3.jpg" }?.contents == preview.thumbnail)
        #expect(files.first { $0.name == "result.txt" }?.contents == Data(unstaged.result.text.utf8))
        let decoded = try JSONDecoder().decode(OCRResult.self, from: files[0].contents)
        #expect(decoded.pages.map(\.text) == ["TOTAL", "TOTAL", "TOTAL"])
    }

    /// An assembled job's pages wrote their own pictures: its end stages none.
    @Test func assembledJobsStageNoPictures() throws {
        let unstaged = UnstagedResults(result: result(hocr: false, pdf: true, previews: [preview]), pictures: false)
        #expect(try unstaged.files().map(\.name) == ["result.json", "result.txt", "result.pdf"])
    }
}
