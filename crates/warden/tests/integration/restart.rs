//! A restart without a failed request: the `warden` binary gets its listening socket from
//! outside, as systemd socket activation hands it over (`LISTEN_FDS`, `LISTEN_PID`,
//! `LISTEN_FDNAMES`). A second process is started on the same socket while the first one
//! serves a load; the first gets SIGTERM and drains; no request of the load fails, and both
//! processes answered some of it.
use crate::common;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use common::{Upstream, fixture};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

/// `warden serve --config CONFIG` with `listener` as its socket 3, named `proxy`. `sh` sets
/// `LISTEN_PID` to its own pid and `exec`s warden, which keeps that pid (what systemd does
/// between fork and exec).
fn spawn_activated(config: &Path, listener: &std::net::TcpListener) -> Proc {
    let fd = OwnedFd::from(listener.try_clone().unwrap());
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"LISTEN_PID=$$ exec "$0" serve --config "$1""#)
        .arg(WARDEN)
        .arg(config)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "proxy")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
        .fd_mappings(vec![FdMapping {
            parent_fd: fd,
            child_fd: 3,
        }])
        .unwrap();
    let mut child = command.spawn().unwrap();
    let stderr = wait_listening(&mut child);
    Proc(child, stderr)
}

/// A child ended (by its own handle) on drop, so a failing test leaves no process behind;
/// with the lines of its standard error read so far.
struct Proc(Child, Arc<Mutex<Vec<String>>>);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// SIGTERM, then wait for the exit (bounded); whether it exited cleanly.
    async fn terminate(&mut self) -> bool {
        signal(&self.0, "TERM");
        self.exited().await
    }

    /// Wait for the exit (bounded); whether it exited cleanly.
    async fn exited(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(exit) = self.0.try_wait().unwrap() {
                return exit.success();
            }
            assert!(
                Instant::now() < deadline,
                "warden did not drain and exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Wait for the child's "warden listening on" line; the rest of its output is drained
/// into the lines returned.
fn wait_listening(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    use std::io::BufRead;
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let kept = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("warden listening on ") {
                let _ = tx.send(());
            }
            kept.lock().unwrap().push(line);
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("warden did not start");
    lines
}

/// Lines in a decision log: one per request the process answered.
fn answered(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |t| t.lines().count())
}

#[derive(Default)]
struct Load {
    ok: AtomicU64,
    /// Requests that got no answer (a connection refused or reset).
    failed: AtomicU64,
    /// Answers that are not 200.
    wrong: AtomicU64,
    stop: AtomicBool,
}

/// Send GET /public until told to stop (or a bounded number of requests), counting answers
/// that are not 200 and requests that got no answer.
async fn drive(load: Arc<Load>, base: String, keep_alive: bool) {
    let builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
    let client = if keep_alive {
        builder.build().unwrap()
    } else {
        builder.pool_max_idle_per_host(0).build().unwrap()
    };
    for _ in 0..50_000 {
        if load.stop.load(Ordering::Relaxed) {
            return;
        }
        let answer = match client.get(format!("{base}/public")).send().await {
            Ok(r) => {
                let status = r.status();
                r.bytes().await.map(|_| status)
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(status) if status == 200 => {
                load.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(status) => {
                eprintln!("wrong answer: status {status}");
                load.wrong.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                eprintln!("failed request: {e:?}");
                load.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Wait until the load has `more` successes beyond now (bounded in time).
async fn wait_for_successes(load: &Load, more: u64) {
    let target = load.ok.load(Ordering::Relaxed) + more;
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.ok.load(Ordering::Relaxed) < target {
        assert!(Instant::now() < deadline, "the load stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Where the two processes of a restart get their listening socket.
enum Socket {
    /// Handed over, as systemd's socket activation does: the socket outlives both.
    Handed(std::net::TcpListener),
    /// Bound by each process with `SO_REUSEPORT` at this address.
    ReusePort(SocketAddr),
}

impl Socket {
    fn addr(&self) -> SocketAddr {
        match self {
            Self::Handed(listener) => listener.local_addr().unwrap(),
            Self::ReusePort(addr) => *addr,
        }
    }

    /// The `[gateway]` lines of a process.
    fn gateway(&self) -> String {
        match self {
            // Not the socket's address: the handed-over socket is matched by its name.
            Self::Handed(_) => {
                "[gateway]\nlisten = \"127.0.0.1:1\"\ndrain_timeout = \"5s\"\n".to_owned()
            }
            Self::ReusePort(addr) => format!(
                "[gateway]\nlisten = \"{addr}\"\nreuse_port = true\ndrain_timeout = \"5s\"\n"
            ),
        }
    }

    fn spawn(&self, config: &Path) -> Proc {
        match self {
            Self::Handed(listener) => spawn_activated(config, listener),
            Self::ReusePort(_) => spawn_bound(config),
        }
    }
}

/// `warden serve --config CONFIG`, binding its listeners itself.
fn spawn_bound(config: &Path) -> Proc {
    let mut command = Command::new(WARDEN);
    command
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stderr = wait_listening(&mut child);
    Proc(child, stderr)
}

/// A load of keep-alive and new connections on `socket` while a new process starts beside
/// the old one and the old one is stopped: every answer is right, both processes answer
/// some, and no request fails when `lossless` (else the failures are counted and returned).
async fn restart_under_load(name: &str, socket: Socket, lossless: bool) -> (u64, Proc) {
    warden::install_crypto_provider();
    let upstream = Upstream::start().await;
    let dir = std::env::temp_dir().join(format!("warden-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = format!("http://{}", socket.addr());
    let config_for = |name: &str| {
        let log = dir.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        let config = fixture("public")
            .upstream(upstream.addr)
            .replace(
                "decisions = \"off\"",
                &format!(
                    "decisions = {:?}\nallowed = true",
                    log.display().to_string()
                ),
            )
            .append(&socket.gateway());
        let sub = dir.join(name);
        (config.write_to(&sub), log)
    };
    let (old_config, old_log) = config_for("old");
    let (new_config, new_log) = config_for("new");

    let mut old = socket.spawn(&old_config);
    let load = Arc::new(Load::default());
    let drivers: Vec<_> = [true, true, false, false]
        .into_iter()
        .map(|keep_alive| tokio::spawn(drive(Arc::clone(&load), base.clone(), keep_alive)))
        .collect();
    wait_for_successes(&load, 200).await;

    // The new process accepts on the same socket beside the old one…
    let mut new = socket.spawn(&new_config);
    wait_for_successes(&load, 200).await;
    // …then the old one is told to stop, as `systemctl restart` or a deploy script would.
    assert!(old.terminate().await, "the old process stopped cleanly");
    let old_answered = answered(&old_log);
    let new_before = answered(&new_log);
    wait_for_successes(&load, 300).await;

    load.stop.store(true, Ordering::Relaxed);
    for d in drivers {
        d.await.unwrap();
    }
    assert!(new.terminate().await, "the new process stopped cleanly");
    let (ok, failed, wrong) = (
        load.ok.load(Ordering::Relaxed),
        load.failed.load(Ordering::Relaxed),
        load.wrong.load(Ordering::Relaxed),
    );
    eprintln!(
        "{name} under load: {ok} requests answered, {failed} failed, {wrong} wrong; old process answered {old_answered}, new {}",
        answered(&new_log)
    );
    assert_eq!(wrong, 0, "every answer is a 200");
    if lossless {
        assert_eq!(failed, 0, "no request failed across the restart");
    }
    assert!(old_answered > 0, "the old process served part of the load");
    assert!(
        answered(&new_log) > new_before,
        "the new process served the load once the old one was gone"
    );
    assert!(ok >= 700);
    let _ = std::fs::remove_dir_all(&dir);
    (failed, old)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_a_handed_over_socket_fails_no_request() {
    // The socket systemd would hold: it outlives both processes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    restart_under_load("restart", Socket::Handed(listener), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reuse_port_restart_fails_no_request() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // The kernel moves the connections queued at the old socket when it closes to the new
    // one only with `net.ipv4.tcp_migrate_req = 1` (`.ci/run` sets it); without, the few
    // queued at that instant are reset, and warden says so when it starts.
    let migrate = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
        .is_ok_and(|v| v.trim() == "1");
    let (failed, old) = restart_under_load("reuse-port", Socket::ReusePort(addr), migrate).await;
    let warned = old
        .1
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("net.ipv4.tcp_migrate_req is 0"));
    assert_eq!(warned, !migrate, "the warning at start says how it will go");
    if !migrate {
        eprintln!("without tcp_migrate_req: {failed} connections reset across the restart");
    }
}

/// The datagrams a service manager would get on `NOTIFY_SOCKET`.
struct Manager {
    socket: tokio::net::UnixDatagram,
    /// Every message so far, for failure messages.
    seen: Vec<String>,
}

impl Manager {
    /// The next message that contains `needle` (bounded in time).
    async fn until(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut buf = vec![0u8; 4096];
        loop {
            let received = tokio::time::timeout_at(deadline, self.socket.recv(&mut buf)).await;
            let Ok(Ok(n)) = received else {
                panic!("no message with {needle:?}; got {:?}", self.seen);
            };
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push(message.clone());
            if message.contains(needle) {
                return message;
            }
        }
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn systemd_is_told_ready_reloading_stopping_and_is_watched() {
    let upstream = Upstream::start().await;
    let dir = std::env::temp_dir().join(format!("warden-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let notify = dir.join("notify.sock");
    let mut manager = Manager {
        socket: tokio::net::UnixDatagram::bind(&notify).unwrap(),
        seen: Vec::new(),
    };
    let config = fixture("public")
        .upstream(upstream.addr)
        .append("[gateway]\nlisten = \"127.0.0.1:0\"\n")
        .write_to(&dir.join("config"));
    let child = Command::new(WARDEN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify)
        // A watchdog of 200 ms: pinged every 100 ms.
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Proc(child, Arc::default());

    let ready = manager.until("READY=1").await;
    assert!(
        ready.contains("STATUS=serving on http://127.0.0.1:"),
        "{ready}"
    );
    manager.until("WATCHDOG=1").await;
    manager.until("WATCHDOG=1").await;

    signal(&child.0, "HUP");
    let reloading = manager.until("RELOADING=1").await;
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let reloaded = manager.until("READY=1").await;
    assert!(
        reloaded.contains("STATUS=serving; reloaded (1 routes)"),
        "{reloaded}"
    );

    // A reload that is refused: still ready, on the old configuration.
    std::fs::write(&config, "[[routes]]\npath = 7\n").unwrap();
    signal(&child.0, "HUP");
    manager.until("RELOADING=1").await;
    let refused = manager.until("READY=1").await;
    assert!(
        refused.contains("STATUS=serving the previous configuration"),
        "{refused}"
    );

    assert!(child.terminate_after(&mut manager).await, "a clean exit");
}

impl Proc {
    /// SIGTERM: the manager hears `STOPPING=1`, then the process exits.
    async fn terminate_after(&mut self, manager: &mut Manager) -> bool {
        signal(&self.0, "TERM");
        let stopping = manager.until("STOPPING=1").await;
        assert!(stopping.contains("STATUS=draining"), "{stopping}");
        self.exited().await
    }
}
