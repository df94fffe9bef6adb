//! `mart bench`: mart's speed next to a reference measured in the same run,
//! on the same machine and PostgreSQL server, in scratch databases that are
//! dropped afterwards. Absolute rates move by a third between runs on a busy
//! machine; the ratio to the reference in the same run is what to compare.
//!
//! - `stock`: reservations through the inventory service against the plain
//!   conditional `UPDATE` (one hot product; spread over many).
//! - `edge`: a whole node over real HTTP: product reads against a bare axum
//!   route answering the same JSON; order placement against the raw SQL
//!   order transaction (`orders`). `load` is the HTTP load generator.
//! - `kafka`: the Kafka mirror's lag, from an order's 201 to its record on
//!   the topic, at a steady rate of orders.
//! - `memory`: an idle node's resident set, what entity actors add live and
//!   parked, and what as many bare ractor actors add (their reference).

mod edge;
mod kafka;
mod load;
mod memory;
pub(crate) use memory::bare_actor_footprint;
mod orders;
mod stock;

use std::time::Duration;

use anyhow::Context;

use load::Seen;

/// How a bench run is shaped.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Seconds each scenario runs.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Callers at once in the stock scenarios (and database connections for
    /// the plain update).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Products in the stock spread scenarios.
    #[arg(long, default_value_t = 10_000)]
    pub products: usize,
    /// Products in the catalog the edge scenarios read and order from.
    #[arg(long, default_value_t = 500)]
    pub catalog: usize,
    /// HTTP connections reading products.
    #[arg(long, default_value_t = 64)]
    pub read_connections: usize,
    /// HTTP connections placing orders (and clients of the raw SQL reference).
    #[arg(long, default_value_t = 32)]
    pub order_connections: usize,
    /// Orders per second placed while the Kafka mirror's lag is measured.
    #[arg(long, default_value_t = 500)]
    pub kafka_orders_per_second: u64,
    /// Idle entity actors started in the memory measurement.
    #[arg(long, default_value_t = 100_000)]
    pub entities: usize,
    /// Only the stock scenarios, the edge ones, the Kafka mirror's lag, or
    /// the memory figures.
    #[arg(long, value_parser = ["stock", "edge", "kafka", "memory"])]
    pub only: Option<String>,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One scenario's figures.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Row {
    scenario: String,
    ops: u64,
    seconds: f64,
    per_second: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// The row this one is compared with.
    reference: Option<String>,
    /// This row's rate over the reference's, filled in at the end.
    ratio: Option<f64>,
}

impl Row {
    /// Counted operations, without latencies.
    pub(crate) fn counted(
        scenario: &str,
        ops: u64,
        elapsed: Duration,
        reference: Option<&str>,
    ) -> Row {
        Row {
            scenario: scenario.to_owned(),
            ops,
            seconds: elapsed.as_secs_f64(),
            per_second: ops as f64 / elapsed.as_secs_f64(),
            p50_ms: None,
            p99_ms: None,
            reference: reference.map(str::to_owned),
            ratio: None,
        }
    }

    /// Operations with the latency of each.
    pub(crate) fn measured(
        scenario: &str,
        mut seen: Seen,
        reference: Option<&str>,
    ) -> anyhow::Result<Row> {
        anyhow::ensure!(!seen.latencies.is_empty(), "{scenario}: nothing completed");
        seen.latencies.sort_unstable();
        let at = |q: f64| {
            let i = ((seen.latencies.len() as f64 - 1.0) * q).round() as usize;
            seen.latencies[i].as_secs_f64() * 1000.0
        };
        let mut row = Row::counted(
            scenario,
            seen.latencies.len() as u64,
            seen.elapsed,
            reference,
        );
        row.p50_ms = Some(at(0.50));
        row.p99_ms = Some(at(0.99));
        Ok(row)
    }

    /// HTTP requests, every one of which must have succeeded.
    pub(crate) fn http(scenario: &str, seen: Seen, reference: Option<&str>) -> anyhow::Result<Row> {
        let failed: Vec<_> = seen.statuses.iter().filter(|(s, _)| **s >= 300).collect();
        anyhow::ensure!(failed.is_empty(), "{scenario}: answers {:?}", seen.statuses);
        Row::measured(scenario, seen, reference)
    }
}

/// Runs the scenarios against the server behind `server_url` (scratch
/// databases are made next to it) and prints the figures.
pub async fn run(server_url: &str, options: &BenchOptions) -> anyhow::Result<()> {
    let (config, tls) = mart_schema::db::tls::connector(server_url).context("database URL")?;
    let (admin, connection) = config.connect(tls).await.context("connecting")?;
    let connection = tokio::spawn(connection);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let scratch: Vec<String> = ["stock", "node", "reference", "kafka", "idle", "entities"]
        .iter()
        .map(|what| format!("mart_bench_{what}_{run}"))
        .collect();
    for db in &scratch {
        admin
            .batch_execute(&format!("create database {db}"))
            .await?;
    }
    // Next to the server's own URL, TLS settings and all.
    let url_of = |db: &str| mart_schema::db::with_dbname(server_url, db);
    let mut rows = Vec::new();
    let only = options.only.as_deref();
    let mut outcome = Ok(());
    if only.is_none_or(|o| o == "stock") {
        outcome = stock::scenarios(&url_of(&scratch[0]), options)
            .await
            .map(|mut r| rows.append(&mut r));
    }
    if outcome.is_ok() && only.is_none_or(|o| o == "edge") {
        outcome = edge::scenarios(&url_of(&scratch[1]), &url_of(&scratch[2]), options)
            .await
            .map(|mut r| rows.append(&mut r));
    }
    if outcome.is_ok() && only.is_none_or(|o| o == "kafka") {
        outcome = kafka::mirror_lag(&url_of(&scratch[3]), options)
            .await
            .map(|row| rows.push(row));
    }
    let mut memory = Vec::new();
    if outcome.is_ok() && only.is_none_or(|o| o == "memory") {
        outcome = memory::scenarios(&url_of(&scratch[4]), &url_of(&scratch[5]), options)
            .await
            .map(|figures| memory = figures);
    }
    for db in &scratch {
        let _ = admin
            .batch_execute(&format!("drop database if exists {db} with (force)"))
            .await;
    }
    drop(admin);
    let _ = connection.await;
    outcome?;
    let rates: Vec<(String, f64)> = rows
        .iter()
        .map(|r| (r.scenario.clone(), r.per_second))
        .collect();
    for row in &mut rows {
        let reference = rates
            .iter()
            .find(|(name, _)| Some(name) == row.reference.as_ref());
        row.ratio = reference.map(|(_, rate)| row.per_second / rate);
    }
    if options.json {
        let all = serde_json::json!({"rates": rows, "memory": memory});
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        if !rows.is_empty() {
            print_table(&rows, options);
        }
        print_memory(&memory);
    }
    Ok(())
}

fn print_memory(figures: &[memory::Footprint]) {
    if figures.is_empty() {
        return;
    }
    println!("\n| memory | RSS MB | per entity |");
    println!("|---|---:|---:|");
    for figure in figures {
        let each = figure
            .per_entity_bytes
            .map_or(String::new(), |b| format!("{:.1} kB", b / 1024.0));
        println!("| {} | {:.1} | {each} |", figure.measurement, figure.rss_mb);
    }
}

fn print_table(rows: &[Row], options: &BenchOptions) {
    println!(
        "\nmart bench: {} s per scenario; stock: {} callers, {} products spread; edge: {} read and {} order connections, {} products\n",
        options.seconds,
        options.concurrency,
        options.products,
        options.read_connections,
        options.order_connections,
        options.catalog
    );
    println!("| scenario | per second | p50 ms | p99 ms | vs reference |");
    println!("|---|---:|---:|---:|---:|");
    let ms = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.2}"));
    for row in rows {
        let ratio = match (&row.ratio, &row.reference) {
            (Some(ratio), Some(reference)) => format!("{ratio:.2}x {reference}"),
            _ => "(reference)".to_owned(),
        };
        println!(
            "| {} | {:.0} | {} | {} | {} |",
            row.scenario,
            row.per_second,
            ms(row.p50_ms),
            ms(row.p99_ms),
            ratio
        );
    }
}
