import Foundation

/// Any JSON value, for client metadata that Lector stores and returns as given.
public enum JSONValue: Sendable, Equatable, Codable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// Parses JSON text; nil when it is not JSON.
    public static func parse(_ data: Data) -> JSONValue? {
        try? JSONDecoder().decode(JSONValue.self, from: data)
    }

    /// Whether any string or key holds U+0000, which PostgreSQL's jsonb refuses.
    public var containsNUL: Bool {
        switch self {
        case .string(let s): s.contains("\0")
        case .array(let values): values.contains { $0.containsNUL }
        case .object(let members): members.contains { $0.key.contains("\0") || $0.value.containsNUL }
        case .null, .bool, .integer, .number: false
        }
    }

    /// Deepest nesting level (a scalar is 0).
    public var depth: Int {
        switch self {
        case .array(let values): 1 + (values.map(\.depth).max() ?? 0)
        case .object(let members): 1 + (members.values.map(\.depth).max() ?? 0)
        case .null, .bool, .integer, .number, .string: 0
        }
    }

    /// Compact JSON text with sorted keys.
    public func jsonString() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? String(decoding: encoder.encode(self), as: UTF8.self)) ?? "null"
    }
}

extension JSONValue {
    /// The first number literal in JSON text that PostgreSQL's `jsonb` cannot store, or nil.
    ///
    /// `jsonb` keeps numbers as `numeric`, exactly as written, which holds at most 131,072 digits before the
    /// decimal point and 16,383 after it. JSON itself has no limit, and Foundation's decoder reads such numbers
    /// as ±infinity or 0, so without this check they reached the database and failed there (a 503, once).
    /// Reads the text once, outside strings.
    public static func firstNumberBeyondPostgres(in text: [UInt8]) -> String? {
        let maxWeight = 131_072, maxScale = 16_383
        var index = 0
        let count = text.count
        func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }
        while index < count {
            let byte = text[index]
            if byte == UInt8(ascii: "\"") {
                // Skip the string, escapes included.
                index += 1
                while index < count, text[index] != UInt8(ascii: "\"") {
                    index += text[index] == UInt8(ascii: "\\") ? 2 : 1
                }
                index += 1
                continue
            }
            guard byte == UInt8(ascii: "-") || isDigit(byte) else {
                index += 1
                continue
            }
            let start = index
            if byte == UInt8(ascii: "-") { index += 1 }
            var integerDigits = 0, leadingZeros = true
            while index < count, isDigit(text[index]) {
                if !(leadingZeros && text[index] == 0x30) { integerDigits += 1; leadingZeros = false }
                index += 1
            }
            var fractionDigits = 0
            if index < count, text[index] == UInt8(ascii: ".") {
                index += 1
                while index < count, isDigit(text[index]) { fractionDigits += 1; index += 1 }
            }
            var exponent = 0
            if index < count, text[index] == UInt8(ascii: "e") || text[index] == UInt8(ascii: "E") {
                index += 1
                var negative = false
                if index < count, text[index] == UInt8(ascii: "-") || text[index] == UInt8(ascii: "+") {
                    negative = text[index] == UInt8(ascii: "-")
                    index += 1
                }
                while index < count, isDigit(text[index]) {
                    exponent = min(exponent * 10 + Int(text[index] - 0x30), 1_000_000_000)
                    index += 1
                }
                if negative { exponent = -exponent }
            }
            let weight = integerDigits + exponent
            let scale = fractionDigits - exponent
            if abs(exponent) >= 1_000_000_000 || weight > maxWeight || scale > maxScale {
                return String(decoding: text[start..<min(index, start + 40)], as: UTF8.self)
            }
        }
        return nil
    }
}
