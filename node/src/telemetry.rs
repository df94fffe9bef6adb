//! Logs, traces and metrics.
//!
//! - Logs: text for people, JSON for machines (with the OpenTelemetry trace
//!   and span ids of the line's span); `RUST_LOG` filters. Colour only on a
//!   terminal. ractor_cluster's warnings are kept to one a minute per place
//!   in its code: a peer with the wrong cookie retries every 500 ms, and each
//!   attempt would otherwise be a line.
//! - Traces: off unless an OTLP endpoint is set, with OpenTelemetry's own
//!   variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`
//!   `http/protobuf` or `http/json`, `OTEL_SERVICE_NAME`,
//!   `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*`), read by the SDK. mart's
//!   spans (target [`mart_actors::trace::TARGET`]) become OpenTelemetry spans
//!   exported in batches from a thread of their own.
//! - Metrics: one Prometheus recorder per process ([`metrics`]).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mart_actors::trace::TARGET;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{DynFilterFn, FilterExt, Targets};
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
/// mart's trace spans are seen by the log only when `with_spans` (JSON logs
/// with traces on: a line names its trace); text lines would only get
/// longer.
fn filter<S>(with_spans: bool) -> impl tracing_subscriber::layer::Filter<S> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let spans = if with_spans { "info" } else { "off" };
    let filter = match format!("{TARGET}={spans}").parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
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

/// What must happen before the process exits: spans still buffered are
/// exported.
#[derive(Debug, Default)]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered (at most the exporter's timeout).
    pub async fn shutdown(self) {
        if let Some(provider) = self.traces {
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

/// Installs logging and, if an OTLP endpoint is configured, trace export.
/// `node` names this node in every span (`service.instance.id`).
pub fn init(format: &str, node: &str) -> Result<Telemetry, String> {
    let traces = tracer_provider(node)?;
    let otel = traces.as_ref().map(otel_layer);
    let ansi = std::io::stderr().is_terminal();
    let (text, json) = if format == "json" {
        let json = json_layer(std::io::stderr, traces.is_some());
        (None, Some(json))
    } else {
        let text = tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(filter(false));
        (Some(text), None)
    };
    // A second init (tests) is harmless; ignore it.
    let _ = tracing_subscriber::registry()
        .with(otel)
        .with(text)
        .with(json)
        .try_init();
    if traces.is_some() {
        tracing::info!(node, "exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry { traces })
}

/// mart's trace spans, as OpenTelemetry spans of `provider`.
fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("mart"))
        .with_filter(Targets::new().with_target(TARGET, tracing::Level::INFO))
}

/// One JSON object per line; with traces on, each line in a traced span
/// names it (`openTelemetry.traceId`, `openTelemetry.spanId`).
fn json_layer<S, W>(writer: W, traced: bool) -> impl Layer<S> + use<S, W>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    json_subscriber::fmt::layer()
        .with_writer(writer)
        .with_current_span(false)
        .with_span_list(false)
        .with_opentelemetry_ids(true)
        .with_filter(filter(traced))
}

/// The standard variable, unless unset or blank.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The tracer provider the `OTEL_*` variables ask for, or `None` when no
/// OTLP endpoint is set (or traces are switched off).
fn tracer_provider(node: &str) -> Result<Option<SdkTracerProvider>, String> {
    let endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or(env("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    if endpoint.is_none() || disabled {
        return Ok(None);
    }
    // Chosen here, not by the exporter: with both encodings built in it
    // defaults to JSON, where OpenTelemetry's default is protobuf, and it
    // would take `grpc` (not built in) with only a warning.
    let named = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .into_iter()
    .find_map(|name| env(name).map(|value| (name, value)));
    let protocol = match named {
        None => opentelemetry_otlp::Protocol::HttpBinary,
        Some((_, value)) if value == "http/protobuf" => opentelemetry_otlp::Protocol::HttpBinary,
        Some((_, value)) if value == "http/json" => opentelemetry_otlp::Protocol::HttpJson,
        Some((name, value)) => {
            return Err(format!(
                "{name}={value}: mart exports traces over OTLP/HTTP; \
                 use http/protobuf or http/json"
            ));
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder()
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            node.to_owned(),
        ))
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ));
    let named = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name("mart");
    }
    let resource = resource.build();
    // The exporter's HTTP client (reqwest's blocking one) keeps a runtime of
    // its own, which may be neither made nor dropped on a runtime thread.
    let exporter = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                use opentelemetry_otlp::WithExportConfig;
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(protocol)
                    .build()
            })
            .join()
    })
    .map_err(|_| "the OTLP exporter could not be built".to_string())?
    .map_err(|e| format!("OTLP exporter: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    Ok(Some(provider))
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
            .with_filter(filter(false));
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

    #[test]
    fn a_json_line_in_a_traced_span_names_its_trace_and_span() {
        let captured = Captured::default();
        let writer = captured.clone();
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(otel_layer(&provider))
            .with(json_layer(move || writer.clone(), true));
        let traced = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: TARGET, "request");
            let parent = mart_actors::trace::TraceParent::parse(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            );
            mart_actors::trace::continue_from(&span, parent.as_ref());
            span.in_scope(|| tracing::warn!("slow request"));
            mart_actors::trace::of(&span).expect("traced")
        });
        let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["fields"]["message"], "slow request", "{line}");
        let ids = &line["openTelemetry"];
        assert_eq!(ids["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736", "{line}");
        assert_eq!(traced.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            ids["spanId"].as_str(),
            traced.as_str().get(36..52),
            "the line's span: {line}"
        );
    }
}
