//! The Redis backend: every check of a request in one Lua script, evaluated atomically
//! with Redis's own clock, so instances with drifting clocks still share one limit.
//! Connections are made lazily and remade after failures; a call that cannot finish within
//! the configured timeout is answered as unavailable (the fail mode decides).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use warden_core::config::StateSettings;
use warden_core::limit::{BanPolicy, Outcome, ban_key, failure_key};
use warden_core::{StateAnswer, StateCheck, StateUnavailable};

use warden_core::limit::{revoked_subject_key, revoked_token_key};

use super::Revocation;

/// Every check of a request. KEYS are the checks' keys; ARGV holds, per check, its kind and
/// parameters. Replies, per check: ban → remaining µs or -1; limit → {allowed, remaining,
/// retry_after_us, reset_us}; revoked → 1 or 0.
const CHECKS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
local a = 1
for i, key in ipairs(KEYS) do
  local op = ARGV[a]
  if op == 'ban' then
    local ends = tonumber(redis.call('GET', key) or '0')
    if ends > now then out[i] = ends - now else out[i] = -1 end
    a = a + 1
  elseif op == 'limit' then
    local period = tonumber(ARGV[a + 1])
    local tau = tonumber(ARGV[a + 2])
    local tat = tonumber(redis.call('GET', key) or '0')
    if tat < now then tat = now end
    local ahead = tat + period - now
    if ahead > tau then
      out[i] = {0, 0, ahead - tau, tat - now}
    else
      redis.call('SET', key, tat + period, 'PX', math.floor(ahead / 1000) + 1)
      out[i] = {1, math.floor((tau - ahead) / period), 0, ahead}
    end
    a = a + 3
  else
    local subject_key = ARGV[a + 1]
    local iat = tonumber(ARGV[a + 2])
    local revoked = 0
    if key ~= '' and redis.call('EXISTS', key) == 1 then revoked = 1 end
    local before = tonumber(redis.call('GET', subject_key) or '-1')
    if before >= 0 and (iat < 0 or iat < before) then revoked = 1 end
    out[i] = revoked
    a = a + 3
  end
end
return out
";

/// Count a failure; ban when the count is refused. KEYS: failures, ban. ARGV: period, tau,
/// ban duration (µs). Replies 1 when this failure banned the client.
const FAILURE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local ahead = tat + period - now
if ahead > tau then
  local duration = tonumber(ARGV[3])
  redis.call('SET', KEYS[2], now + duration, 'PX', math.floor(duration / 1000) + 1)
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('SET', KEYS[1], tat + period, 'PX', math.floor(ahead / 1000) + 1)
return 0
";

/// The least time between two connection attempts while Redis is down.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(500);

/// Counters, bans and revocations in Redis.
#[derive(Debug)]
pub struct RedisStore {
    client: Option<redis::Client>,
    conn: ArcSwapOption<ConnectionManager>,
    connecting: tokio::sync::Mutex<()>,
    last_attempt_ms: AtomicU64,
    started: Instant,
    timeout: Duration,
    prefix: String,
    checks: redis::Script,
    failure: redis::Script,
}

impl RedisStore {
    pub(super) fn new(url: &str, settings: &StateSettings) -> Self {
        let client = redis::Client::open(url)
            .map_err(|e| tracing::error!(error = %e, "invalid Redis URL; every state check will be unavailable"))
            .ok();
        Self {
            client,
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            last_attempt_ms: AtomicU64::new(0),
            started: Instant::now(),
            timeout: settings.timeout,
            prefix: settings.key_prefix.clone(),
            checks: redis::Script::new(CHECKS),
            failure: redis::Script::new(FAILURE),
        }
    }

    /// A connection, made now if there is none and the last attempt is not too recent.
    async fn connection(&self) -> Result<ConnectionManager, StateUnavailable> {
        if let Some(conn) = self.conn.load_full() {
            return Ok((*conn).clone());
        }
        let _guard = self.connecting.lock().await;
        if let Some(conn) = self.conn.load_full() {
            return Ok((*conn).clone());
        }
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_attempt_ms.load(Ordering::Relaxed);
        if last != 0
            && now_ms.saturating_sub(last)
                < u64::try_from(RECONNECT_INTERVAL.as_millis()).unwrap_or(500)
        {
            return Err(StateUnavailable("Redis is unreachable".to_owned()));
        }
        self.last_attempt_ms.store(now_ms.max(1), Ordering::Relaxed);
        let client = self
            .client
            .clone()
            .ok_or_else(|| StateUnavailable("invalid Redis URL".to_owned()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        match tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        {
            Ok(Ok(conn)) => {
                tracing::info!("connected to Redis");
                self.conn.store(Some(Arc::new(conn.clone())));
                Ok(conn)
            }
            Ok(Err(e)) => Err(StateUnavailable(format!("cannot connect to Redis: {e}"))),
            Err(_) => Err(StateUnavailable("connecting to Redis timed out".to_owned())),
        }
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, StateUnavailable> {
        let mut conn = self.connection().await?;
        match tokio::time::timeout(self.timeout, invocation.invoke_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StateUnavailable(format!("Redis: {e}"))),
            Err(_) => Err(StateUnavailable("Redis did not answer in time".to_owned())),
        }
    }

    /// Whether Redis answers a `PING` in time.
    pub(super) async fn ping(&self) -> Result<(), StateUnavailable> {
        let mut conn = self.connection().await?;
        let ping = redis::cmd("PING");
        match tokio::time::timeout(self.timeout, ping.query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(StateUnavailable(format!("Redis: {e}"))),
            Err(_) => Err(StateUnavailable("Redis did not answer in time".to_owned())),
        }
    }

    pub(super) async fn answer(
        &self,
        checks: &[StateCheck],
    ) -> Result<Vec<StateAnswer>, StateUnavailable> {
        let mut invocation = self.checks.prepare_invoke();
        for check in checks {
            match check {
                StateCheck::Ban { key } => {
                    invocation.key(format!("{}{key}", self.prefix)).arg("ban");
                }
                StateCheck::Limit { key, quota, .. } => {
                    invocation
                        .key(format!("{}{key}", self.prefix))
                        .arg("limit")
                        .arg(quota.emission_interval_us())
                        .arg(quota.tolerance_us());
                }
                StateCheck::Revoked {
                    token_id,
                    subject,
                    issued_at,
                } => {
                    let jti_key = token_id.as_deref().map_or(String::new(), |j| {
                        format!("{}{}", self.prefix, revoked_token_key(j))
                    });
                    let iat = issued_at.and_then(|i| i64::try_from(i).ok()).unwrap_or(-1);
                    invocation
                        .key(jti_key)
                        .arg("revoked")
                        .arg(format!("{}{}", self.prefix, revoked_subject_key(subject)))
                        .arg(iat);
                }
            }
        }
        let replies: Vec<redis::Value> = self.run(invocation).await?;
        if replies.len() != checks.len() {
            return Err(StateUnavailable(
                "Redis answered a different number of checks".to_owned(),
            ));
        }
        checks
            .iter()
            .zip(replies)
            .map(|(check, reply)| decode(check, &reply))
            .collect()
    }

    pub(super) async fn record_failure(
        &self,
        client: IpAddr,
        policy: &BanPolicy,
    ) -> Result<bool, StateUnavailable> {
        let quota = policy.quota();
        let mut invocation = self.failure.prepare_invoke();
        invocation
            .key(format!("{}{}", self.prefix, failure_key(client)))
            .key(format!("{}{}", self.prefix, ban_key(client)))
            .arg(quota.emission_interval_us())
            .arg(quota.tolerance_us())
            .arg(policy.duration_us);
        let banned: i64 = self.run(invocation).await?;
        Ok(banned == 1)
    }

    /// Run one command (the session store's reads and writes), within the time limit.
    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, StateUnavailable> {
        let mut conn = self.connection().await?;
        match tokio::time::timeout(self.timeout, command.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StateUnavailable(format!("Redis: {e}"))),
            Err(_) => Err(StateUnavailable("Redis did not answer in time".to_owned())),
        }
    }

    /// The prefix of every key.
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(super) async fn revoke(&self, revocation: &Revocation) -> Result<(), StateUnavailable> {
        let mut conn = self.connection().await?;
        let (key, value, ttl) = match revocation {
            Revocation::Token { jti, ttl_secs } => (revoked_token_key(jti), 1, *ttl_secs),
            Revocation::Subject {
                subject,
                before,
                ttl_secs,
            } => (revoked_subject_key(subject), *before, *ttl_secs),
        };
        let mut command = redis::cmd("SET");
        command
            .arg(format!("{}{key}", self.prefix))
            .arg(value)
            .arg("EX")
            .arg(ttl.max(1));
        match tokio::time::timeout(self.timeout, command.exec_async(&mut conn)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StateUnavailable(format!("Redis: {e}"))),
            Err(_) => Err(StateUnavailable("Redis did not answer in time".to_owned())),
        }
    }
}

fn int(value: &redis::Value) -> Option<i64> {
    match value {
        redis::Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn unsigned(value: Option<&redis::Value>) -> Result<u64, StateUnavailable> {
    value
        .and_then(int)
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| StateUnavailable("unexpected Redis reply".to_owned()))
}

/// One reply of the checks script.
fn decode(check: &StateCheck, reply: &redis::Value) -> Result<StateAnswer, StateUnavailable> {
    let bad = || StateUnavailable("unexpected Redis reply".to_owned());
    Ok(match check {
        StateCheck::Ban { .. } => {
            let remaining = int(reply).ok_or_else(bad)?;
            StateAnswer::Ban(u64::try_from(remaining).ok())
        }
        StateCheck::Limit { .. } => {
            let redis::Value::Array(items) = reply else {
                return Err(bad());
            };
            StateAnswer::Limit(Outcome {
                allowed: unsigned(items.first())? == 1,
                remaining: unsigned(items.get(1))?,
                retry_after_us: unsigned(items.get(2))?,
                reset_us: unsigned(items.get(3))?,
            })
        }
        StateCheck::Revoked { .. } => StateAnswer::Revoked(int(reply).ok_or_else(bad)? == 1),
    })
}
