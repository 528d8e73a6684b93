//! The bypass corpus: every case in `testdata/bypass/cases/*.toml` is sent as raw bytes over
//! a loopback TCP socket to a real gateway running `testdata/bypass/warden.toml`, in front
//! of a recording upstream. Each answer must have the case's status (and problem `code`);
//! a refused case must leave the upstream's request log untouched, and the positive
//! controls must reach it exactly as stated. `testdata/bypass/README.md` describes the
//! format; adding a case is adding a table to a file.
use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Fixture, Upstream};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::time::Instant;

/// How long one case may take, from connecting to the end of its answer.
const CASE_DEADLINE: Duration = Duration::from_secs(5);
/// The issue asks for at least this many refused bypass attempts.
const MIN_REFUSED: usize = 100;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/bypass")
}

/// One file of cases.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(rename = "case")]
    cases: Vec<Case>,
}

/// One bypass attempt (or positive control) and the answer it must get.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// Unique across the corpus.
    id: String,
    /// What the attempt tries.
    description: String,
    /// The protected route (a path template of the configuration) it targets.
    route: String,
    /// The raw request, in the escape language of [`unescape`].
    request: String,
    /// The status the client must get.
    status: u16,
    /// The problem document's `code`, when the answer is one.
    code: Option<String>,
    /// The loopback address to connect from (default `127.0.0.1`).
    peer: Option<IpAddr>,
    /// The gateway must close the connection after its answer.
    #[serde(default)]
    close: bool,
    /// The target the upstream must receive; absent means nothing may reach it.
    forwarded: Option<String>,
    /// Headers that must not reach the upstream (with `forwarded`).
    #[serde(default)]
    absent: Vec<String>,
    /// Headers the upstream must receive with exactly these values (with `forwarded`).
    #[serde(default)]
    upstream_headers: BTreeMap<String, String>,
}

/// A case with where it came from.
struct Loaded {
    file: String,
    case: Case,
    bytes: Vec<u8>,
}

impl Loaded {
    fn name(&self) -> String {
        format!("{}#{}", self.file, self.case.id)
    }
}

/// Decode a request written with the corpus escapes: `\r`, `\n`, `\t`, `\0`, `\\`, and
/// `\xHH` for any byte, optionally followed by `{N}` to repeat that byte N times. Any other
/// backslash sequence is an error, so every byte of a request is written one way only.
fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let escape = bytes.get(i + 1).copied();
        i += 2;
        match escape {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = text
                    .get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad \\x escape at byte {i}"))?;
                i += 2;
                let mut count = 1;
                if bytes.get(i) == Some(&b'{') {
                    let end = text[i..]
                        .find('}')
                        .ok_or_else(|| format!("unclosed repeat at byte {i}"))?;
                    count = text[i + 1..i + end]
                        .parse::<usize>()
                        .map_err(|e| format!("bad repeat count at byte {i}: {e}"))?;
                    i += end + 1;
                }
                out.extend(std::iter::repeat_n(hex, count));
            }
            other => {
                return Err(format!(
                    "unknown escape \\{} at byte {}",
                    other.map(char::from).unwrap_or(' '),
                    i - 2
                ));
            }
        }
    }
    Ok(out)
}

/// Every case of the corpus, checked for consistency.
fn load_corpus(templates: &BTreeSet<String>) -> Vec<Loaded> {
    let dir = corpus_dir().join("cases");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut ids = BTreeSet::new();
    let mut loaded = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed: CaseFile = toml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        for case in parsed.cases {
            let name = format!("{file}#{}", case.id);
            assert!(ids.insert(case.id.clone()), "{name}: duplicate id");
            assert!(
                !case.description.trim().is_empty(),
                "{name}: no description"
            );
            assert!(
                templates.contains(&case.route),
                "{name}: route {} is not in the configuration",
                case.route
            );
            assert!((100..600).contains(&case.status), "{name}: bad status");
            let success = (200..300).contains(&case.status);
            assert_eq!(
                success,
                case.forwarded.is_some(),
                "{name}: a 2xx case must say what the upstream receives, and only a 2xx case may"
            );
            assert!(
                case.forwarded.is_some()
                    || (case.absent.is_empty() && case.upstream_headers.is_empty()),
                "{name}: upstream expectations without `forwarded`"
            );
            let bytes = unescape(&case.request).unwrap_or_else(|e| panic!("{name}: {e}"));
            loaded.push(Loaded {
                file: file.clone(),
                case,
                bytes,
            });
        }
    }
    loaded
}

/// The path templates of the corpus configuration.
fn route_templates(config_text: &str) -> BTreeSet<String> {
    let value: toml::Value = toml::from_str(config_text).unwrap();
    value["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect()
}

/// What came back on one connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
    /// The gateway closed the connection after the answer.
    closed: bool,
    /// How many status lines arrived (more than one: the gateway answered a smuggled request).
    responses: usize,
}

impl Answer {
    fn code(&self) -> Option<String> {
        let body: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        body["code"].as_str().map(str::to_owned)
    }
}

/// Position of the end of the head (after the blank line) in `data`.
fn head_end(data: &[u8]) -> Option<usize> {
    data.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

/// Send one request from `peer` and read its answer, within [`CASE_DEADLINE`]. When
/// `wait_close`, keep reading after the answer until the gateway closes the connection.
async fn exchange(
    gateway: SocketAddr,
    peer: IpAddr,
    request: &[u8],
    wait_close: bool,
) -> Result<Answer, String> {
    // The answer to HEAD announces a length but carries no body.
    let head_request = request.starts_with(b"HEAD ");
    let deadline = Instant::now() + CASE_DEADLINE;
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(peer, 0))
        .map_err(|e| format!("bind {peer}: {e}"))?;
    let mut stream = tokio::time::timeout_at(deadline, socket.connect(gateway))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    // The gateway may answer and close before reading everything (a head too large):
    // a failed write is not an error, the answer is what counts.
    let _ = tokio::time::timeout_at(deadline, stream.write_all(request)).await;

    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut closed = false;
    let mut complete_at: Option<usize> = None;
    loop {
        if complete_at.is_none()
            && let Some(end) = head_end(&data)
        {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length = head.lines().find_map(|l| {
                l.strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            let length = if head_request { Some(0) } else { length };
            if let Some(length) = length
                && data.len() >= end + length
            {
                complete_at = Some(end + length);
            }
        }
        if complete_at.is_some() && !wait_close {
            break;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0) | Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => data.extend_from_slice(&buf[..n]),
        }
    }
    let end = head_end(&data).ok_or_else(|| {
        format!(
            "no complete answer within {CASE_DEADLINE:?}: {:?}",
            String::from_utf8_lossy(&data)
        )
    })?;
    let head = String::from_utf8_lossy(&data[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line: {head:?}"))?;
    let body_end = complete_at.unwrap_or(data.len()).min(data.len());
    let responses = count_status_lines(&data);
    Ok(Answer {
        status,
        body: data[end..body_end].to_vec(),
        head,
        closed,
        responses,
    })
}

fn count_status_lines(data: &[u8]) -> usize {
    data.windows(9).filter(|w| w == b"HTTP/1.1 ").count()
}

/// Check one case's answer and what reached the upstream; the problems found, if any.
fn check(loaded: &Loaded, answer: &Answer, reached: &[common::Seen]) -> Vec<String> {
    let case = &loaded.case;
    let mut problems = Vec::new();
    if answer.status != case.status {
        problems.push(format!(
            "status {} (expected {})",
            answer.status, case.status
        ));
    }
    if let Some(code) = &case.code
        && answer.code().as_deref() != Some(code.as_str())
    {
        problems.push(format!(
            "code {:?} (expected {code:?})",
            answer.code().unwrap_or_default()
        ));
    }
    if case.close && !answer.closed {
        problems.push("the connection was left open".to_owned());
    }
    if answer.responses > 1 {
        problems.push(format!("{} responses on one connection", answer.responses));
    }
    match (&case.forwarded, reached) {
        (None, []) => {}
        (None, _) => problems.push(format!(
            "BYPASS: a refused request reached the upstream: {:?}",
            reached.iter().map(|s| &s.target).collect::<Vec<_>>()
        )),
        (Some(target), [seen]) => {
            if &seen.target != target {
                problems.push(format!(
                    "the upstream received {} (expected {target})",
                    seen.target
                ));
            }
            for name in &case.absent {
                if seen.headers.contains_key(name.as_str()) {
                    problems.push(format!("{name} reached the upstream"));
                }
            }
            for (name, value) in &case.upstream_headers {
                let got: Vec<_> = seen
                    .headers
                    .get_all(name.as_str())
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                if got != [value.clone()] {
                    problems.push(format!("upstream {name}: {got:?} (expected {value:?})"));
                }
            }
        }
        (Some(_), _) => problems.push(format!(
            "{} requests reached the upstream (expected one)",
            reached.len()
        )),
    }
    problems
}

#[test]
fn the_corpus_escape_language_is_exact() {
    assert_eq!(unescape(r"a\r\n\t\0\\b").unwrap(), b"a\r\n\t\0\\b");
    assert_eq!(unescape(r"\xc0\xAF\x41{3}").unwrap(), b"\xc0\xafAAA");
    assert!(unescape(r"\q").is_err());
    assert!(unescape(r"\x4").is_err());
    assert!(unescape(r"\x41{3").is_err());
}

#[tokio::test]
async fn no_case_of_the_bypass_corpus_gets_through() {
    let config_text = std::fs::read_to_string(corpus_dir().join("warden.toml")).unwrap();
    let corpus = load_corpus(&route_templates(&config_text));
    let refused = corpus.iter().filter(|l| l.case.forwarded.is_none()).count();
    let controls = corpus.len() - refused;
    assert!(
        refused >= MIN_REFUSED,
        "the corpus has {refused} refused cases; at least {MIN_REFUSED} are wanted"
    );
    assert!(controls >= 3, "the corpus needs positive controls");

    let upstream = Upstream::start().await;
    let config = Fixture::load(corpus_dir().join("warden.toml"));
    let gw = common::gateway(config, &upstream).await;
    let mut failures = Vec::new();
    let mut expected_log = Vec::new();
    for loaded in &corpus {
        let before = upstream.seen().len();
        let peer = loaded.case.peer.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let wait_close = loaded.case.close;
        match exchange(gw.proxy_addr, peer, &loaded.bytes, wait_close).await {
            Err(e) => failures.push(format!("{}: {e}", loaded.name())),
            Ok(answer) => {
                let seen = upstream.seen();
                let problems = check(loaded, &answer, &seen[before.min(seen.len())..]);
                if !problems.is_empty() {
                    failures.push(format!(
                        "{} ({}): {}\n    answer head: {:?}",
                        loaded.name(),
                        loaded.case.description,
                        problems.join("; "),
                        answer.head
                    ));
                }
            }
        }
        if let Some(target) = &loaded.case.forwarded {
            expected_log.push((loaded.name(), target.clone()));
        }
    }
    gw.shutdown().await;

    // The whole log, once the gateway is gone: exactly the positive controls, in order, so
    // nothing refused (nor smuggled behind another request) reached the upstream late.
    let log: Vec<String> = upstream.seen().into_iter().map(|s| s.target).collect();
    let wanted: Vec<&String> = expected_log.iter().map(|(_, t)| t).collect();
    if log.iter().collect::<Vec<_>>() != wanted {
        failures.push(format!(
            "the upstream's log is not exactly the positive controls:\n    log:      {log:?}\n    controls: {expected_log:?}"
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases failed:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
}
