//! The chat page the gateway serves, in two headless Chromium sessions driven over
//! WebDriver (Debian's `chromium` and `chromedriver`, which the README's test command
//! installs): two people log in with their tokens, see each other online, and exchange a
//! message. A screenshot of each page is kept in the test run's target directory.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use super::*;

/// Where the Debian packages put the WebDriver server and the browser.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver listening on a loopback port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "{CHROMEDRIVER} and {CHROMIUM} are needed: the README's test command installs them (tests/browser/setup.sh)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        let client = reqwest::Client::new();
        while client
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    /// A fresh headless browser session. As root, Chromium needs `--no-sandbox`; a small
    /// /dev/shm needs `--disable-dev-shm-usage`.
    async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1000,720"],
            }),
        );
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of the element with id `id`.
async fn text_of(browser: &Client, id: &str) -> String {
    match browser.find(Locator::Id(id)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until the element with id `id` shows `want`.
async fn shows(browser: &Client, id: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = text_of(browser, id).await;
        if seen.contains(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "#{id} shows {seen:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Types `text` into the input with id `id`.
async fn type_into(browser: &Client, id: &str, text: &str) {
    let input = browser.find(Locator::Id(id)).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(text).await.unwrap();
}

/// Opens the page and logs in with `token`, as a person would.
async fn log_in(browser: &Client, page: &str, token: &str, user: &str) {
    browser.goto(page).await.unwrap();
    type_into(browser, "token", token).await;
    browser
        .find(Locator::Id("connect"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    shows(browser, "status", &format!("Connected as {user}.")).await;
}

/// Says `text` to `to` on the page.
async fn say(browser: &Client, to: &str, text: &str) {
    type_into(browser, "to", to).await;
    type_into(browser, "text", text).await;
    browser
        .find(Locator::Id("send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Keeps a screenshot of `browser`'s page as `<name>.png` in the test run's target
/// directory.
async fn keep_screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot kept at {}", path.display());
}

/// Ann and Bo open the chat page in two browsers, log in with their tokens, see each
/// other online, and exchange a message each way through the `chat` handler; each sees
/// the other's words and that their own was delivered. A `Chat` pushed by another handler
/// is shown as from that handler, not from the person its payload names.
#[tokio::test]
async fn two_browser_sessions_chat_on_the_page() {
    let daemon = daemon("gateway-browser").await;
    assert_eq!(daemon.deploy("chat", guest("chat")).await.0, 201);
    let page = daemon
        .gateway_url()
        .unwrap()
        .replace("ws://", "http://")
        .replace("/v1/ws", "/");
    let driver = Driver::start().await;
    let ann = driver.browser().await;
    let bo = driver.browser().await;
    log_in(&ann, &page, "t-ann", "ann").await;
    log_in(&bo, &page, "t-bo", "bo").await;
    shows(&ann, "online", "bo").await;
    shows(&bo, "online", "ann").await;

    say(&ann, "bo", "Hello Bo, from a browser").await;
    shows(&bo, "log", "ann: Hello Bo, from a browser").await;
    shows(&ann, "log", "(delivered)").await;
    say(&bo, "ann", "Hi Ann!").await;
    shows(&ann, "log", "bo: Hi Ann!").await;

    // Another handler's `Chat` claiming to be from Bo is shown as that handler's.
    assert_eq!(daemon.deploy("storm", guest("storm")).await.0, 201);
    let forged = json!({"user": "ann", "from": "bo", "text": "send me your token"});
    let (_, done) = daemon.call("storm", "ForgeChat", forged).await;
    assert_eq!(done["payload"], json!({"done": 1}), "{done}");
    shows(&ann, "log", "storm: Chat").await;
    let log = text_of(&ann, "log").await;
    assert!(!log.contains("bo: send me your token"), "{log}");

    keep_screenshot(&ann, "chat-ann").await;
    keep_screenshot(&bo, "chat-bo").await;
    ann.close().await.unwrap();
    bo.close().await.unwrap();
}
