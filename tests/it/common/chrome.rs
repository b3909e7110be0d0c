//! A real browser for tests: headless Chromium driven through ChromeDriver
//! (Debian's `chromium` and `chromium-driver`, installed by `.ci/run`).

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use super::missing_service;

/// ChromeDriver on a free port, stopped on drop.
pub struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: browsers of a test that failed before closing
        // them would outlive ChromeDriver otherwise.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_driver() -> Option<Driver> {
    let installed = ["/usr/bin/chromium", "/usr/bin/chromedriver"]
        .iter()
        .all(|p| std::path::Path::new(p).exists());
    if !installed {
        missing_service(
            "Chromium and ChromeDriver",
            "apt-get install chromium chromium-driver",
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    Some(Driver { child, port })
}

pub async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,800"],
        }),
    );
    let url = format!("http://127.0.0.1:{}", driver.port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Plain HTTP to the local driver: no TLS stack needed.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let connected = ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await;
        match connected {
            Ok(client) => return client,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start Chromium through ChromeDriver: {e}"),
        }
    }
}

/// Evaluates `script` until it returns something truthy (or 30 s pass).
pub async fn wait_for(client: &Client, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = client.execute(script, vec![]).await.unwrap_or(Value::Null);
        let truthy = !matches!(&value, Value::Null | Value::Bool(false))
            && value != json!("")
            && value != json!([]);
        if truthy {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "waited 30 s for {what}; last: {value}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Signs in to the console at `/` with `email` and `password`.
pub async fn sign_in(client: &Client, url: &str, email: &str, password: &str) {
    client.goto(url).await.expect("console");
    client
        .wait()
        .for_element(Locator::Css("#login-form"))
        .await
        .expect("login form");
    for (name, value) in [("email", email), ("password", password)] {
        client
            .find(Locator::Css(&format!("#login-form input[name={name}]")))
            .await
            .expect(name)
            .send_keys(value)
            .await
            .expect("type");
    }
    client
        .find(Locator::Css("#login-submit"))
        .await
        .expect("submit")
        .click()
        .await
        .expect("click");
    wait_for(
        client,
        "the console after signing in",
        "return !document.getElementById('app-view').hidden;",
    )
    .await;
}
