//! `ftbudget serve` end to end in a real browser: Debian's headless Chromium (`/usr/bin/chromium`,
//! or `$FTBUDGET_CHROMIUM`) loads the page, a LoRA rank is typed into the regime form, and the
//! table and the SVG chart must change to the new rank's figures; the URL then holds the view,
//! and loading it in a fresh tab shows the same table. The test installs nothing: `.ci/run`
//! installs the `chromium` package when it is missing, and without a browser this test fails
//! saying so (it never passes silently).
//!
//! Chromium is driven over the DevTools protocol by the `headless_chrome` crate: synchronous (no
//! async runtime in the test), it starts the given binary itself with the flags below and speaks
//! to it on 127.0.0.1, and its default `offline` feature builds the protocol bindings from the
//! copy shipped in the crate, so neither building nor running it touches the network (chromedriver
//! would be a second Debian package; chromiumoxide needs an async runtime).
//!
//! The expected counts are the seed lab's (MiniGPT, LoRA on every linear layer): 18,432 trainable
//! parameters at r=4 and 73,728 at r=16. With `FTBUDGET_WRITE_SCREENSHOT=1` the test also writes
//! the README's screenshot, `docs/serve.png`.

mod serve_common;

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use serve_common::Server;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long the page may take to show an answer (a bound on waiting, not a measured time).
const PATIENCE: Duration = Duration::from_secs(60);

fn chromium() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("FTBUDGET_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    assert!(
        path.is_file(),
        "no browser at {}: this end-to-end test needs Debian's chromium \
         (`apt-get install -y chromium`, which .ci/run does) or FTBUDGET_CHROMIUM=/path/to/chromium",
        path.display()
    );
    path
}

fn launch(profile: &std::path::Path) -> Browser {
    // --headless, --disable-gpu and --no-sandbox come from the options below; these keep
    // Chromium off the network (no update checks, sync, or QUIC probes).
    let flags: Vec<&OsStr> = [
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--hide-scrollbars",
    ]
    .iter()
    .map(OsStr::new)
    .collect();
    let options = LaunchOptions::default_builder()
        .path(Some(chromium()))
        .headless(true)
        .sandbox(false)
        .enable_gpu(false)
        .user_data_dir(Some(profile.to_path_buf()))
        .window_size(Some((1440, 1300)))
        .idle_browser_timeout(Duration::from_secs(300))
        .args(flags)
        .build()
        .expect("launch options");
    Browser::new(options).expect("headless chromium starts")
}

/// A JavaScript expression's value, as a string.
fn eval(tab: &Tab, expression: &str) -> String {
    let value = tab
        .evaluate(expression, false)
        .unwrap_or_else(|e| panic!("{expression}: {e}"))
        .value;
    match value {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// Wait until `expression` is true (the page updates asynchronously).
fn wait_until(tab: &Tab, expression: &str, what: &str) {
    let start = Instant::now();
    while eval(tab, &format!("String(!!({expression}))")) != "true" {
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: not seen; page error: {:?}",
            eval(tab, "document.getElementById('error').textContent")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn open(tab: &Tab, url: &str) {
    tab.navigate_to(url).unwrap();
    tab.wait_until_navigated().unwrap();
    wait_until(tab, "document.body.dataset.updates", "the first answer");
}

const LORA_ROW: &str = "document.querySelector('#estimate-table tbody tr:nth-child(2)').innerText";

/// The LoRA bar's height in SVG units (the sum of its stacked rectangles).
fn bar_height(tab: &Tab, spec: &str) -> f64 {
    eval(
        tab,
        &format!(
            "String([...document.querySelectorAll('#chart rect[data-regime=\"{spec}\"]')]\
             .reduce((h, r) => h + Number(r.getAttribute('height')), 0))"
        ),
    )
    .parse()
    .unwrap()
}

#[test]
fn changing_a_rank_changes_the_table_and_the_chart() {
    let server = Server::start();
    let profile = std::env::temp_dir().join(format!("ftbudget-chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();
    let browser = launch(&profile);
    let tab = browser.new_tab().unwrap();

    open(
        &tab,
        &server.url("/?model=minigpt&conventions=seed&regime=full-ft&regime=lora%3Ar%3D4"),
    );
    let before = eval(&tab, LORA_ROW);
    assert!(
        before.contains("LoRA r=4") && before.contains("18,432"),
        "{before}"
    );
    let chart_before = eval(&tab, "document.getElementById('chart').innerHTML");
    let bar_before = bar_height(&tab, "lora:r=4");
    assert!(bar_before > 0.0);
    // The bars carry the PNG charts' colours.
    let fills = eval(
        &tab,
        "[...document.querySelectorAll('#chart rect[data-regime=\"full-ft\"]')].map(r => r.getAttribute('fill')).join(' ')",
    );
    assert!(
        fills.starts_with("rgb(0,114,178) rgb(230,159,0) rgb(0,158,115) rgb(204,121,167)"),
        "{fills}"
    );

    // Type a new rank into the LoRA form, as a person would.
    let rank = ".regime[data-index=\"1\"] input[data-key=\"r\"]";
    eval(
        &tab,
        &format!("document.querySelector('{rank}').value = ''"),
    );
    tab.find_element(rank).unwrap().click().unwrap();
    tab.type_str("16").unwrap();
    wait_until(
        &tab,
        &format!("{LORA_ROW}.includes('73,728')"),
        "LoRA r=16 in the table",
    );
    let after = eval(&tab, LORA_ROW);
    assert!(after.contains("LoRA r=16"), "{after}");
    assert_ne!(
        eval(&tab, "document.getElementById('chart').innerHTML"),
        chart_before
    );
    let bar_after = bar_height(&tab, "lora:r=16");
    assert!(bar_after > bar_before, "{bar_after} <= {bar_before}");
    assert_eq!(bar_height(&tab, "lora:r=4"), 0.0, "the old bar is gone");

    // The URL holds the view: a fresh tab on it shows the same table.
    let url = eval(&tab, "location.href");
    assert!(url.contains("regime=lora%3Ar%3D16"), "{url}");
    let table = eval(&tab, "document.getElementById('estimate-table').innerText");
    let again = browser.new_tab().unwrap();
    open(&again, &url);
    assert_eq!(
        eval(
            &again,
            "document.getElementById('estimate-table').innerText"
        ),
        table
    );

    if std::env::var_os("FTBUDGET_WRITE_SCREENSHOT").is_some() {
        write_screenshot(&again, &server);
    }
    drop(browser);
    let _ = std::fs::remove_dir_all(&profile);
}

/// The README's picture: Llama-3-8B, four regimes, the fit answer on an A100 80 GB.
fn write_screenshot(tab: &Tab, server: &Server) {
    open(
        tab,
        &server.url(
            "/?model=llama-3-8b&regime=full-ft&regime=lora%3Ar%3D16&regime=qlora%3Ar%3D16\
             &regime=dora%3Ar%3D16&checkpointing=full&batch=4&gpu=a100-80g",
        ),
    );
    wait_until(tab, "document.getElementById('fit-table')", "the fit table");
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/serve.png");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, png).unwrap();
}
