import Foundation
@testable import LectorCore
import LectorModel
import S3Kit
import Testing

/// How the store's answers become `StorageError` kinds, which decide what a worker and the API do: a missing
/// document fails its job, a full store waits like a full disk, anything else may pass.
@Suite struct ObjectStorageErrorTests {
    static func kind(status: Int?, code: String?) -> StorageError.Kind? {
        let error = S3Error(kind: .http, operation: "GET", statusCode: status, code: code, message: "test")
        return (ObjectStorage.storageError(error, doing: "read") as? StorageError)?.kind
    }

    @Test func kinds() {
        #expect(Self.kind(status: 404, code: "NoSuchKey") == .missing)
        // A 404 without the store's own code (a proxy's page, a wrong path) is not the job's fault.
        #expect(Self.kind(status: 404, code: nil) == .unavailable)
        #expect(Self.kind(status: 507, code: nil) == .full)
        #expect(Self.kind(status: 507, code: "XMinioStorageFull") == .full)
        #expect(Self.kind(status: 403, code: "QuotaExceeded") == .full)
        #expect(Self.kind(status: 503, code: "SlowDown") == .unavailable)
        #expect(Self.kind(status: 403, code: "AccessDenied") == .unavailable)
    }
}
