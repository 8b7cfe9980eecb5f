//! Chromium with Device Bound Session Credentials on, as issue 15 found works with Debian's
//! chromium 156: a fresh profile whose `Local State` enables the two lab experiments, the same
//! as feature flags, and the demo certificate's SPKI trusted.

use std::path::Path;

/// The `Local State` of a fresh profile: DBSC without origin-trial tokens or refresh quota,
/// with software keys (no TPM in CI).
pub const LOCAL_STATE: &str = r#"{"browser":{"enabled_labs_experiments":["enable-standard-device-bound-session-credentials@2","enable-bound-session-credentials-software-keys-for-manual-testing@1"]}}"#;

/// The same as feature flags.
pub const FEATURES: &str = "--enable-features=DeviceBoundSessions:RequireOriginTrialTokens/false/RefreshQuota/false,EnableBoundSessionCredentialsSoftwareKeysForManualTesting";

/// Writes `Local State` into the fresh profile `dir`.
pub fn prepare_profile(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("Local State"), LOCAL_STATE)
}

/// Chromium's arguments: headless, this profile, DBSC on, the demo's certificate trusted by
/// its public key only.
pub fn args(profile: &Path, spki_sha256: &str) -> Vec<String> {
    vec![
        "--headless=new".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--no-first-run".into(),
        format!("--user-data-dir={}", profile.display()),
        FEATURES.into(),
        format!("--ignore-certificate-errors-spki-list={spki_sha256}"),
    ]
}
