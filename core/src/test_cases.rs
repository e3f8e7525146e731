//! Shared by the core's unit-test properties.

/// `PROPTEST_CASES` when set (`cargo xtask soak` raises it), else `default`.
/// (An explicit `cases:` in a proptest config would otherwise override it.)
pub(crate) fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
