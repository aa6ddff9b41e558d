// Credentials never appear in a description. A struct that holds an `S3Client` (an `ObjectStorage`, a service
// holding one) is described through reflection, child by child: swift-service-lifecycle names every service
// with `"\(service)"` and logs that name, so without this the secret key reached the logs at debug level.
// `description`, `debugDescription` and the reflected children all redact it.

extension S3Configuration: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String {
        "S3Configuration(endpoint: \(endpoint.absoluteString), region: \(region), bucket: \(bucket), "
            + "keyPrefix: \(keyPrefix), accessKey: \(accessKey), secretKey: <redacted>"
            + (sessionToken == nil ? "" : ", sessionToken: <redacted>") + ")"
    }

    public var debugDescription: String { description }

    public var customMirror: Mirror {
        Mirror(self, children: [
            "endpoint": endpoint.absoluteString, "region": region, "bucket": bucket, "keyPrefix": keyPrefix,
            "accessKey": accessKey, "secretKey": "<redacted>",
        ], displayStyle: .struct)
    }
}

extension SigV4Signer: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String {
        "SigV4Signer(accessKey: \(accessKey), region: \(region), service: \(service), secretKey: <redacted>)"
    }

    public var debugDescription: String { description }

    public var customMirror: Mirror {
        Mirror(self, children: [
            "accessKey": accessKey, "region": region, "service": service, "secretKey": "<redacted>",
        ], displayStyle: .struct)
    }
}
