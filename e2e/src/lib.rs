//! The demo's HTTPS ([`tls`]) and what the real-browser test needs to start Chromium with
//! Device Bound Session Credentials on ([`chromium`]).

pub mod chromium;
pub mod tls;

/// How to try the demo in Chrome, printed by the demo with `--dbsc`.
pub const CHROME_FLAGS_HINT: &str = "start Chrome with \
--enable-features=DeviceBoundSessions:RequireOriginTrialTokens/false/RefreshQuota/false,\
EnableBoundSessionCredentialsSoftwareKeysForManualTesting \
--ignore-certificate-errors-spki-list=<the SPKI above> and a fresh --user-data-dir";
