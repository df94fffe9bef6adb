//! mart's Kafka bridge: every service's domain events, mirrored onto Kafka.
//!
//! - [`KafkaBridge`] is an outbox subscriber (durable name `mart.bridge.kafka`)
//!   of every service. For each delivered batch it produces one record per
//!   event and acknowledges, to the outbox, only the events Kafka confirmed
//!   (idempotent producer, `acks=all`). Anything unconfirmed is delivered again
//!   later: at-least-once, with a stable CloudEvents `id` to deduplicate on.
//! - [`cloud_event`]: the record value, a CloudEvents 1.0 structured-mode JSON
//!   event; record key = aggregate id, so one entity's events share a partition.
//! - [`BridgeConfig`]: brokers, topic prefix, and any librdkafka setting as
//!   `MART_KAFKA_<NAME>`.
//! - [`dev_broker`]: librdkafka's in-process mock cluster on loopback, for
//!   `mart kafka-dev-broker` and `MART_KAFKA_BROKERS=embedded`. Not durable.

use std::collections::HashMap;
use std::time::Duration;

use mart_actors::outbox::{SubscriberMsg, acknowledge, subscribe};
use mart_schema::{EventEnvelope, Service};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The durable subscription (and registry) name of the bridge.
pub const BRIDGE: &str = "mart.bridge.kafka";

/// Services whose events are mirrored.
pub const MIRRORED: &[Service] = &[
    Service::Users,
    Service::Products,
    Service::Inventory,
    Service::Orders,
    Service::Payments,
    Service::Notifications,
];

/// How the bridge reaches Kafka.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub brokers: String,
    /// Topics are `<prefix>.<service>.v1`.
    pub topic_prefix: String,
    pub partitions: i32,
    pub replication: i32,
    /// Other librdkafka settings (`security.protocol`, SASL, ...).
    pub settings: Vec<(String, String)>,
}

impl BridgeConfig {
    /// Settings from `MART_KAFKA_<NAME>` variables: `MART_KAFKA_SECURITY_PROTOCOL`
    /// becomes `security.protocol`. mart's own variables are not passed on.
    pub fn librdkafka_settings_from_env() -> Vec<(String, String)> {
        const OWN: &[&str] = &["BROKERS", "TOPIC_PREFIX", "PARTITIONS", "REPLICATION"];
        std::env::vars()
            .filter_map(|(name, value)| {
                let key = name.strip_prefix("MART_KAFKA_")?;
                (!OWN.contains(&key)).then(|| (key.to_lowercase().replace('_', "."), value))
            })
            .collect()
    }

    /// Checks the client settings as librdkafka reads them (names, values,
    /// and what this build supports: TLS, SASL PLAIN/SCRAM), without
    /// connecting. The error names the variable to fix.
    pub fn check(&self) -> Result<(), String> {
        use rdkafka::error::KafkaError;
        let mut client = self.client();
        client.set("enable.idempotence", "true").set("acks", "all");
        match client.create::<rdkafka::producer::BaseProducer>() {
            Ok(_) => Ok(()),
            Err(KafkaError::ClientConfig(_, description, key, _)) if !key.is_empty() => {
                Err(format!("{}: {description}", env_name(&key)))
            }
            Err(e) => {
                // librdkafka checks some settings only together, when the
                // client is made, and names the value rather than the key.
                let text = e.to_string();
                let culprit = self.settings.iter().find(|(key, value)| {
                    text.contains(key.as_str())
                        || (value.len() >= 3 && text.contains(value.as_str()))
                });
                match culprit {
                    Some((key, _)) => Err(format!("{}: {text}", env_name(key))),
                    None => Err(format!("the Kafka client settings (MART_KAFKA_*): {text}")),
                }
            }
        }
    }

    /// The topic of `service`.
    pub fn topic(&self, service: Service) -> String {
        topic(&self.topic_prefix, service)
    }

    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.settings {
            config.set(key, value);
        }
        config
    }
}

/// The variable that sets librdkafka's `key`.
fn env_name(key: &str) -> String {
    match key {
        "bootstrap.servers" => "MART_KAFKA_BROKERS".into(),
        _ => format!("MART_KAFKA_{}", key.replace('.', "_").to_uppercase()),
    }
}

/// `<prefix>.<service>.v1`
pub fn topic(prefix: &str, service: Service) -> String {
    format!("{prefix}.{}.v1", service.name())
}

/// The CloudEvents 1.0 form of an outbox event.
pub fn cloud_event(event: &EventEnvelope) -> serde_json::Value {
    let time = event
        .occurred_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    serde_json::json!({
        "specversion": "1.0",
        "id": event.event_id.to_string(),
        "source": format!("/mart/{}", event.source.name()),
        "type": format!("mart.{}", event.event_type),
        "subject": event.aggregate_id.to_string(),
        "time": time,
        "datacontenttype": "application/json",
        // The sequence extension wants a string that sorts lexically.
        "sequence": format!("{:020}", event.aggregate_seq),
        "data": event.data,
    })
}

/// The record's `traceparent`: the span publishing it when traces are on
/// (a child of the request that wrote the event), else the writer's own
/// span if one was kept, else one derived from the event.
fn record_trace(event: &EventEnvelope, publishing: &tracing::Span) -> String {
    mart_actors::trace::of(publishing)
        .map(String::from)
        .or_else(|| event.traceparent.clone())
        .unwrap_or_else(|| traceparent(event))
}

/// A span publishing `event` onto `topic`, continuing its writer's trace.
fn publishing(event: &EventEnvelope, topic: &str) -> tracing::Span {
    let span = tracing::info_span!(
        target: mart_actors::trace::TARGET,
        "publish",
        otel.name = %format_args!("{topic} publish"),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = %topic,
        event_id = %event.event_id.0,
    );
    let parent = mart_actors::trace::writer_of(event);
    mart_actors::trace::continue_from(&span, parent.as_ref());
    span
}

/// A W3C `traceparent` for an event written with traces off: stable across
/// redeliveries.
fn traceparent(event: &EventEnvelope) -> String {
    let trace = event.event_id.0.simple().to_string();
    let span = &event.aggregate_id.simple().to_string()[16..];
    format!("00-{trace}-{span}-01")
}

/// Creates the topics that are missing (a broker without the admin API, like
/// the mock cluster, creates them on first produce instead).
pub async fn ensure_topics(config: &BridgeConfig) {
    // The mock cluster never answers CreateTopics: asking would only hold the
    // bridge back by the whole timeout.
    if is_dev_broker(&config.brokers) {
        return;
    }
    let admin: AdminClient<DefaultClientContext> = match config.client().create() {
        Ok(admin) => admin,
        Err(e) => {
            tracing::warn!(error = %e, "kafka admin client unavailable; topics are created on first use");
            return;
        }
    };
    let names: Vec<String> = MIRRORED.iter().map(|s| config.topic(*s)).collect();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                config.partitions,
                TopicReplication::Fixed(config.replication),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
    match tokio::time::timeout(
        Duration::from_secs(8),
        admin.create_topics(&topics, &options),
    )
    .await
    {
        Ok(Ok(results)) => {
            for result in results {
                if let Err((topic, code)) = result
                    && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
                {
                    tracing::warn!(%topic, ?code, "could not create topic");
                }
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not create topics; they are created on first use")
        }
        Err(_) => tracing::warn!("creating topics timed out; they are created on first use"),
    }
}

/// Mirrors delivered outbox events to Kafka.
#[derive(Debug)]
pub struct KafkaBridge;

pub struct BridgeState {
    producer: FutureProducer,
    config: BridgeConfig,
    /// Per outbox partition, the highest sequence number Kafka confirmed. A
    /// batch delivered again (another node's dispatcher took over before the
    /// first could record the acknowledgement) is not produced twice while
    /// this bridge lives.
    confirmed: HashMap<(Service, i16), i64>,
    outage: mart_actors::outage::Outage,
}

impl std::fmt::Debug for BridgeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeState")
            .field("brokers", &self.config.brokers)
            .finish()
    }
}

impl Actor for KafkaBridge {
    type Msg = SubscriberMsg;
    type State = BridgeState;
    type Arguments = BridgeConfig;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        config: BridgeConfig,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut client = config.client();
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // A delivery report well within the outbox's acknowledgement timeout,
            // so an unreachable broker is an answer, not a hang.
            .set("message.timeout.ms", "8000")
            .set("linger.ms", "5");
        let producer: FutureProducer = client.create()?;
        subscribe(&myself, MIRRORED);
        tracing::info!(brokers = %config.brokers, "kafka bridge started");
        Ok(BridgeState {
            producer,
            config,
            confirmed: HashMap::new(),
            outage: mart_actors::outage::Outage::new("Kafka"),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut BridgeState,
    ) -> Result<(), ActorProcessingErr> {
        acknowledge(msg, async |batch| state.mirror(&batch).await).await;
        Ok(())
    }
}

impl BridgeState {
    /// Produces the batch; how many events, from the first, Kafka confirmed.
    async fn mirror(&mut self, batch: &[EventEnvelope]) -> i64 {
        let already: Vec<bool> = batch
            .iter()
            .map(|event| {
                self.confirmed
                    .get(&(event.source, event.partition))
                    .is_some_and(|seq| event.seq <= *seq)
            })
            .collect();
        let fresh: Vec<&EventEnvelope> = batch
            .iter()
            .zip(&already)
            .filter(|(_, done)| !**done)
            .map(|(event, _)| event)
            .collect();
        // Each ends when its record is confirmed (or not), below.
        let mut spans = Vec::with_capacity(fresh.len());
        let prepared: Vec<(String, String, String, String)> = fresh
            .iter()
            .map(|event| {
                let topic = self.config.topic(event.source);
                let span = publishing(event, &topic);
                let trace = record_trace(event, &span);
                spans.push(span);
                (
                    topic,
                    event.aggregate_id.to_string(),
                    cloud_event(event).to_string(),
                    trace,
                )
            })
            .collect();
        // Queued together, confirmed in order: one aggregate's events go to one
        // partition, where the idempotent producer keeps their order.
        let sends = prepared.iter().map(|(topic, key, value, trace)| {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "content-type",
                    value: Some("application/cloudevents+json"),
                })
                .insert(Header {
                    key: "traceparent",
                    value: Some(trace.as_str()),
                });
            let record = FutureRecord::to(topic)
                .key(key)
                .payload(value)
                .headers(headers);
            self.producer.send(record, Duration::from_secs(5))
        });
        let results = futures::future::join_all(sends).await;
        // How many events, from the first, are on Kafka: skipped ones were
        // already; fresh ones in the order they were sent.
        let mut outcomes = results.into_iter();
        let mut spans = spans.into_iter();
        let mut confirmed = 0;
        for (event, done) in batch.iter().zip(already) {
            if done {
                confirmed += 1;
                continue;
            }
            let span = spans.next();
            match outcomes.next() {
                Some(Ok(_)) => {
                    metrics::counter!("mart_kafka_records_total").increment(1);
                    metrics::gauge!("mart_kafka_bridge_up").set(1.0);
                    let high = self
                        .confirmed
                        .entry((event.source, event.partition))
                        .or_default();
                    *high = (*high).max(event.seq);
                    confirmed += 1;
                }
                Some(Err((e, _))) => {
                    if let Some(span) = &span {
                        mart_actors::trace::failed(span, &e.to_string());
                    }
                    metrics::counter!("mart_kafka_produce_errors_total").increment(1);
                    metrics::gauge!("mart_kafka_bridge_up").set(0.0);
                    // Unconfirmed events are delivered again later.
                    self.outage.failed(&e);
                    break;
                }
                None => break,
            }
        }
        if confirmed == i64::try_from(batch.len()).unwrap_or(i64::MAX) {
            self.outage.ok();
        }
        confirmed
    }
}

/// Starts the bridge actor, linked to `parent` if given.
pub async fn start(
    config: BridgeConfig,
    parent: Option<ractor::ActorCell>,
) -> Result<ractor::ActorCell, String> {
    let spawned = match parent {
        Some(parent) => Actor::spawn_linked(Some(BRIDGE.into()), KafkaBridge, config, parent).await,
        None => Actor::spawn(Some(BRIDGE.into()), KafkaBridge, config).await,
    };
    spawned
        .map(|(actor, _)| actor.get_cell())
        .map_err(|e| e.to_string())
}

/// Runs librdkafka's mock cluster (3 brokers on loopback) on a thread of its
/// own for the life of the process, and returns its bootstrap servers.
/// In memory only: everything is gone when the process exits.
pub fn dev_broker() -> Result<String, String> {
    let bootstrap = spawn_dev_broker()?;
    if let Ok(mut started) = DEV_BROKERS.lock() {
        started.push(bootstrap.clone());
    }
    Ok(bootstrap)
}

/// Bootstrap lists of the mock clusters this process started.
static DEV_BROKERS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn is_dev_broker(bootstrap: &str) -> bool {
    DEV_BROKERS
        .lock()
        .is_ok_and(|started| started.iter().any(|b| b == bootstrap))
}

fn spawn_dev_broker() -> Result<String, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("kafka-dev-broker".into())
        .spawn(move || match rdkafka::mocking::MockCluster::new(3) {
            Ok(cluster) => {
                let _ = tx.send(Ok(cluster.bootstrap_servers()));
                // The cluster lives as long as this thread, which is as long as the process.
                loop {
                    std::thread::park();
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv().map_err(|e| e.to_string())?
}

/// A record seen on a topic: its key (the aggregate id), its CloudEvents
/// type, and when it arrived.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub key: String,
    pub kind: String,
    pub at: std::time::Instant,
}

/// Reads `topics` from their beginning, as an outside consumer would, on a thread
/// of its own, sending each record as it arrives, until `stop` is set or the
/// receiver is gone (`mart bench` measures the mirror's lag with it).
pub fn watch(
    bootstrap: &str,
    topics: &[String],
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<std::sync::mpsc::Receiver<Arrival>, String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("mart-watch-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        .create()
        .map_err(|e| e.to_string())?;
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(|e| e.to_string())?;
    let (seen, arrivals) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("kafka-watch".into())
        .spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(Ok(message)) = consumer.poll(std::time::Duration::from_millis(50)) else {
                    continue;
                };
                let at = std::time::Instant::now();
                let event: serde_json::Value =
                    serde_json::from_slice(message.payload().unwrap_or_default())
                        .unwrap_or_default();
                let arrival = Arrival {
                    key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                    kind: event["type"].as_str().unwrap_or_default().to_owned(),
                    at,
                };
                if seen.send(arrival).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(arrivals)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(settings: &[(&str, &str)]) -> BridgeConfig {
        BridgeConfig {
            brokers: "127.0.0.1:1".into(),
            topic_prefix: "mart".into(),
            partitions: 1,
            replication: 1,
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn tls_and_sasl_settings_are_supported_and_bad_ones_name_their_variable() {
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            let sasl = config(&[
                ("security.protocol", "sasl_ssl"),
                ("sasl.mechanism", mechanism),
                ("sasl.username", "mart"),
                ("sasl.password", "secret"),
            ]);
            assert_eq!(sasl.check(), Ok(()), "{mechanism}");
        }
        assert_eq!(config(&[("security.protocol", "ssl")]).check(), Ok(()));
        let bad = config(&[
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "BOGUS"),
        ])
        .check();
        assert!(
            bad.as_ref()
                .is_err_and(|e| e.starts_with("MART_KAFKA_SASL_MECHANISM")),
            "{bad:?}"
        );
        let unknown = config(&[("no.such.setting", "1")]).check();
        assert!(
            unknown
                .as_ref()
                .is_err_and(|e| e.starts_with("MART_KAFKA_NO_SUCH_SETTING")),
            "{unknown:?}"
        );
    }

    #[test]
    fn a_cloud_event_carries_every_required_attribute() {
        let event = EventEnvelope {
            event_id: mart_schema::EventId::new(),
            source: Service::Orders,
            event_type: "order.paid".into(),
            aggregate_id: uuid::Uuid::now_v7(),
            aggregate_seq: 7,
            partition: 3,
            seq: 42,
            occurred_at: time::OffsetDateTime::now_utc(),
            data: serde_json::json!({"order_id": "x"}),
            traceparent: None,
        };
        let ce = cloud_event(&event);
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["type"], "mart.order.paid");
        assert_eq!(ce["source"], "/mart/orders");
        assert_eq!(ce["sequence"], "00000000000000000007");
        assert_eq!(ce["id"], event.event_id.to_string());
        assert_eq!(ce["subject"], event.aggregate_id.to_string());
        assert!(ce["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(topic("mart", Service::Orders), "mart.orders.v1");
        let trace = traceparent(&event);
        assert_eq!(trace.len(), 55);
        assert!(trace.starts_with("00-") && trace.ends_with("-01"));
    }
}
