//! The subscribers of the framework side.

use std::convert::Infallible;
use std::time::Duration;

use super::event::BenchEvent;

/// The simulated I/O of case 2.
pub const IO_DELAY: Duration = Duration::from_millis(2);

/// Case 1: decode and return.
#[flowgate::subscriber(
    channel = "bench.consume",
    durable = "bench",
    start = "all",
    max_in_flight = 1024
)]
pub async fn consume(event: BenchEvent) -> Result<(), Infallible> {
    std::hint::black_box(&event);
    Ok(())
}

/// Case 2: decode, await 2 ms of simulated I/O, return.
#[flowgate::subscriber(
    channel = "bench.io",
    durable = "bench",
    start = "all",
    max_in_flight = 1024
)]
pub async fn consume_io(event: BenchEvent) -> Result<(), Infallible> {
    tokio::time::sleep(IO_DELAY).await;
    std::hint::black_box(&event);
    Ok(())
}
