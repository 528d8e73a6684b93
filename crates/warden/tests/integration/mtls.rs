//! The `mtls` identity source through the real TLS listener (certificates made by rcgen at
//! run time): reqwest with a client identity and curl `--cert/--key`; a good certificate is
//! the identity the upstream hears, and no certificate, another CA's, an expired one and
//! one without the `clientAuth` usage are each a 401 that reaches nothing; Cedar decides on
//! the certificate's subject; a certificate header sent by the client is never believed.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rcgen::{ExtendedKeyUsagePurpose, SanType, date_time_ymd};
use serde_json::Value;
use warden::gateway::Gateway;

use crate::common::Upstream;
use crate::common::certs::{Issued, TestCa};
use crate::tls::{TLS, dir, listener_certs, start, write_config};

/// The mtls source and its routes (before the file's public route).
const MTLS: &str = r#"
[sources.clients]
type = "mtls"
ca = "clients-ca.pem"
roles = { "spiffe://test/billing" = ["billing"], "ops-*" = ["ops"] }

[sources.idp]
type = "api_key"
keys = [{ id = "k1", sha256 = "85dbe15d75ef9308c7ae0f33c7a324cc6f4bf519a2ed2f3027bd33c140a4f9aa", subject = "key-user" }]

[[routes]]
name = "mtls"
path = "/mtls"
upstream = "app"
auth = ["clients"]

[[routes]]
name = "ops"
path = "/ops"
upstream = "app"
auth = ["clients"]
roles = ["ops"]

[[routes]]
name = "either"
path = "/either"
upstream = "app"
auth = ["clients", "idp"]
"#;

/// The API key whose SHA-256 is in `MTLS`.
const API_KEY: &str = "secret-key";

struct Setup {
    gw: Gateway,
    upstream: Upstream,
    dir: std::path::PathBuf,
    clients: TestCa,
}

async fn setup(name: &str, extra: &str) -> Setup {
    let upstream = Upstream::start().await;
    let dir = dir(name);
    listener_certs(&dir);
    let clients = TestCa::new("warden test clients CA");
    clients.write(&dir, "clients-ca");
    let gw = start(&write_config(
        &dir,
        &format!("http://{}", upstream.addr),
        &format!("{TLS}{MTLS}{extra}"),
    ))
    .await;
    Setup {
        gw,
        upstream,
        dir,
        clients,
    }
}

/// A reqwest client that trusts the listener's CA, resolves `localhost` to the gateway and
/// presents `identity` when given.
pub(crate) fn https_client(
    dir: &Path,
    addr: SocketAddr,
    identity: Option<&Issued>,
) -> reqwest::Client {
    warden::install_crypto_provider();
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(10))
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve("localhost", addr);
    if let Some(issued) = identity {
        let pem = format!("{}{}", issued.cert, issued.key);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

fn url(gw: &Gateway, path: &str) -> String {
    format!("https://localhost:{}{path}", gw.proxy_addr.port())
}

/// Status, `WWW-Authenticate` values and the problem's `code` of a GET.
async fn get(client: &reqwest::Client, url: &str) -> (u16, Vec<String>, Value) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let challenges = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, challenges, body)
}

#[tokio::test]
async fn a_good_certificate_is_the_identity_the_upstream_hears() {
    let s = setup("good", "").await;
    let alice = s.clients.client("alice", &[]);
    let client = https_client(&s.dir, s.gw.proxy_addr, Some(&alice));

    let response = client
        .get(url(&s.gw, "/mtls"))
        // A client's own claims about certificates are dropped, never believed.
        .header(
            "x-forwarded-client-cert",
            "By=x;Hash=y;Subject=\"CN=admin\"",
        )
        .header("client-cert", ":bm90IGEgY2VydA==:")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = s.upstream.last();
    assert_eq!(seen.headers["x-warden-subject"], "alice");
    assert_eq!(seen.headers["x-warden-auth-source"], "clients");
    assert!(seen.headers.get("x-forwarded-client-cert").is_none());
    assert!(seen.headers.get("client-cert").is_none());

    // The URI SAN is the default subject, and the mapping gives its roles.
    let billing = s.clients.client_with("billing service", |p| {
        p.subject_alt_names = vec![
            SanType::DnsName("billing.test".try_into().unwrap()),
            SanType::URI("spiffe://test/billing".try_into().unwrap()),
        ];
    });
    let client = https_client(&s.dir, s.gw.proxy_addr, Some(&billing));
    assert_eq!(get(&client, &url(&s.gw, "/mtls")).await.0, 200);
    let seen = s.upstream.last();
    assert_eq!(seen.headers["x-warden-subject"], "spiffe://test/billing");
    assert_eq!(seen.headers["x-warden-roles"], "billing");

    // Roles by prefix: `ops-*` may use /ops, alice may not (403: she is authenticated).
    let ops = s.clients.client("ops-carol", &[]);
    let client = https_client(&s.dir, s.gw.proxy_addr, Some(&ops));
    assert_eq!(get(&client, &url(&s.gw, "/ops")).await.0, 200);
    let client = https_client(&s.dir, s.gw.proxy_addr, Some(&alice));
    assert_eq!(get(&client, &url(&s.gw, "/ops")).await.0, 403);

    // Routes without an mtls source do not look at the certificate.
    assert_eq!(get(&client, &url(&s.gw, "/public")).await.0, 200);
    s.gw.shutdown().await;
}

#[tokio::test]
async fn refused_certificates_are_401s_that_reach_nothing() {
    let admin = format!(
        "\n[admin]\ntokens = [\"{}\"]\n",
        warden_core::auth::api_key::hash_api_key(crate::common::ADMIN_TOKEN)
    );
    let s = setup("refused", &admin).await;
    let before = s.upstream.seen().len();

    // No certificate: the handshake passes (routes without mtls must work), the route says
    // 401 with its challenge.
    let anonymous = https_client(&s.dir, s.gw.proxy_addr, None);
    assert_eq!(get(&anonymous, &url(&s.gw, "/public")).await.0, 200);
    let before = before + 1;
    let (status, challenges, body) = get(&anonymous, &url(&s.gw, "/mtls")).await;
    assert_eq!(status, 401);
    assert_eq!(challenges, ["ClientCertificate realm=\"warden\""]);
    assert_eq!(body["code"], "unauthenticated");

    // A certificate header without a certificate authenticates no one.
    let response = anonymous
        .get(url(&s.gw, "/mtls"))
        .header(
            "x-forwarded-client-cert",
            "Subject=\"CN=alice\";URI=spiffe://test/billing",
        )
        .header("x-ssl-client-s-dn", "CN=alice")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let stranger_ca = TestCa::new("another CA");
    let cases = [
        (
            "another CA",
            stranger_ca.client("alice", &[]),
            "unknown_issuer",
        ),
        (
            "expired",
            s.clients.client_with("alice", |p| {
                p.not_before = date_time_ymd(2020, 1, 1);
                p.not_after = date_time_ymd(2021, 1, 1);
            }),
            "expired",
        ),
        (
            "server usage only",
            s.clients.client_with("alice", |p| {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            }),
            "not_for_client_auth",
        ),
        (
            "no usage at all",
            s.clients.client_with("alice", |p| {
                p.extended_key_usages = vec![];
            }),
            "not_for_client_auth",
        ),
    ];
    for (what, cert, problem) in &cases {
        let client = https_client(&s.dir, s.gw.proxy_addr, Some(cert));
        let (status, challenges, body) = get(&client, &url(&s.gw, "/mtls")).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["code"], "invalid_certificate", "{what}");
        assert_eq!(challenges.len(), 1, "{what}");
        assert!(
            challenges[0]
                .starts_with("ClientCertificate realm=\"warden\", error=\"invalid_certificate\""),
            "{what}: {challenges:?}"
        );
        // The reason code is in the decision log (and so in `explain`).
        let recent = crate::common::admin_get(&s.gw, "/decisions/recent").await;
        let last: Value = serde_json::from_str(recent.lines().last().unwrap()).unwrap();
        let logged = last.to_string();
        assert!(logged.contains(problem), "{what}: {logged}");
    }
    // Another CA's certificate may complete the handshake (`allow_unauthenticated` keeps
    // certificate-less clients), or rustls may refuse it there: either way it authorizes
    // nothing. Nothing refused reached the upstream.
    assert_eq!(s.upstream.seen().len(), before);
    s.gw.shutdown().await;
}

#[tokio::test]
async fn a_certificate_and_a_key_together_are_two_credentials() {
    let s = setup("two", "").await;
    let alice = s.clients.client("alice", &[]);
    let with_cert = https_client(&s.dir, s.gw.proxy_addr, Some(&alice));
    let without = https_client(&s.dir, s.gw.proxy_addr, None);

    assert_eq!(get(&with_cert, &url(&s.gw, "/either")).await.0, 200);
    assert_eq!(s.upstream.last().headers["x-warden-subject"], "alice");
    let response = without
        .get(url(&s.gw, "/either"))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(s.upstream.last().headers["x-warden-subject"], "key-user");

    // Both: neither masks the other.
    let before = s.upstream.seen().len();
    let response = with_cert
        .get(url(&s.gw, "/either"))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_request");
    // An invalid certificate beside a valid key is refused too, never let through.
    let expired = s.clients.client_with("alice", |p| {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2021, 1, 1);
    });
    let response = https_client(&s.dir, s.gw.proxy_addr, Some(&expired))
        .get(url(&s.gw, "/either"))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(s.upstream.seen().len(), before);

    // The route's challenges name both schemes.
    let (status, challenges, _) = get(&without, &url(&s.gw, "/either")).await;
    assert_eq!(status, 401);
    assert_eq!(
        challenges,
        [
            "ClientCertificate realm=\"warden\"",
            "ApiKey realm=\"warden\", header=\"x-api-key\""
        ]
    );
    s.gw.shutdown().await;
}

#[tokio::test]
async fn cedar_decides_on_the_certificate_subject() {
    let dir_name = "cedar";
    let policies = "permit(principal == User::\"spiffe://test/billing\", action == Action::\"pay\", resource);\n";
    let extra = "\n[authorization]\npolicies = [\"mtls.cedar\"]\n\n[[routes]]\nname = \"pay\"\npath = \"/pay\"\nupstream = \"app\"\nauth = [\"clients\"]\naction = \"pay\"\n";
    // The policy file sits beside the configuration the setup writes.
    let d = dir(dir_name);
    std::fs::write(d.join("mtls.cedar"), policies).unwrap();
    let upstream = Upstream::start().await;
    listener_certs(&d);
    let clients = TestCa::new("warden test clients CA");
    clients.write(&d, "clients-ca");
    let gw = start(&write_config(
        &d,
        &format!("http://{}", upstream.addr),
        &format!("{TLS}{MTLS}{extra}"),
    ))
    .await;

    let billing = clients.client_with("billing", |p| {
        p.subject_alt_names = vec![SanType::URI("spiffe://test/billing".try_into().unwrap())];
    });
    let client = https_client(&d, gw.proxy_addr, Some(&billing));
    assert_eq!(get(&client, &url(&gw, "/pay")).await.0, 200);
    let other = clients.client_with("reports", |p| {
        p.subject_alt_names = vec![SanType::URI("spiffe://test/reports".try_into().unwrap())];
    });
    let client = https_client(&d, gw.proxy_addr, Some(&other));
    let (status, _, body) = get(&client, &url(&gw, "/pay")).await;
    assert_eq!(status, 403, "{body}");
    gw.shutdown().await;
}

#[tokio::test]
async fn curl_with_a_client_certificate() {
    let s = setup("curl", "").await;
    s.clients
        .client("curl-user", &[])
        .write(&s.dir, "curl-client");
    let port = s.gw.proxy_addr.port();
    let run = |with_cert: bool| {
        let mut command = tokio::process::Command::new("curl");
        command
            .args(["-sS", "--max-time", "10", "--resolve"])
            .arg(format!("localhost:{port}:127.0.0.1"))
            .arg("--cacert")
            .arg(s.dir.join("ca.pem"));
        if with_cert {
            command
                .arg("--cert")
                .arg(s.dir.join("curl-client.pem"))
                .arg("--key")
                .arg(s.dir.join("curl-client.key"));
        }
        command
            .args(["-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("https://localhost:{port}/mtls"))
            .stdin(Stdio::null())
            .output()
    };
    let out = run(true).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{out:?}");
    assert_eq!(s.upstream.last().headers["x-warden-subject"], "curl-user");
    let out = run(false).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401", "{out:?}");
    s.gw.shutdown().await;
}

#[tokio::test]
async fn a_reload_swaps_the_ca_bundle() {
    let s = setup("reload", "").await;
    let alice = s.clients.client("alice", &[]);
    let client = https_client(&s.dir, s.gw.proxy_addr, Some(&alice));
    assert_eq!(get(&client, &url(&s.gw, "/mtls")).await.0, 200);

    // A new CA replaces the old one: the old CA's certificates are refused after the
    // reload, the new one's accepted.
    let next = TestCa::new("the next clients CA");
    next.write(&s.dir, "clients-ca");
    s.gw.reload().await.unwrap();
    let client = https_client(&s.dir, s.gw.proxy_addr, Some(&alice));
    assert_eq!(get(&client, &url(&s.gw, "/mtls")).await.0, 401);
    let bob = next.client("bob", &[]);
    let client = https_client(&s.dir, s.gw.proxy_addr, Some(&bob));
    assert_eq!(get(&client, &url(&s.gw, "/mtls")).await.0, 200);
    assert_eq!(s.upstream.last().headers["x-warden-subject"], "bob");
    s.gw.shutdown().await;
}

#[tokio::test]
async fn an_mtls_source_without_tls_is_a_load_error() {
    let d = dir("no-tls");
    std::fs::write(d.join("clients-ca.pem"), TestCa::new("clients").pem()).unwrap();
    let path = write_config(&d, "http://127.0.0.1:9", MTLS);
    let errors = warden_core::Config::load(&path).unwrap_err().to_string();
    assert!(
        errors.contains("sources.clients.type") && errors.contains("[gateway.tls]"),
        "{errors}"
    );
}

#[tokio::test]
async fn explain_takes_the_client_certificate_from_a_file() {
    let d = dir("explain");
    listener_certs(&d);
    let clients = TestCa::new("warden test clients CA");
    clients.write(&d, "clients-ca");
    let config = write_config(&d, "http://127.0.0.1:9", &format!("{TLS}{MTLS}"));
    clients.client("alice", &[]).write(&d, "alice");
    clients
        .client_with("late", |p| {
            p.not_before = date_time_ymd(2020, 1, 1);
            p.not_after = date_time_ymd(2021, 1, 1);
        })
        .write(&d, "late");
    let explain = |cert: Option<&str>, at: &str| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_warden"));
        command
            .arg("explain")
            .arg("--config")
            .arg(&config)
            .args(["--at", at]);
        if let Some(name) = cert {
            command
                .arg("--client-cert")
                .arg(d.join(format!("{name}.pem")));
        }
        let out = command.arg("/mtls").output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = explain(Some("alice"), "2026-06-01T00:00:00Z");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("`alice` verified by source `clients`"),
        "{text}"
    );
    // The decision's time decides expiry: the same certificate, judged in 2020 and now.
    let (code, text) = explain(Some("late"), "2020-06-01T00:00:00Z");
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = explain(Some("late"), "2026-06-01T00:00:00Z");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("client certificate expired"), "{text}");
    let (code, text) = explain(None, "2026-06-01T00:00:00Z");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("unauthenticated"), "{text}");
    // A file with no certificate is a usage error.
    let (code, _) = explain(Some("missing"), "2026-06-01T00:00:00Z");
    assert_eq!(code, Some(1));
}

#[tokio::test]
async fn an_admin_client_certificate_is_an_admin_credential() {
    let upstream = Upstream::start().await;
    let d = dir("admin");
    listener_certs(&d);
    let admins = TestCa::new("warden test admin CA");
    admins.write(&d, "admin-ca");
    let admin = format!(
        "[admin]\ntokens = [\"{}\"]\nclient_ca = \"admin-ca.pem\"\n",
        warden_core::auth::api_key::hash_api_key(crate::common::ADMIN_TOKEN)
    );
    let gw = start(&write_config(
        &d,
        &format!("http://{}", upstream.addr),
        &format!("{TLS}{admin}"),
    ))
    .await;
    let addr = gw.admin_addr.unwrap();
    let admin_url = |path: &str| format!("https://localhost:{}{path}", addr.port());
    let operator = admins.client("operator", &[]);

    // The admin's certificate opens every endpoint, without a token.
    let certified = https_client(&d, addr, Some(&operator));
    let response = certified.post(admin_url("/reload")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = certified
        .get(admin_url("/decisions/recent"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Without one: health stays open, the rest needs the token or a certificate.
    let anonymous = https_client(&d, addr, None);
    let response = anonymous.get(admin_url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = anonymous.post(admin_url("/reload")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"warden-admin\", ClientCertificate realm=\"warden-admin\""
    );
    let response = anonymous
        .post(admin_url("/reload"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = anonymous
        .post(admin_url("/reload"))
        .bearer_auth(crate::common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Refused reloads changed nothing: two reloads happened, both by admins.
    let metrics = anonymous
        .get(admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("warden_config_reloads_total{result=\"ok\"} 2"),
        "{metrics}"
    );

    // Another CA's certificate (a proxy client's, say) does not get through the handshake.
    let stranger = TestCa::new("another CA").client("operator", &[]);
    let result = https_client(&d, addr, Some(&stranger))
        .post(admin_url("/reload"))
        .send()
        .await;
    assert!(result.is_err(), "{result:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_admin_client_ca_without_tls_is_a_load_error() {
    let d = dir("admin-no-tls");
    std::fs::write(d.join("admin-ca.pem"), TestCa::new("admins").pem()).unwrap();
    let path = write_config(
        &d,
        "http://127.0.0.1:9",
        "[admin]\nclient_ca = \"admin-ca.pem\"\n",
    );
    let errors = warden_core::Config::load(&path).unwrap_err().to_string();
    assert!(
        errors.contains("admin.client_ca") && errors.contains("[gateway.tls]"),
        "{errors}"
    );
}

#[tokio::test]
async fn a_revoked_subject_is_refused_with_its_certificates() {
    let admin = format!(
        "\n[admin]\ntokens = [\"{}\"]\n",
        warden_core::auth::api_key::hash_api_key(crate::common::ADMIN_TOKEN)
    );
    let s = setup("revoked", &admin).await;
    let alice = https_client(
        &s.dir,
        s.gw.proxy_addr,
        Some(&s.clients.client("alice", &[])),
    );
    let bob = https_client(&s.dir, s.gw.proxy_addr, Some(&s.clients.client("bob", &[])));
    assert_eq!(get(&alice, &url(&s.gw, "/mtls")).await.0, 200);

    let response = crate::common::client()
        .post(format!("http://{}/revoke", s.gw.admin_addr.unwrap()))
        .bearer_auth(crate::common::ADMIN_TOKEN)
        .json(&serde_json::json!({ "subject": "alice" }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());

    let (status, challenges, body) = get(&alice, &url(&s.gw, "/mtls")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "invalid_certificate");
    assert_eq!(body["detail"], "The client certificate was revoked.");
    assert!(
        challenges[0].contains("error=\"invalid_certificate\""),
        "{challenges:?}"
    );
    assert_eq!(get(&bob, &url(&s.gw, "/mtls")).await.0, 200);
    s.gw.shutdown().await;
}

/// `request` as Envoy sends it when its downstream connection presented `pem`.
fn with_source_certificate(
    mut request: envoy_types::ext_authz::v3::pb::CheckRequest,
    encoded: &str,
) -> envoy_types::ext_authz::v3::pb::CheckRequest {
    let source = request
        .attributes
        .as_mut()
        .and_then(|a| a.source.as_mut())
        .unwrap();
    source.certificate = encoded.to_owned();
    request
}

/// Envoy's URL encoding of a PEM certificate (`%20`, `%0A`, …).
fn url_encoded(pem: &str) -> String {
    percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn envoy_s_reported_certificate_is_judged_by_the_route_on_ext_authz() {
    use envoy_types::ext_authz::v3::pb::HttpResponse;
    let dir = std::env::temp_dir().join(format!("warden-mtls-envoy-{}", std::process::id()));
    let ca = TestCa::new("clients CA");
    ca.write(&dir, "clients-ca");
    // No `[gateway.tls]`: behind Envoy, the certificate comes from its report.
    let text = "[gateway]\ntrusted_proxies = [\"127.0.0.1\"]\n\
        [forward_auth]\ngrpc_listen = \"127.0.0.1:0\"\n\
        [log]\ndecisions = \"off\"\n\
        [upstreams.app]\nurl = \"http://127.0.0.1:9\"\n\
        [sources.clients]\ntype = \"mtls\"\nca = \"clients-ca.pem\"\n\
        [[routes]]\npath = \"/mtls\"\nupstream = \"app\"\nauth = [\"clients\"]\n";
    std::fs::write(dir.join("warden.toml"), text).unwrap();
    let config = warden_core::Config::load(&dir.join("warden.toml")).unwrap();
    let gw = Gateway::start(
        config,
        warden::gateway::Listeners {
            grpc: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..warden::gateway::Listeners::default()
        },
    )
    .await
    .unwrap();
    let mut envoy = crate::ext_authz::envoy(&gw, "127.0.0.1").await;
    let question = || crate::ext_authz::ask("GET", "/mtls", "198.51.100.7", &[]);
    let status = |answer: &envoy_types::ext_authz::v3::pb::CheckResponse| {
        answer.status.as_ref().map_or(-1, |s| s.code)
    };

    let alice = ca.client("alice", &[]);
    let answer = crate::ext_authz::check(
        &mut envoy,
        with_source_certificate(question(), &url_encoded(&alice.cert)),
    )
    .await;
    assert_eq!(status(&answer), 0, "OK: {answer:?}");
    let Some(HttpResponse::OkResponse(ok)) = &answer.http_response else {
        panic!("an OkHttpResponse: {answer:?}");
    };
    let subject = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == "x-warden-subject")
        .map(|h| h.value.as_str());
    assert_eq!(subject, Some("alice"));

    // No certificate, or one of another CA: the route's 401.
    let answer = crate::ext_authz::check(&mut envoy, question()).await;
    assert_eq!(status(&answer), 16, "UNAUTHENTICATED");
    let stranger = TestCa::new("another CA").client("alice", &[]);
    let answer = crate::ext_authz::check(
        &mut envoy,
        with_source_certificate(question(), &url_encoded(&stranger.cert)),
    )
    .await;
    assert_eq!(status(&answer), 16, "UNAUTHENTICATED");
    // Not PEM: a malformed question, never an allow.
    let answer = crate::ext_authz::check(
        &mut envoy,
        with_source_certificate(question(), "not%20a%20certificate"),
    )
    .await;
    assert_eq!(status(&answer), 3, "INVALID_ARGUMENT");
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
