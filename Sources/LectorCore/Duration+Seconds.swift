extension Duration {
    /// Seconds as a Double (for SQL intervals, rates and logs).
    public var secondsValue: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
