//! The real browser: Debian's Chromium, headless, with DBSC on, against the demo over HTTPS.
//! It logs in through the page's form; the layer's events (on the demo's stdout) prove that
//! the browser itself registered a device key and, once the bound cookie had run out, refreshed
//! it through the challenge; and the page it then loads is signed in, with its session shown
//! as device-bound.
//!
//! Needs `chromium` and `chromedriver` (Debian's `chromium` and `chromium-driver`; .ci/run
//! installs them). Without them this test fails: it never passes without a browser.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The bound cookie's lifetime for this test: short, so a refresh is due within seconds.
const LIFETIME_SECS: u64 = 4;
/// Every wait is bounded; a browser that never does what we wait for fails the test.
const WAIT: Duration = Duration::from_secs(30);

/// What the demo printed so far, line by line.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits until a line contains `needle`; returns the part after it.
    async fn wait_for(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.lines().iter().find(|l| l.contains(needle)) {
                let at = l.find(needle).unwrap() + needle.len();
                return l[at..].trim().to_owned();
            }
            assert!(
                start.elapsed() < WAIT,
                "the demo never printed {needle:?}; it printed:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `$env`, or `name` looked up on `PATH` (chromedriver wants an absolute binary path).
fn tool(env: &str, name: &str) -> String {
    let path = std::env::var(env).unwrap_or_else(|_| {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
            .map_or_else(|| name.to_owned(), |p| p.display().to_string())
    });
    let found = std::process::Command::new(&path)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{name} is missing: install Debian's chromium and chromium-driver \
         (apt-get install -y chromium chromium-driver) or set {env}"
    );
    path
}

fn spawn_logged(mut cmd: Command, log: &Log) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("the process starts");
    for out in [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let log = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.0.lock().unwrap().push(line);
            }
        });
    }
    child
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_registers_refreshes_and_stays_signed_in() {
    let chromium = tool("CHROMIUM", "chromium");
    let chromedriver = tool("CHROMEDRIVER", "chromedriver");

    // The demo over HTTPS with DBSC on.
    let demo_log = Log::default();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_demo"));
    demo.args([
        "--tls",
        "--dbsc",
        "--bound-cookie-lifetime",
        &LIFETIME_SECS.to_string(),
        "--addr",
        "127.0.0.1:0",
    ])
    .env("RUST_LOG", "info")
    .env("NO_COLOR", "1");
    let _demo = spawn_logged(demo, &demo_log);
    let url = demo_log.wait_for("tower-session-guard demo on").await;
    let spki = demo_log
        .wait_for("certificate SPKI SHA-256 (base64):")
        .await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // chromedriver, and Chromium through it with a fresh profile.
    let driver_log = Log::default();
    let port = free_port();
    let mut driver = Command::new(&chromedriver);
    driver.args([format!("--port={port}"), "--enable-chrome-logs".to_owned()]);
    let _driver = spawn_logged(driver, &driver_log);
    let profile = std::env::temp_dir().join(format!("tsg-e2e-profile-{port}"));
    let _ = std::fs::remove_dir_all(&profile);
    tsg_e2e::chromium::prepare_profile(&profile).unwrap();
    let mut chromium_args = tsg_e2e::chromium::args(&profile, &spki);
    // More flags for debugging a failure (for example Chromium's own logging).
    if let Ok(extra) = std::env::var("TSG_E2E_CHROMIUM_ARGS") {
        chromium_args.extend(extra.split_whitespace().map(str::to_owned));
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": chromium_args,
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let start = Instant::now();
    let browser = loop {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) if start.elapsed() < WAIT => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!(
                "chromedriver/chromium did not start: {e}\n{}",
                driver_log.lines().join("\n")
            ),
        }
    };

    // Log in through the page, as a person would.
    browser.goto(&format!("{url}/")).await.unwrap();
    browser
        .find(Locator::Css("input[name=username]"))
        .await
        .unwrap()
        .send_keys("alice")
        .await
        .unwrap();
    browser
        .find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys("alice-pass")
        .await
        .unwrap();
    browser
        .find(Locator::Css("#login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The browser registers its key by itself (the login response offered it).
    demo_log.wait_for("device_registered").await;

    // The bound cookie runs out; the next navigation is held back by the browser until it
    // has refreshed through the 403 challenge, then sent with the new cookie.
    tokio::time::sleep(Duration::from_secs(LIFETIME_SECS + 1)).await;
    browser.goto(&format!("{url}/")).await.unwrap();
    let refreshed = tokio::time::timeout(WAIT, async {
        while demo_log.count("device_refreshed") == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        refreshed.is_ok(),
        "the browser never refreshed; demo:\n{}\n--- chromedriver and chromium:\n{}",
        demo_log.lines().join("\n"),
        driver_log.lines().join("\n")
    );
    let start = Instant::now();
    let page = loop {
        let page = browser.source().await.unwrap();
        if page.contains("Signed in as <b>alice</b>") || start.elapsed() > WAIT {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        browser.refresh().await.unwrap();
    };
    assert!(
        page.contains("Signed in as <b>alice</b>"),
        "after the refresh the page is not signed in:\n{page}\n---\n{}",
        demo_log.lines().join("\n")
    );
    // The session list shows this session as device-bound.
    assert!(page.contains("<td>yes</td>"), "{page}");
    // The real browser never sent a request of its bound session without a valid bound
    // cookie: it held them back while refreshing (and the page after login, which races
    // the registration, fell within the layer's registration grace).
    assert_eq!(
        demo_log.count("bound_cookie_refused"),
        0,
        "{}",
        demo_log.lines().join("\n")
    );
    assert_eq!(demo_log.count("device_registered"), 1);
    let _ = browser.close().await;
    let _ = std::fs::remove_dir_all(&profile);
    println!(
        "registered {}, refreshed {}, bound-cookie refusals {}",
        demo_log.count("device_registered"),
        demo_log.count("device_refreshed"),
        demo_log.count("bound_cookie_refused"),
    );
}
