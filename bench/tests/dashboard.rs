//! The Grafana dashboard asks only for what a running app exports: every
//! metric its queries name, with every label they select, group or list
//! by, is in a scrape of the `prometheus` example (in memory), once that
//! example has published, billed, retried and dead-lettered orders.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The labels each series of each metric in a Prometheus text exposition
/// carries, by metric name.
type Exported = BTreeMap<String, Vec<BTreeSet<String>>>;

/// Every query of the dashboard: the panels' targets and the variables'.
fn queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            queries.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(query) = variable["query"]["query"].as_str() {
            queries.push(query.to_owned());
        }
    }
    queries
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The flowgate metric names a query reads.
fn metrics_in(query: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = query;
    while let Some(at) = rest.find("flowgate_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|&c| is_name_char(c))
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// The label names a query uses: in selectors (`{a=~"..", b=".."}`), in
/// `by (..)` and in `label_values(metric, label)`.
fn labels_in(query: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    let mut add_list = |list: &str| {
        for label in list.split(',') {
            let label = label.trim();
            if !label.is_empty() {
                labels.insert(label.to_owned());
            }
        }
    };
    for (open, close, part) in [("{", "}", 0), ("by (", ")", 1), ("label_values(", ")", 2)] {
        let mut rest = query;
        while let Some(at) = rest.find(open) {
            let inner = &rest[at + open.len()..];
            let end = inner.find(close).expect("closed");
            let body = &inner[..end];
            match part {
                0 => {
                    for matcher in body.split(',') {
                        let name: String = matcher
                            .trim()
                            .chars()
                            .take_while(|&c| is_name_char(c))
                            .collect();
                        add_list(&name);
                    }
                }
                1 => add_list(body),
                _ => {
                    // label_values(selector, label): the label after the selector.
                    if let Some((_, label)) = body.rsplit_once(',') {
                        add_list(label);
                    }
                }
            }
            rest = &inner[end..];
        }
    }
    labels
}

/// Parses a Prometheus text exposition.
fn exported(text: &str) -> Exported {
    let mut metrics = Exported::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name: String = line.chars().take_while(|&c| is_name_char(c)).collect();
        let mut labels = BTreeSet::new();
        if let Some(body) = line[name.len()..].strip_prefix('{') {
            let body = &body[..body.rfind('}').expect("closed labels")];
            for pair in body.split("\",") {
                if let Some((label, _)) = pair.split_once('=') {
                    labels.insert(label.trim().to_owned());
                }
            }
        }
        metrics.entry(name).or_default().push(labels);
    }
    metrics
}

/// The value of every series of counter `name`, summed.
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(port: u16) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    // HTTP/1.0: the body ends with the connection, never chunked.
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_owned())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// The example, stopped when dropped.
struct Example(tokio::process::Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

#[tokio::test]
async fn every_query_of_the_dashboard_reads_metrics_and_labels_the_example_exports() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../dashboards/flowgate.json"))
            .expect("the dashboard is JSON");
    let queries = queries(&dashboard);
    assert!(queries.len() >= 10, "the dashboard lost its panels");

    let port = free_port();
    let _example = Example(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_prometheus"))
            .env("METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("ORDERS_PER_SEC", "500")
            .env_remove("NATS_URL")
            .kill_on_drop(true)
            .spawn()
            .expect("the example starts"),
    );
    // Until every metric the dashboard reads is there and orders have been
    // retried and dead-lettered (every 50th is declined until its budget
    // is spent), so the failure metrics have their labelled series.
    let wanted: BTreeSet<String> = queries.iter().flat_map(|q| metrics_in(q)).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = scrape(port).await.unwrap_or_default();
        let metrics = exported(&text);
        let complete = wanted.iter().all(|name| metrics.contains_key(name))
            && total(&text, "flowgate_messages_dead_lettered_total") >= 1.0
            && total(&text, "flowgate_retries_total") >= 1.0;
        if complete {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after 60 s the example exports {:?}; the dashboard reads {wanted:?}",
            metrics.keys().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let metrics = exported(&text);

    for query in &queries {
        let labels = labels_in(query);
        for name in metrics_in(query) {
            let series = &metrics[&name];
            for label in &labels {
                let carried = series.iter().all(|s| s.contains(label));
                assert!(
                    carried,
                    "`{query}` uses label `{label}`, which some series of {name} lack: {series:?}"
                );
            }
        }
    }
    // What the panels are about is really there.
    assert!(total(&text, "flowgate_messages_published_total") >= 1.0);
    let reasons: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("flowgate_messages_dead_lettered_total{"))
        .filter(|l| !l.ends_with(" 0"))
        .filter_map(|l| l.split("reason=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        reasons,
        BTreeSet::from(["budget_spent"]),
        "the declined orders"
    );
}
