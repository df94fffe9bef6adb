//! Logs and spans: text for people, JSON for machines; `RUST_LOG` filters.
//! Colour only on a terminal. ractor_cluster's warnings are kept to one a
//! minute per place in its code: a peer with the wrong cookie retries every
//! 500 ms, and each attempt would otherwise be a line.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{DynFilterFn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// mart's default filter when `RUST_LOG` is unset. PostgreSQL's NOTICEs
/// (tokio_postgres logs them at INFO: "relation already exists, skipping"
/// on every start) go only to DEBUG.
const DEFAULT_FILTER: &str =
    "info,ractor=warn,ractor_cluster=warn,tower_http=info,tokio_postgres::connection=warn";

/// How often one of ractor_cluster's warnings may be written.
const REPEAT_AFTER: Duration = Duration::from_secs(60);

/// `RUST_LOG` (or mart's default), with ractor_cluster's repeats held back.
fn filter() -> impl tracing_subscriber::layer::Filter<tracing_subscriber::Registry> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Asked per event (`sometimes`): whether to write depends on the time.
    // ractor_cluster's and librdkafka's own lines repeat per retry while a
    // peer or broker is away (mart says the outage itself, once).
    let repeats = DynFilterFn::new(|metadata, _| {
        let chatty = ["ractor_cluster", "rdkafka"]
            .iter()
            .any(|target| metadata.target().starts_with(target));
        !chatty || first_in_a_while(metadata.callsite())
    })
    .with_callsite_filter(|_| tracing::subscriber::Interest::sometimes());
    filter.and(repeats)
}

pub fn init(format: &str) {
    let filter = filter();
    let ansi = std::io::stderr().is_terminal();
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless; ignore it.
    let _ = if format == "json" {
        use tracing_subscriber::Layer;
        tracing_subscriber::registry()
            .with(layer.json().with_filter(filter))
            .try_init()
    } else {
        use tracing_subscriber::Layer;
        tracing_subscriber::registry()
            .with(layer.with_filter(filter))
            .try_init()
    };
}

/// Whether an event from `callsite` may be written now: the first time, and
/// then once per [`REPEAT_AFTER`].
fn first_in_a_while(callsite: tracing::callsite::Identifier) -> bool {
    static LAST: Mutex<Option<HashMap<tracing::callsite::Identifier, Instant>>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let last = last.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    match last.get(&callsite) {
        Some(at) if now.duration_since(*at) < REPEAT_AFTER => false,
        _ => {
            last.insert(callsite, now);
            true
        }
    }
}

/// Histogram buckets of every `_seconds` metric: a millisecond to ten seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static METRICS: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
    std::sync::OnceLock::new();

/// The process's Prometheus recorder, installed on first use (a process may
/// build several nodes: `mart bench`, the tests), and how to render it.
pub fn metrics() -> Option<mart_http::MetricsRender> {
    let handle = METRICS.get_or_init(|| {
        let builder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .ok()?;
        match builder.install_recorder() {
            Ok(handle) => {
                let upkeep = handle.clone();
                // Histograms drain what they hold now and then, off any request.
                let _ = std::thread::Builder::new()
                    .name("metrics-upkeep".into())
                    .spawn(move || {
                        loop {
                            std::thread::sleep(Duration::from_secs(5));
                            upkeep.run_upkeep();
                        }
                    });
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed; /metrics is off");
                None
            }
        }
    });
    let handle = handle.clone()?;
    Some(std::sync::Arc::new(move || handle.render()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tracing_subscriber::Layer;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_cluster_warning_repeating_every_attempt_is_written_once_a_minute() {
        let captured = Captured::default();
        let writer = captured.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_filter(filter());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..5 {
                tracing::warn!(target: "ractor_cluster::node", "unauthenticated session");
                tracing::warn!(target: "mart_node::cluster", "a line of mart's own");
            }
        });
        let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(text.matches("unauthenticated session").count(), 1, "{text}");
        assert_eq!(text.matches("a line of mart's own").count(), 5, "{text}");
        assert!(!text.contains('\u{1b}'), "no colour codes: {text}");
    }
}
