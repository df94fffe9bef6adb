//! A closed-loop HTTP load generator: `connections` keep-alive connections,
//! each sending its next request when the last answer is in, for a while.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode};

/// What one run saw.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// Time from sending each request to its whole answer.
    pub(crate) latencies: Vec<Duration>,
    /// Answers by status.
    pub(crate) statuses: std::collections::BTreeMap<u16, u64>,
    pub(crate) elapsed: Duration,
    /// The body of each answer with `keep` status, when asked for.
    pub(crate) kept: Vec<bytes::Bytes>,
}

/// One request to make: method, path and an optional JSON body.
pub(crate) struct Ask {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) body: Option<String>,
}

/// Runs `connections` loops against `base` for `duration`; `next(i)` makes
/// the i-th request of a loop. Bodies of answers with status `keep` are kept.
pub(crate) async fn run(
    base: &str,
    token: Option<&str>,
    connections: usize,
    duration: Duration,
    keep: Option<StatusCode>,
    next: impl Fn(usize) -> Ask + Send + Sync + 'static,
) -> anyhow::Result<Seen> {
    let next = Arc::new(next);
    let started = Instant::now();
    let mut loops = Vec::new();
    for connection in 0..connections {
        let (next, base) = (next.clone(), base.to_owned());
        let token = token.map(str::to_owned);
        loops.push(tokio::spawn(async move {
            // One client per loop: one keep-alive connection each.
            let client = Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(30))
                .build()?;
            let mut seen = Seen::default();
            let mut i = connection * 7919;
            while started.elapsed() < duration {
                let ask = next(i);
                i += 1;
                let mut request = client.request(ask.method, format!("{base}{}", ask.path));
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                if let Some(body) = ask.body {
                    request = request
                        .header("content-type", "application/json")
                        .body(body);
                }
                let sent = Instant::now();
                let response = request.send().await?;
                let status = response.status();
                let body = response.bytes().await?;
                seen.latencies.push(sent.elapsed());
                *seen.statuses.entry(status.as_u16()).or_default() += 1;
                if Some(status) == keep {
                    // A copy: the body may be a slice of the connection's
                    // read buffer, which keeping it would pin (about 9 kB
                    // per answer; the growth cost the edge's side of the
                    // comparison page faults and zeroing).
                    seen.kept.push(bytes::Bytes::copy_from_slice(&body));
                }
            }
            anyhow::Ok(seen)
        }));
    }
    let mut all = Seen::default();
    for finished in loops {
        let seen = finished.await??;
        all.latencies.extend(seen.latencies);
        all.kept.extend(seen.kept);
        for (status, count) in seen.statuses {
            *all.statuses.entry(status).or_default() += count;
        }
    }
    all.elapsed = started.elapsed();
    Ok(all)
}
