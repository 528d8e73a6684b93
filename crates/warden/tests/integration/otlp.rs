//! OpenTelemetry tracing against an OTLP/gRPC receiver the test starts (the collector's own
//! protobuf service, on loopback): the spans' attributes, the parent the client's
//! `traceparent` gives (believed from a trusted proxy only), the `traceparent` the upstream
//! gets (the upstream span's id), and an endpoint that never answers costing no request.
use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Upstream, client, client_from, fixture};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use warden::gateway::{Gateway, Listeners};
use warden_testkit::Token;

/// The spans received, with their resource's `service.name`.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

impl Receiver {
    async fn start() -> (Self, SocketAddr) {
        let receiver = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (receiver, addr)
    }

    /// A receiver over TLS with `server` as its certificate, asking for a client
    /// certificate that chains to `client_ca`.
    async fn start_tls(server: &common::certs::Issued, client_ca: &str) -> (Self, SocketAddr) {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let receiver = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&server.cert, &server.key))
            .client_ca_root(Certificate::from_pem(client_ca));
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (receiver, addr)
    }

    /// Wait until `count` spans arrived (bounded), and return them all.
    async fn wait_for(&self, count: usize) -> Vec<(String, Span)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans.lock().unwrap().clone();
            if spans.len() >= count {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} spans arrived",
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref()?.value.as_ref()?)?)))
        .collect()
}

/// Public `/public` and `/me` behind a JWT source; 127.0.0.2 is a trusted proxy.
async fn traced_gateway(upstream: &Upstream, tracing: &str) -> Gateway {
    let config = fixture("public")
        .upstream(upstream.addr)
        .append(
            r#"
[sources.jwt]
type = "jwt"
algorithms = ["RS256"]
keys = [{ pem_file = "{keys}/rsa.pub.pem" }]
[[routes]]
name = "me"
path = "/me"
upstream = "app"
auth = ["jwt"]
[gateway]
trusted_proxies = ["127.0.0.2"]
"#,
        )
        .append(tracing)
        .config();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    Gateway::start(
        config,
        Listeners {
            proxy: Some(loopback),
            admin: Some(loopback),
            ..Listeners::default()
        },
    )
    .await
    .unwrap()
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_PARENT: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The upstream's `traceparent` as (trace id, parent id).
fn upstream_traceparent(upstream: &Upstream, target: &str) -> (String, String) {
    let seen = upstream
        .seen()
        .into_iter()
        .rfind(|s| s.target == target)
        .unwrap();
    let header = seen.headers["traceparent"].to_str().unwrap().to_owned();
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "{header}");
    assert_eq!(parts[0], "00");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test]
async fn spans_carry_the_decision_and_link_client_warden_and_upstream() {
    let (receiver, otlp) = Receiver::start().await;
    let upstream = Upstream::start().await;
    let gw = traced_gateway(
        &upstream,
        &format!("[tracing]\nendpoint = \"http://{otlp}\"\ninterval = \"20ms\"\n"),
    )
    .await;
    let proxy = gw.proxy_addr;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01");

    // 1. From the trusted proxy: the client's trace goes on through warden to the upstream.
    let r = client_from("127.0.0.2")
        .get(format!("http://{proxy}/public?from=trusted"))
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = receiver.wait_for(2).await;
    let server = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap()
        .clone();
    let upstream_span = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap()
        .clone();
    assert!(spans.iter().all(|(service, _)| service == "warden"));
    assert_eq!(
        hex(&server.trace_id),
        CLIENT_TRACE,
        "the client's trace is honoured"
    );
    assert_eq!(hex(&server.parent_span_id), CLIENT_PARENT);
    assert_eq!(upstream_span.trace_id, server.trace_id);
    assert_eq!(upstream_span.parent_span_id, server.span_id);
    let (up_trace, up_parent) = upstream_traceparent(&upstream, "/public?from=trusted");
    assert_eq!(up_trace, CLIENT_TRACE);
    assert_eq!(
        up_parent,
        hex(&upstream_span.span_id),
        "the upstream's parent is warden's upstream span"
    );
    let a = attributes(&server);
    assert_eq!(a["warden.decision.outcome"], "allow");
    assert_eq!(a["warden.decision.stage"], "forward");
    assert_eq!(a["warden.front_end"], "proxy");
    assert_eq!(a["http.route"], "/public");
    assert_eq!(a["http.response.status_code"], "200");
    assert_eq!(a["url.path"], "/public", "the query is not in the span");
    assert_eq!(a["client.address"], "127.0.0.2");
    assert!(!a.contains_key("warden.decision.reason"));
    let seen = upstream
        .seen()
        .into_iter()
        .rfind(|s| s.target == "/public?from=trusted")
        .unwrap();
    assert_eq!(
        seen.headers["x-warden-decision-id"].to_str().unwrap(),
        a["warden.decision.id"],
        "the span names the decision the upstream was told of"
    );
    assert_eq!(server.name, "GET /public");
    assert_eq!(
        attributes(&upstream_span)["http.response.status_code"],
        "200"
    );

    // 2. From an untrusted client: its traceparent is ignored; a new trace starts at warden,
    //    and the upstream is told warden's trace, not the client's.
    let r = client()
        .get(format!("http://{proxy}/public?from=untrusted"))
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = receiver.wait_for(4).await;
    let server = spans[2..]
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    assert_ne!(hex(&server.trace_id), CLIENT_TRACE);
    assert!(server.parent_span_id.is_empty(), "a root span");
    let (up_trace, up_parent) = upstream_traceparent(&upstream, "/public?from=untrusted");
    assert_eq!(up_trace, hex(&server.trace_id));
    assert_ne!(up_parent, CLIENT_PARENT);

    // 3. A refusal: its stage and reason, no upstream span.
    let r = client()
        .get(format!("http://{proxy}/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // 4. An authenticated request: the subject only as its hash.
    let token = Token::new()
        .sub("alice")
        .exp_in(600)
        .kid("rsa-1")
        .sign_rs256();
    let r = client()
        .get(format!("http://{proxy}/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = receiver.wait_for(7).await;
    let server_spans: Vec<&Span> = spans[4..]
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(server_spans.len(), 2);
    assert_eq!(spans.len(), 7, "the refusal has no upstream span");
    let denied = attributes(server_spans[0]);
    assert_eq!(denied["warden.decision.outcome"], "deny");
    assert_eq!(denied["warden.decision.stage"], "authenticate");
    assert_eq!(denied["warden.decision.reason"], "unauthenticated");
    assert_eq!(denied["http.response.status_code"], "401");
    assert_eq!(denied["http.route"], "me");
    let allowed = attributes(server_spans[1]);
    assert!(allowed["enduser.id"].starts_with("sha256:"), "{allowed:?}");
    for (_, span) in &spans {
        for value in attributes(span).values() {
            assert!(
                !value.contains("alice"),
                "the raw subject is in a span: {value}"
            );
        }
    }
    // The exporter counts what it sent once the receiver has answered.
    let deadline = Instant::now() + Duration::from_secs(20);
    while spans_counted(&gw, "exported").await < 7 {
        assert!(
            Instant::now() < deadline,
            "the exported spans were not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(spans_counted(&gw, "dropped").await, 0);
    gw.shutdown().await;
}

/// `warden_trace_spans_total{result=RESULT}` in the gateway's metrics.
async fn spans_counted(gw: &Gateway, result: &str) -> u64 {
    let metrics = common::admin_get(gw, "/metrics").await;
    let prefix = format!("warden_trace_spans_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn the_subject_can_be_omitted() {
    let (receiver, otlp) = Receiver::start().await;
    let upstream = Upstream::start().await;
    let gw = traced_gateway(
        &upstream,
        &format!(
            "[tracing]\nendpoint = \"http://{otlp}\"\ninterval = \"20ms\"\nsubject = \"omit\"\n"
        ),
    )
    .await;
    let token = Token::new()
        .sub("alice")
        .exp_in(600)
        .kid("rsa-1")
        .sign_rs256();
    let r = client()
        .get(format!("http://{}/me", gw.proxy_addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = receiver.wait_for(2).await;
    for (_, span) in &spans {
        assert!(!attributes(span).contains_key("enduser.id"));
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_collector_that_never_answers_costs_no_request_and_drops_are_counted() {
    // Accepts connections (the kernel does) but never speaks: every export hangs until its
    // time limit, far beyond this test's requests.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = black_hole.local_addr().unwrap();
    let upstream = Upstream::start().await;
    let gw = traced_gateway(
        &upstream,
        &format!(
            "[tracing]\nendpoint = \"http://{endpoint}\"\nqueue = 1\nbatch = 1\nexport_timeout = \"10m\"\n"
        ),
    )
    .await;
    let client = client();
    for _ in 0..50 {
        let r = client
            .get(format!("http://{}/public", gw.proxy_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // 100 spans: one in the stuck export, at most one queued, the rest dropped and counted.
    let dropped = spans_counted(&gw, "dropped").await;
    assert!(dropped >= 98, "{dropped} spans counted as dropped");
    assert_eq!(spans_counted(&gw, "exported").await, 0);
    drop(black_hole);
}

#[tokio::test]
async fn forward_auth_and_ext_authz_questions_are_traced_like_requests() {
    let (receiver, otlp) = Receiver::start().await;
    let upstream = Upstream::start().await;
    let config = fixture("forward-auth").append(&format!(
        "[tracing]\nendpoint = \"http://{otlp}\"\ninterval = \"20ms\"\n"
    ));
    let gw = common::forward_auth_gateway(config, &upstream).await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01");

    // A Traefik question (the asking proxy is trusted): the client's trace goes on through
    // warden's answer.
    let r = client()
        .get(format!("http://{}/auth", gw.forward_auth_addr.unwrap()))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/me?page=2")
        .header("x-forwarded-for", "203.0.113.7")
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let spans = receiver.wait_for(1).await;
    let (_, span) = &spans[0];
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(hex(&span.trace_id), CLIENT_TRACE);
    assert_eq!(hex(&span.parent_span_id), CLIENT_PARENT);
    let a = attributes(span);
    assert_eq!(a["warden.front_end"], "forward_auth");
    assert_eq!(a["warden.decision.outcome"], "deny");
    assert_eq!(a["warden.decision.stage"], "authenticate");
    assert_eq!(a["http.response.status_code"], "401");
    assert_eq!(
        a["url.path"], "/me",
        "the question's request, without its query"
    );
    assert_eq!(a["client.address"], "203.0.113.7");
    assert_eq!(span.name, "GET me");

    // An Envoy check: the downstream Envoy reports is the client; the trace is the one of
    // the request Envoy describes.
    let mut envoy = crate::ext_authz::envoy(&gw, "127.0.0.1").await;
    let answer = crate::ext_authz::check(
        &mut envoy,
        crate::ext_authz::ask(
            "GET",
            "/public",
            "198.51.100.9",
            &[("traceparent", &traceparent)],
        ),
    )
    .await;
    assert_eq!(answer.status.unwrap().code, 0, "OK");
    let spans = receiver.wait_for(2).await;
    let (_, span) = &spans[1];
    assert_eq!(hex(&span.parent_span_id), CLIENT_PARENT);
    let a = attributes(span);
    assert_eq!(a["warden.front_end"], "ext_authz");
    assert_eq!(a["warden.decision.outcome"], "allow");
    assert_eq!(a["client.address"], "198.51.100.9");
    assert_eq!(a["http.response.status_code"], "200");
    assert!(upstream.seen().is_empty(), "a question reaches no upstream");
    gw.shutdown().await;
}

/// `GET /public` through the gateway; the status.
async fn public(gw: &Gateway) -> u16 {
    client()
        .get(format!("http://{}/public", gw.proxy_addr))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn spans_go_to_a_collector_over_tls_with_a_client_certificate() {
    let dir = std::env::temp_dir().join(format!("warden-otlp-tls-{}", std::process::id()));
    let ca = common::certs::TestCa::new("collector CA");
    let ca_file = ca.write(&dir, "collector-ca");
    let (cert, key) = ca
        .client("warden", &["warden.test"])
        .write(&dir, "warden-client");
    let (receiver, otlp) =
        Receiver::start_tls(&ca.server("collector", &["127.0.0.1"]), ca.pem()).await;
    let upstream = Upstream::start().await;
    let tls = format!(
        "[tracing]\nendpoint = \"https://{otlp}\"\ninterval = \"20ms\"\nca = {:?}\nclient_certificate = {{ cert = {:?}, key = {:?} }}\n",
        ca_file.display().to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );
    let gw = traced_gateway(&upstream, &tls).await;
    assert_eq!(public(&gw).await, 200);
    let spans = receiver.wait_for(2).await;
    assert!(spans.iter().any(|(_, s)| s.kind == SpanKind::Server as i32));
    gw.shutdown().await;

    // Without the CA, the collector's certificate is not trusted (the system's roots do not
    // know the test CA): nothing is exported, the failures are counted, and requests are
    // answered all the same.
    let before = receiver.spans.lock().unwrap().len();
    let untrusted = format!(
        "[tracing]\nendpoint = \"https://{otlp}\"\ninterval = \"20ms\"\nexport_timeout = \"1s\"\n"
    );
    let gw = traced_gateway(&upstream, &untrusted).await;
    assert_eq!(public(&gw).await, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while spans_counted(&gw, "failed").await == 0 {
        assert!(
            Instant::now() < deadline,
            "the failed export was not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        receiver.spans.lock().unwrap().len(),
        before,
        "nothing arrived"
    );
    gw.shutdown().await;
}
