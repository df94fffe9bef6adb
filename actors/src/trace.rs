//! Trace context across hops: one trace follows a request from the edge
//! through every service call (on any node), into the outbox events it
//! writes, onto their Kafka records, and into the work subscribers do for
//! them.
//!
//! Spans are `tracing` spans with target [`TARGET`]; the node's OpenTelemetry
//! layer (on only when an OTLP endpoint is configured) turns them into
//! OpenTelemetry spans. With it off these spans are disabled and cost
//! nothing, and [`current`] is `None`: nothing is propagated.
//!
//! Where the context cannot ride on the task (a message to another node, a
//! row read later), it travels as a W3C [`TraceParent`] and the far side
//! continues from it ([`continue_from`]).

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every span mart makes for tracing (the node enables it
/// only when traces are exported).
pub const TARGET: &str = "mart::trace";

/// A W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), valid by
/// construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TraceParent(String);

impl TraceParent {
    /// The header's value if it is a valid `traceparent`.
    pub fn parse(header: &str) -> Option<Self> {
        // The propagator reads the ids as numbers, so it would take a
        // 31-digit trace id and pad it into another trace's: the shape is
        // checked first, as W3C lays it out.
        let fields: Vec<&str> = header.trim().split('-').collect();
        let lowercase_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let shaped = fields.iter().map(|f| f.len()).eq([2, 32, 16, 2])
            && fields.iter().all(|f| lowercase_hex(f));
        if !shaped {
            return None;
        }
        let context = extract(header);
        let span = context.span();
        span.span_context().is_valid().then(|| inject(&context))?
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> &str {
        self.0.get(3..35).unwrap_or_default()
    }

    fn context(&self) -> opentelemetry::Context {
        extract(&self.0)
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TraceParent {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value).ok_or_else(|| format!("not a W3C traceparent: {value:?}"))
    }
}

impl From<TraceParent> for String {
    fn from(value: TraceParent) -> Self {
        value.0
    }
}

fn extract(header: &str) -> opentelemetry::Context {
    let carrier = HashMap::from([("traceparent".to_string(), header.to_string())]);
    TraceContextPropagator::new().extract(&carrier)
}

fn inject(context: &opentelemetry::Context) -> Option<TraceParent> {
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(context, &mut carrier);
    carrier.remove("traceparent").map(TraceParent)
}

/// The context of the span this task is in, if traces are on.
pub fn current() -> Option<TraceParent> {
    of(&tracing::Span::current())
}

/// The context of `span`, if it is traced.
pub fn of(span: &tracing::Span) -> Option<TraceParent> {
    if span.is_disabled() {
        return None;
    }
    inject(&span.context())
}

/// Makes `span` (just created) a child of a span started elsewhere: on
/// another node, or before a stored event was read.
pub fn continue_from(span: &tracing::Span, parent: Option<&TraceParent>) {
    if let Some(parent) = parent
        && !span.is_disabled()
    {
        let _ = span.set_parent(parent.context());
    }
}

/// Marks `span` as failed (OpenTelemetry's status), with the cause.
pub fn failed(span: &tracing::Span, cause: &str) {
    if !span.is_disabled() {
        span.set_status(opentelemetry::trace::Status::error(cause.to_string()));
    }
}

/// A span for work done on a delivered event (a consumer in OpenTelemetry's
/// terms), continuing the trace of the request that wrote it.
pub fn consuming(event: &mart_schema::EventEnvelope, subscriber: &str) -> tracing::Span {
    let span = tracing::info_span!(
        target: TARGET,
        "process",
        otel.name = %format_args!("{} process", event.event_type),
        otel.kind = "consumer",
        messaging.operation.type = "process",
        messaging.consumer.group.name = subscriber,
        event_id = %event.event_id.0,
    );
    continue_from(&span, writer_of(event).as_ref());
    span
}

/// The span that wrote `event`, if traces were on then.
pub fn writer_of(event: &mart_schema::EventEnvelope) -> Option<TraceParent> {
    event.traceparent.as_deref().and_then(TraceParent::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_checked_and_kept_as_sent() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(header).expect("valid");
        assert_eq!(parsed.as_str(), header);
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        let json = serde_json::to_string(&parsed).expect("encode");
        assert_eq!(json, format!("\"{header}\""));
        assert!(serde_json::from_str::<TraceParent>("\"nonsense\"").is_err());
    }

    #[test]
    fn without_a_tracing_layer_nothing_is_propagated() {
        let span = tracing::info_span!(target: TARGET, "x");
        assert_eq!(of(&span), None);
        assert_eq!(current(), None);
    }
}
