//! Reading what the Kafka bridge wrote, as an outside consumer would.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

/// Partitions of the topics tests create.
pub const PARTITIONS: i32 = 3;

#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub key: String,
    pub event: Value,
    pub content_type: String,
    pub traceparent: String,
}

/// Everything on the topics so far, in partition order.
pub fn read_all(bootstrap: &str, topics: &[String]) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "mart-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        for partition in 0..PARTITIONS {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&assignment).expect("assign");
    drop(assignment);
    let mut records = Vec::new();
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_secs(2) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                idle_since = Instant::now();
                let header = |name: &str| {
                    message
                        .headers()
                        .and_then(|h| h.iter().find(|h| h.key == name))
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default()
                };
                records.push(Record {
                    topic: message.topic().to_owned(),
                    key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                    event: serde_json::from_slice(message.payload().unwrap_or_default())
                        .unwrap_or(Value::Null),
                    content_type: header("content-type"),
                    traceparent: header("traceparent"),
                });
            }
            Some(Err(e)) => panic!("kafka read: {e}"),
            None => {}
        }
    }
    records
}

/// librdkafka's mock cluster (a Kafka-protocol broker on loopback) with
/// `topics` created; its bootstrap address.
pub fn mock_cluster(
    topics: &[String],
) -> (
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    for topic in topics {
        cluster.create_topic(topic, PARTITIONS, 1).expect("topic");
    }
    let bootstrap = cluster.bootstrap_servers();
    (cluster, bootstrap)
}
