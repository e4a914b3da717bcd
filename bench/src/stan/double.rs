//! The project's NATS Streaming protocol double, in a child process of its
//! own: the bench binary runs itself with [`SERVE_FLAG`], so the double's CPU
//! is not counted as the client's (it plays the streaming server).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flowgate_tests::stan_double::{DoubleConfig, StanDouble};

use crate::BenchError;

/// The hidden first argument that makes `bench` serve the double.
pub const SERVE_FLAG: &str = "--serve-stan-double";

/// The cluster id the double answers for.
pub const CLUSTER_ID: &str = "bench-cluster";

/// The double's settings: the reference server's ping interval (5 s) and a
/// heartbeat every second, so neither weighs on a run.
fn config() -> DoubleConfig {
    DoubleConfig {
        cluster_id: CLUSTER_ID.to_owned(),
        ping_interval: 5,
        ping_max_out: 88,
        heartbeat_interval: Duration::from_secs(1),
        heartbeat_max_misses: 10,
        client_check_timeout: Duration::from_secs(1),
    }
}

/// Serves the double on the nats-server at `url` until stdin closes (the
/// parent ended or dropped its [`DoubleProcess`]).
pub async fn serve(url: &str) -> Result<(), BenchError> {
    let double = StanDouble::start_with(url, config()).await;
    println!("ready");
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .is_ok_and(|read| read > 0)
        {
            sink.clear();
        }
    })
    .await?;
    drop(double);
    Ok(())
}

/// The double's child process; killed on drop.
#[derive(Debug)]
pub struct DoubleProcess {
    child: Child,
}

impl DoubleProcess {
    /// Starts `bench --serve-stan-double <url>` and waits until it answers.
    pub fn start(url: &str) -> Result<Self, BenchError> {
        let mut child = Command::new(std::env::current_exe()?)
            .args([SERVE_FLAG, url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("the double has no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.kill();
            return Err(format!("the NATS Streaming double did not start: `{line}`").into());
        }
        Ok(Self { child })
    }

    /// The double's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DoubleProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
