//! Credentials in connect URLs, and seed lists, on a real server: user info
//! in a URL is used to log in (user and password, or a token), no secret
//! reaches an error, a Debug output or a log line, and a seed list with a
//! dead server in it still connects.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Arc, Mutex, OnceLock};

use flowgate::{Error, JetStream, Publisher};
use flowgate_tests::NatsServer;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "secrets.pings")]
struct Ping {
    n: u32,
}

const PASSWORD: &str = "pw-5ecret-0xq";
const TOKEN: &str = "tok-5ecret-0xq";

/// Every log line of this test binary, at every level of every crate.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_writer(move || Capture(sink.clone()))
            .try_init();
        logs
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        flowgate_tests::lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [PASSWORD, TOKEN, "wrong-5ecret"] {
        assert!(!text.contains(secret), "{what} shows a secret: {text}");
    }
}

fn with_userinfo(url: &str, userinfo: &str) -> String {
    url.replacen("nats://", &format!("nats://{userinfo}@"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_in_the_url_log_in_and_stay_secret() {
    let logs = captured_logs();
    let server = NatsServer::start_with_user("alice", PASSWORD).await;

    let url = with_userinfo(&server.url(), &format!("alice:{PASSWORD}"));
    let nats = JetStream::connect(&url)
        .await
        .expect("the URL's credentials log in");
    Publisher::new(nats.clone())
        .publish(&Ping { n: 1 })
        .await
        .expect("published on the authenticated connection");
    assert_no_secret("the transport's Debug", &format!("{nats:?}"));

    let wrong = with_userinfo(&server.url(), "alice:wrong-5ecret");
    let err = JetStream::connect(&wrong)
        .await
        .expect_err("a wrong password is refused");
    assert!(matches!(err, Error::Connect { .. }), "got {err:?}");
    assert_no_secret("the error's Display", &err.to_string());
    assert_no_secret("the error's Debug", &format!("{err:?}"));
    assert!(
        err.to_string().contains(&server.url()),
        "the error names the server, without its secret: {err}"
    );
    assert_no_secret(
        "the logs",
        &String::from_utf8_lossy(&flowgate_tests::lock(&logs)),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_url_logs_in_and_stays_secret() {
    let logs = captured_logs();
    let server = NatsServer::start_with_token(TOKEN).await;
    let url = with_userinfo(&server.url(), TOKEN);
    let nats = JetStream::connect(&url)
        .await
        .expect("the URL's token logs in");
    Publisher::new(nats.clone())
        .publish(&Ping { n: 2 })
        .await
        .expect("published");
    let options = async_nats::ConnectOptions::with_token(TOKEN.to_owned());
    assert_no_secret("the options' Debug", &format!("{options:?}"));
    let refused = JetStream::connect(&server.url())
        .await
        .expect_err("no token, no entry");
    assert_no_secret("the error", &format!("{refused} {refused:?}"));
    assert_no_secret(
        "the logs",
        &String::from_utf8_lossy(&flowgate_tests::lock(&logs)),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_list_with_a_dead_server_connects_to_a_live_one() {
    let _ = captured_logs();
    let server = NatsServer::start().await;
    let dead = {
        let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free port");
        probe.local_addr().expect("its address").port()
    };
    let seeds = format!("nats://127.0.0.1:{dead}, {}", server.url());
    let options = async_nats::ConnectOptions::new().retry_on_initial_connect();
    let nats = tokio::time::timeout(
        flowgate_tests::DEADLINE,
        JetStream::connect_with_options(&seeds, options),
    )
    .await
    .expect("connects within the deadline")
    .expect("the live seed lets the client in");
    Publisher::new(nats)
        .publish(&Ping { n: 3 })
        .await
        .expect("published through the live seed");
}
