//! Headless Chromium (Debian's package; `.ci/run` installs it when missing) for the tests
//! that look at a page: a screenshot from the command line, or a page driven through the
//! DevTools protocol over a pipe (`--remote-debugging-pipe`: JSON messages ended by NUL on
//! file descriptors 3 and 4, set up by `sh` so no unsafe code is needed here).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command};
use std::sync::mpsc::Receiver;

use base64::Engine as _;
use serde_json::{Value, json};

/// The browser; a missing one fails the test (CI installs it).
pub fn binary() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromium is not installed: .ci/run installs it")
}

/// The flags every run uses, with its own profile directory.
fn flags(profile: &Path, window: (u32, u32)) -> Vec<String> {
    vec![
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--hide-scrollbars".to_owned(),
        "--no-first-run".to_owned(),
        format!("--window-size={},{}", window.0, window.1),
        format!("--user-data-dir={}", profile.display()),
    ]
}

/// Check that `png` is a PNG of some size, and say where it is kept.
pub fn check_png(png: &Path) {
    let bytes = std::fs::read(png).unwrap();
    assert!(
        bytes.len() > 1000,
        "the screenshot is {} bytes",
        bytes.len()
    );
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    println!("screenshot kept at {}", png.display());
}

/// Load `url` and write a screenshot to `png` (within 60 s).
pub async fn screenshot(url: &str, png: &Path, profile: &Path, window: (u32, u32)) {
    let _ = std::fs::remove_file(png);
    let mut child = Command::new(binary())
        .args(flags(profile, window))
        .arg(format!("--screenshot={}", png.display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "chromium: {status}");
    check_png(png);
}

/// A browser driven over the DevTools protocol, with one page open; its calls block, so
/// run it off the runtime (`spawn_blocking`). Ended on drop.
pub struct Browser {
    child: Child,
    input: ChildStdin,
    answers: Receiver<Value>,
    next_id: u64,
    session: String,
}

impl Browser {
    /// Start a browser and open `url` in a page.
    pub fn open(url: &str, profile: &Path, window: (u32, u32)) -> Self {
        let mut script = String::from("exec \"$0\"");
        for (i, _) in flags(profile, window).iter().enumerate() {
            script.push_str(&format!(" \"${}\"", i + 1));
        }
        // Commands in on fd 3 (our stdin), answers out on fd 4 (our stdout).
        script.push_str(" --remote-debugging-pipe 3<&0 4>&1 0</dev/null 1>/dev/null");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(binary())
            .args(flags(profile, window))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let output = child.stdout.take().unwrap();
        let (tx, answers) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut output = BufReader::new(output);
            loop {
                let mut buf = Vec::new();
                match output.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        buf.pop();
                        if let Ok(value) = serde_json::from_slice::<Value>(&buf)
                            && value.get("id").is_some()
                            && tx.send(value).is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        let mut browser = Self {
            child,
            input,
            answers,
            next_id: 0,
            session: String::new(),
        };
        let target = browser.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let target = target["targetId"].as_str().unwrap().to_owned();
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser.page("Page.enable", json!({}));
        browser.page("Page.navigate", json!({"url": url}));
        browser
    }

    /// Send one command and wait (up to 30 s) for its answer.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.input.write_all(&bytes).unwrap();
        self.input.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let answer = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let value = self
                .answers
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("chromium did not answer {method} in 30 s: {e}"));
            if value["id"] == json!(id) {
                break value;
            }
        };
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// A command to the open page.
    fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params)
    }

    /// The value of a JavaScript expression in the page (returned by value).
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.page(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Evaluate `condition` until it is true, up to `limit`; the value of `describe` is in
    /// the failure message. While the page is still loading (no body yet, elements
    /// missing) the condition counts as false.
    pub fn wait_for(&mut self, condition: &str, describe: &str, limit: Duration) {
        let guarded = format!(
            "(() => {{ try {{ return ({condition}) === true; }} catch (e) {{ return false; }} }})()"
        );
        let started = Instant::now();
        loop {
            if self.eval(&guarded) == json!(true) {
                return;
            }
            if started.elapsed() > limit {
                let describe = format!(
                    "(() => {{ try {{ return ({describe}); }} catch (e) {{ return String(e); }} }})()"
                );
                let seen = self.eval(&describe);
                panic!("the page never got to `{condition}`: {seen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A screenshot of the whole page, written to `png`.
    pub fn screenshot(&mut self, png: &Path) {
        let shot = self.page(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(png, bytes).unwrap();
        check_png(png);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory under the target directory for a test's files (kept as artifacts).
pub fn artifacts(group: &str, test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(group)
        .join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
