//! The real OpenID provider of the sign-in tests: Node's `oidc-provider` (npm), installed
//! once into `target/test-node/` when missing, started on a free loopback port with a small
//! script this module writes (the test's clients and users, PKCE required, the development
//! login and consent pages, RP-initiated and back-channel logout). Ended on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The provider's version: major 8 runs on Node 18 and 20.
pub const OIDC_PROVIDER: &str = "oidc-provider@8.8.1";
/// The browser driver (no browser download: it drives Debian's chromium).
pub const PLAYWRIGHT: &str = "playwright-core@1.49.1";

/// The client secret every test client has.
pub const CLIENT_SECRET: &str = "warden-test-client-secret-0123456789";

/// `target/test-node`, with the packages installed (once per test binary).
pub fn node_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-node");
        std::fs::create_dir_all(&dir).unwrap();
        let missing: Vec<&str> = [
            (OIDC_PROVIDER, "oidc-provider"),
            (PLAYWRIGHT, "playwright-core"),
        ]
        .into_iter()
        .filter(|(_, name)| {
            !dir.join("node_modules")
                .join(name)
                .join("package.json")
                .exists()
        })
        .map(|(spec, _)| spec)
        .collect();
        if !missing.is_empty() {
            eprintln!("installing {} into {}", missing.join(" "), dir.display());
            let status = Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--no-save",
                    "--prefix",
                ])
                .arg(&dir)
                .args(&missing)
                .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
                .status()
                .expect("npm is not installed: .ci/run installs the Node packages");
            assert!(status.success(), "npm install failed: {status}");
        }
        dir
    })
    .clone()
}

const SCRIPT: &str = r#"
import Provider from 'oidc-provider';
import { readFileSync } from 'node:fs';

const settings = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${settings.port}`;
const provider = new Provider(issuer, {
  clients: settings.clients,
  pkce: { required: () => true, methods: ['S256'] },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
  },
  conformIdTokenClaims: false,
  claims: { openid: ['sub'], profile: ['name', 'realm_access'], email: ['email'] },
  ttl: { IdToken: settings.token_ttl, AccessToken: settings.token_ttl },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  // Every refresh rotates the refresh token, so one used twice is a grant error.
  rotateRefreshToken: true,
  cookies: { keys: ['test-provider-cookie-key-0123456789'] },
  async findAccount(ctx, id) {
    const roles = (settings.users[id] ?? { roles: [] }).roles;
    return {
      accountId: id,
      async claims() {
        return { sub: id, name: id, email: `${id}@example.test`, realm_access: { roles } };
      },
    };
  },
});
provider.on('grant.success', (ctx) => console.log(`grant ${ctx.oidc.params.grant_type}`));
provider.on('grant.error', (ctx, err) => console.log(`grant error ${err.message}`));
provider.on('backchannel.success', () => console.log('backchannel ok'));
provider.on('backchannel.error', (ctx, err) => console.log(`backchannel error ${err.message}`));
provider.on('server_error', (ctx, err) => console.log(`server error ${err.message}`));
provider.listen(settings.port, '127.0.0.1', () => console.log(`listening ${issuer}`));
"#;

/// A running provider.
pub struct Provider {
    child: Child,
    pub port: u16,
    /// Every line it printed (grants, back-channel calls).
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Provider {
    /// `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many times it printed a line starting with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    /// Wait (bounded) until it printed a line starting with `prefix`.
    pub async fn wait_for(&self, prefix: &str) {
        self.wait_count(prefix, 1).await;
    }

    /// Wait (bounded) until it printed at least `n` lines starting with `prefix` (its output
    /// is read by a thread, so a line may lag the answer it went with).
    pub async fn wait_count(&self, prefix: &str, n: usize) {
        for _ in 0..100 {
            if self.count(prefix) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the provider never printed `{prefix}`: {:?}",
            self.log.lock().unwrap()
        );
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One client of the provider: warden instances at these ports.
pub struct Client {
    pub client_id: String,
    pub ports: Vec<u16>,
    /// The instance the provider calls for back-channel logout.
    pub backchannel_port: Option<u16>,
    pub auth_method: &'static str,
    /// The client's public keys, for `private_key_jwt`.
    pub jwks: Option<serde_json::Value>,
}

/// Start a provider with these clients, the user `alice` (role `viewer`) and `bob` (no
/// roles); tokens live `token_ttl` seconds.
pub fn start(clients: &[Client], token_ttl: u64) -> Provider {
    let dir = node_dir();
    let port = super::redis_server::free_port();
    let clients: Vec<serde_json::Value> = clients
        .iter()
        .map(|c| {
            let mut client = serde_json::json!({
                "client_id": c.client_id,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": c.ports.iter().map(|p| format!("http://127.0.0.1:{p}/oauth2/callback")).collect::<Vec<_>>(),
                "post_logout_redirect_uris": c.ports.iter().map(|p| format!("http://127.0.0.1:{p}/")).collect::<Vec<_>>(),
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": c.auth_method,
            });
            if let Some(jwks) = &c.jwks {
                client["jwks"] = jwks.clone();
            }
            if let Some(p) = c.backchannel_port {
                client["backchannel_logout_uri"] =
                    format!("http://127.0.0.1:{p}/oauth2/backchannel-logout").into();
                client["backchannel_logout_session_required"] = true.into();
            }
            client
        })
        .collect();
    let settings = serde_json::json!({
        "port": port,
        "token_ttl": token_ttl,
        "clients": clients,
        "users": { "alice": { "roles": ["viewer"] }, "bob": { "roles": [] } },
    });
    let script = dir.join(format!("provider-{port}.mjs"));
    let settings_file = dir.join(format!("provider-{port}.json"));
    std::fs::write(&script, SCRIPT).unwrap();
    std::fs::write(&settings_file, settings.to_string()).unwrap();
    let mut child = Command::new("node")
        .arg(&script)
        .arg(&settings_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node is not installed");
    let stdout = child.stdout.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("listening") {
                let _ = tx.send(());
            }
            lines.lock().unwrap().push(line);
        }
    });
    if rx.recv_timeout(Duration::from_secs(20)).is_err() {
        let _ = child.kill();
        panic!("the OpenID provider did not start");
    }
    Provider { child, port, log }
}
