import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LectorAPI
import LectorCore
import Testing

@Suite("Pipeline options and result formats through HTTP")
struct FormatFlowTests {
    @Test("bad options are 400 at submit, naming the problem; nothing is queued")
    func badOptions() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            let image = try TestImages.render(["options"])
            try await harness.application().test(.router) { client in
                let cases: [(String, String)] = [
                    (#"{"mode": "poster"}"#, "mode must be one of"),
                    (#"{"mode": 3}"#, "options.mode must be a string"),
                    (#"{"operations": ["deskew", "sharpen"]}"#, "unknown operation \"sharpen\""),
                    (#"{"operations": ["scale:40"]}"#, "scale takes a factor"),
                    (#"{"operations": "deskew"}"#, "must be an array of strings"),
                    (#"{"operations": [1]}"#, "must be an array of strings"),
                    (#"{"operations": ["deskew","deskew","deskew","deskew","deskew","deskew","deskew","deskew","deskew","deskew","deskew","deskew","deskew","deskew","deskew","deskew","deskew"]}"#, "at most 16"),
                    (#"{"detector": "yolo"}"#, "detector must be one of"),
                    (#"{"mode": "scene", "detector": "east"}"#, "lector models fetch east"),
                    (#"{"recognizer": "abbyy"}"#, "recognizer must be one of: tesseract, ppocr"),
                    (#"{"recognizer": true}"#, "options.recognizer must be a string"),
                    (#"{"recognizer": "ppocr", "formats": ["pdf"]}"#, "recognizer ppocr makes no searchable PDF"),
                    (#"{"recognizer": "ppocr", "mode": "document"}"#, "use mode auto or scene"),
                    (#"{"formats": ["json", "docx"]}"#, "unknown format \"docx\""),
                    (#"{"formats": "pdf"}"#, "options.formats must be an array of strings"),
                    (#"{"formats": [1]}"#, "options.formats must be an array of strings"),
                ]
                for (options, message) in cases {
                    var form = Multipart()
                    form.add(name: "document", filename: "a.png", contentType: "image/png", data: image)
                    form.add(name: "options", json: options)
                    let response = try await client.execute(
                        uri: "/v1/jobs", method: .post,
                        headers: [.authorization: "Bearer \(user.token)", .contentType: form.contentType], body: form.finished())
                    #expect(response.status == .badRequest, "\(options)")
                    #expect(response.errorCode == "invalid_options", "\(options)")
                    let text = (response.json["error"] as? [String: Any])?["message"] as? String ?? ""
                    #expect(text.contains(message), "\(options): \(text)")
                }
                let raw = try await client.execute(
                    uri: "/v1/jobs?operations=deskew,melt", method: .post,
                    headers: [.authorization: "Bearer \(user.token)", .contentType: "image/png"], body: ByteBuffer(bytes: image))
                #expect(raw.status == .badRequest && raw.errorCode == "invalid_options")
                let rawFormats = try await client.execute(
                    uri: "/v1/jobs?formats=pdf,odt", method: .post,
                    headers: [.authorization: "Bearer \(user.token)", .contentType: "image/png"], body: ByteBuffer(bytes: image))
                #expect(rawFormats.status == .badRequest && rawFormats.errorCode == "invalid_options")
                #expect(try await harness.jobs.stats().counts.values.reduce(0, +) == 0)
            }
        }
    }

    @Test("a document job that asks for them has hocr and a searchable pdf; a scene job has no pdf; a job that asks for nothing has json and txt only (404 format_unavailable naming the option)")
    func formats() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            let page = try TestImages.render(["Searchable output works"])
            let photo = try PipelineTests.scenePhoto()
            try await harness.application().test(.router) { client in
                func submit(_ data: Data, _ contentType: String, _ options: String) async throws -> String {
                    var form = Multipart()
                    form.add(name: "document", filename: "doc", contentType: contentType, data: data)
                    form.add(name: "options", json: options)
                    let response = try await client.execute(
                        uri: "/v1/jobs", method: .post,
                        headers: [.authorization: "Bearer \(user.token)", .contentType: form.contentType], body: form.finished())
                    #expect(response.status == .accepted)
                    return try #require(response.json["id"] as? String)
                }
                @Sendable func fetch(_ id: String, _ format: String) async throws -> (HTTPResponse.Status, String?, Data) {
                    let answer = try await client.execute(
                        uri: "/v1/jobs/\(id)/result?format=\(format)&wait=60", method: .get,
                        headers: [.authorization: "Bearer \(user.token)"])
                    guard answer.status == .found, let location = answer.headers[.location] else {
                        return (answer.status, answer.errorCode, Data(buffer: answer.body))
                    }
                    let file = try await client.execute(uri: location, method: .get)
                    return (file.status, file.headers[.contentType], Data(buffer: file.body))
                }
                let document = try await submit(
                    page, "image/png", #"{"mode": "document", "operations": ["grayscale", "binarize:adaptive"], "formats": ["hocr", "pdf"]}"#)
                let scene = try await submit(photo, "image/jpeg", #"{"operations": ["denoise"], "formats": ["json", "hocr", "pdf"]}"#)
                let plain = try await submit(page, "image/png", #"{"mode": "document"}"#)
                // Raw body: formats in the query.
                let rawAnswer = try await client.execute(
                    uri: "/v1/jobs?mode=document&formats=txt,pdf", method: .post,
                    headers: [.authorization: "Bearer \(user.token)", .contentType: "image/png"], body: ByteBuffer(bytes: page))
                let raw = try #require(rawAnswer.json["id"] as? String)
                // The PP-OCR recogniser, asked for in the query: every page through the detector.
                let ppocrAnswer = try await client.execute(
                    uri: "/v1/jobs?recognizer=ppocr", method: .post,
                    headers: [.authorization: "Bearer \(user.token)", .contentType: "image/png"], body: ByteBuffer(bytes: page))
                let ppocr = try #require(ppocrAnswer.json["id"] as? String)
                try await harness.withWorker {
                    let read = try await fetch(ppocr, "json")
                    #expect(read.0 == .ok)
                    let readResult = try JSONSerialization.jsonObject(with: read.2) as? [String: Any]
                    #expect((readResult?["pages"] as? [[String: Any]])?.first?["mode"] as? String == "scene")
                    #expect((readResult?["text"] as? String)?.contains("Searchable output works") == true, "\(readResult?["text"] ?? "")")
                    #expect(try await fetch(ppocr, "pdf").1 == "format_unavailable", "no Tesseract layout, no searchable PDF")

                    let hocr = try await fetch(document, "hocr")
                    #expect(hocr.0 == .ok && hocr.1?.hasPrefix("text/vnd.hocr+html") == true)
                    #expect(String(decoding: hocr.2, as: UTF8.self).contains(">Searchable</span>"))
                    let pdf = try await fetch(document, "pdf")
                    #expect(pdf.0 == .ok && pdf.1 == "application/pdf")
                    #expect(pdf.2.starts(with: Data("%PDF-".utf8)))

                    let json = try await fetch(scene, "json")
                    #expect(json.0 == .ok)
                    let result = try JSONSerialization.jsonObject(with: json.2) as? [String: Any]
                    let pages = result?["pages"] as? [[String: Any]]
                    #expect(pages?.first?["mode"] as? String == "scene", "auto chose the scene pipeline for a photo")
                    #expect((result?["text"] as? String)?.contains("OPEN DAILY") == true)
                    let missing = try await fetch(scene, "pdf")
                    #expect(missing.0 == .notFound && missing.1 == "format_unavailable")
                    let sceneHOCR = try await fetch(scene, "hocr")
                    #expect(sceneHOCR.0 == .ok && String(decoding: sceneHOCR.2, as: UTF8.self).contains(">OPEN</span>"))

                    // Asked for nothing: json and txt; hocr and pdf were never rendered, and the answer says how.
                    let text = try await fetch(plain, "txt")
                    #expect(text.0 == .ok && String(decoding: text.2, as: UTF8.self).contains("Searchable output works"))
                    for format in ["hocr", "pdf"] {
                        let answer = try await client.execute(
                            uri: "/v1/jobs/\(plain)/result?format=\(format)", method: .get,
                            headers: [.authorization: "Bearer \(user.token)"])
                        #expect(answer.status == .notFound && answer.errorCode == "format_unavailable")
                        let message = (answer.json["error"] as? [String: Any])?["message"] as? String ?? ""
                        #expect(message.contains(#"{"formats": ["\#(format)""#), "\(message)")
                    }
                    let folder = harness.storage.folder(of: try #require(UUID(uuidString: plain)))
                    #expect(!FileManager.default.fileExists(atPath: folder.appendingPathComponent("result.hocr").path))
                    #expect(!FileManager.default.fileExists(atPath: folder.appendingPathComponent("result.pdf").path))

                    let rawPDF = try await fetch(raw, "pdf")
                    #expect(rawPDF.0 == .ok && rawPDF.2.starts(with: Data("%PDF-".utf8)))
                    #expect(try await fetch(raw, "hocr").1 == "format_unavailable")
                }
                // The job's folder records the options as stored.
                let metadata = try String(contentsOf: harness.storage.folder(of: try #require(UUID(uuidString: document)))
                    .appendingPathComponent("metadata.json"), encoding: .utf8)
                #expect(metadata.contains(#""operations":["grayscale","binarize:adaptive"]"#), "\(metadata)")
            }
        }
    }

    @Test("a re-OCR takes formats as a submit does: checked (400), stored, and the new job has the format the first lacked")
    func rerunFormats() async throws {
        try await TestHarness.run { harness in
            let user = try await harness.newUser()
            let page = try TestImages.render(["Searchable output works"])
            try await harness.application().test(.router) { client in
                let auth: HTTPFields = [.authorization: "Bearer \(user.token)"]
                var form = Multipart()
                form.add(name: "document", filename: "doc.png", contentType: "image/png", data: page)
                form.add(name: "options", json: #"{"mode": "document"}"#)
                let submitted = try await client.execute(
                    uri: "/v1/jobs", method: .post,
                    headers: [.authorization: "Bearer \(user.token)", .contentType: form.contentType], body: form.finished())
                let first = try #require(submitted.json["id"] as? String)
                func rerun(_ body: String) async throws -> TestResponse {
                    try await client.execute(
                        uri: "/v1/jobs/\(first)/rerun", method: .post,
                        headers: [.authorization: "Bearer \(user.token)", .contentType: "application/json"], body: ByteBuffer(string: body))
                }
                let refusals: [(String, String)] = [
                    (#"{"options": {"formats": ["hocr", "docx"]}}"#, "unknown format \"docx\""),
                    (#"{"options": {"formats": "hocr"}}"#, "options.formats must be an array of strings"),
                ]
                for (body, message) in refusals {
                    let refused = try await rerun(body)
                    #expect(refused.status == .badRequest && refused.errorCode == "invalid_options", "\(body)")
                    let text = (refused.json["error"] as? [String: Any])?["message"] as? String ?? ""
                    #expect(text.contains(message), "\(body): \(text)")
                }
                let again = try await rerun(#"{"options": {"mode": "document", "formats": ["hocr"]}}"#)
                #expect(again.status == .accepted)
                let second = try #require(again.json["id"] as? String)
                let view = try await client.execute(uri: "/v1/jobs/\(second)", method: .get, headers: auth)
                let options = try #require(view.json["options"] as? [String: Any])
                #expect(options["formats"] as? [String] == ["json", "txt", "hocr"], "\(options)")
                try await harness.withWorker {
                    let lacking = try await client.execute(uri: "/v1/jobs/\(first)/result?format=hocr&wait=60", method: .get, headers: auth)
                    #expect(lacking.status == .notFound && lacking.errorCode == "format_unavailable")
                    let message = (lacking.json["error"] as? [String: Any])?["message"] as? String ?? ""
                    #expect(message.contains("/rerun"), "\(message)")
                    let link = try await client.execute(uri: "/v1/jobs/\(second)/result?format=hocr&wait=60", method: .get, headers: auth)
                    #expect(link.status == .found)
                    let file = try await client.execute(uri: try #require(link.headers[.location]), method: .get)
                    #expect(file.status == .ok && String(decoding: Data(buffer: file.body), as: UTF8.self).contains(">Searchable</span>"))
                    let pdf = try await client.execute(uri: "/v1/jobs/\(second)/result?format=pdf", method: .get, headers: auth)
                    #expect(pdf.status == .notFound && pdf.errorCode == "format_unavailable")
                }
            }
        }
    }
}
