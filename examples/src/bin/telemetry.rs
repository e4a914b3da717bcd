//! Protobuf payloads on JetStream.
//!
//! ```text
//! nats-server -js &
//! NATS_URL=nats://127.0.0.1:4222 cargo run -p flowgate-examples --bin telemetry
//! ```
//!
//! The `Reading` type is generated from `proto/telemetry.proto` at build time
//! (prost-build + protox, no `protoc` needed) and derives `flowgate::Event`
//! with `codec = "protobuf"`. The example publishes readings through a window
//! of outstanding acks, averages them per sensor in a subscriber, and exits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use flowgate::{App, Publisher, State};
use flowgate_examples::telemetry::Reading;

const READINGS: usize = 1_000;

/// The running sums per sensor, and how many readings came: the app's state.
#[derive(Debug, Clone, Default)]
struct Averages(Arc<Sums>);

#[derive(Debug, Default)]
struct Sums {
    by_sensor: Mutex<HashMap<String, (f64, u32)>>,
    received: AtomicUsize,
}

/// Adds each reading to its sensor's running average.
#[flowgate::subscriber(max_in_flight = 256)]
async fn record(
    reading: Reading,
    State(averages): State<Averages>,
) -> Result<(), std::convert::Infallible> {
    if let Ok(mut sums) = averages.0.by_sensor.lock() {
        let entry = sums.entry(reading.sensor_id).or_default();
        entry.0 += reading.value;
        entry.1 += 1;
    }
    averages.0.received.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    flowgate_examples::exit_code(demo().await)
}

async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    flowgate_examples::init_logging();
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let nats = flowgate::JetStream::connect(&url).await?;
    println!("connected to {url}");

    let averages = Averages::default();
    let app = App::new()
        .state(averages.clone())
        .subscriber(record::subscriber())
        .start(nats.clone())
        .await?;

    let publisher = Publisher::new(nats);
    let mut window = publisher.window(128);
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_millis() as i64;
    for i in 0..READINGS {
        let reading = Reading {
            sensor_id: format!("sensor-{}", i % 4),
            value: 20.0 + (i % 10) as f64 / 10.0,
            taken_at_unix_ms: now_ms + i as i64,
        };
        window.publish(&reading).await?;
    }
    window.flush().await?;
    println!("published {READINGS} readings");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while averages.0.received.load(Ordering::Relaxed) < READINGS {
        if tokio::time::Instant::now() > deadline {
            return Err("readings were not all received within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.shutdown().await?;

    let sums = averages.0.by_sensor.lock().map_err(|_| "lock poisoned")?;
    let mut sensors: Vec<_> = sums.iter().collect();
    sensors.sort_by(|a, b| a.0.cmp(b.0));
    for (sensor, (sum, count)) in sensors {
        println!(
            "{sensor}: {count} readings, average {:.2}",
            sum / f64::from(*count)
        );
    }
    Ok(())
}
