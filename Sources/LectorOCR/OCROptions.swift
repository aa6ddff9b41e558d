/// What a job asks of the engine. Parsed and checked at submit, stored with the job as JSON.
public struct OCROptions: Sendable, Codable, Equatable {
    /// Tesseract languages joined by "+", e.g. "eng" or "eng+deu".
    public var lang: String

    public init(lang: String) {
        self.lang = lang
    }

    /// The language codes, in order.
    public var languages: [String] { lang.split(separator: "+", omittingEmptySubsequences: false).map(String.init) }

    /// Checks the options against what the engine has installed.
    public func validate(availableLanguages: Set<String>) throws(OCRError) {
        let codes = languages
        guard !codes.isEmpty, codes.count <= 8 else {
            throw OCRError(.unsupportedOption, "lang must name 1 to 8 languages joined by '+', e.g. \"eng+deu\"")
        }
        for code in codes {
            // Codes become file names inside Tesseract: allow only the characters its model names use.
            guard !code.isEmpty, code.count <= 32,
                code.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") })
            else {
                throw OCRError(.unsupportedOption, "lang contains an invalid language code \"\(code.prefix(40))\"")
            }
            guard availableLanguages.contains(code) else {
                let known = availableLanguages.sorted().joined(separator: ", ")
                throw OCRError(.unsupportedOption, "language \"\(code)\" is not installed (installed: \(known))")
            }
        }
    }
}
