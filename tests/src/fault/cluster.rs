//! A JetStream cluster of real `nats-server`s on loopback, for failover tests.

use std::fmt::Write as _;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::server::{find_binary, free_port, jetstream_answers, NOT_FOUND};

/// How long a cluster may take to elect a meta leader and answer JetStream
/// on every node (and a restarted node to answer again).
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long [`NatsCluster::wait_for_stream_leader`] waits.
const LEADER_DEADLINE: Duration = Duration::from_secs(30);
/// Starting on fresh ports is retried this often when a port was taken
/// between finding it free and a node binding it.
const PORT_ATTEMPTS: usize = 3;
/// The cluster name every node is configured with.
const CLUSTER_NAME: &str = "flowgate-e2e";

/// A JetStream cluster of `nats-server`s on 127.0.0.1, owned by one test:
/// each node has its own client port, cluster (route) port, store directory
/// and `server_name` (`n0`, `n1`, ...), and routes to all the others. Every
/// node is killed when the cluster is dropped.
///
/// ```no_run
/// # async fn demo() {
/// let mut cluster = flowgate_tests::NatsCluster::start(3).await;
/// let nats = cluster.jetstream().await; // creates R3 streams
/// // ... create the stream "orders" ...
/// let leader = cluster.wait_for_stream_leader("orders").await;
/// cluster.kill(leader);
/// let next = cluster.wait_for_stream_leader("orders").await;
/// assert_ne!(next, leader);
/// # }
/// ```
#[derive(Debug)]
pub struct NatsCluster {
    binary: PathBuf,
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

#[derive(Debug)]
struct Node {
    name: String,
    client_port: u16,
    cluster_port: u16,
    child: Option<Child>,
    starts: usize,
}

impl NatsCluster {
    /// Starts a cluster of `size` nodes (3 for an R3 stream) and returns once
    /// a JetStream meta leader is elected: `$JS.API.INFO` answers without
    /// error on every node.
    ///
    /// Panics when `nats-server` is not installed or the cluster does not
    /// come up; the message holds every node's log.
    pub async fn start(size: usize) -> Self {
        assert!(size >= 1, "a cluster needs at least one node");
        let binary = find_binary().unwrap_or_else(|| panic!("{NOT_FOUND}"));
        let dir = tempfile::Builder::new()
            .prefix("flowgate-e2e-cluster-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for the cluster: {e}"));
        let mut cluster = NatsCluster {
            binary,
            dir,
            nodes: Vec::new(),
        };
        let mut last_failure = String::new();
        for _ in 0..PORT_ATTEMPTS {
            cluster.stop_all();
            cluster.nodes = (0..size)
                .map(|index| Node {
                    name: format!("n{index}"),
                    client_port: free_port(),
                    cluster_port: free_port(),
                    child: None,
                    starts: 0,
                })
                .collect();
            match cluster.spawn_all_and_wait().await {
                Ok(()) => {
                    cluster.wait_for_placement().await;
                    return cluster;
                }
                Err(failure) => last_failure = failure,
            }
        }
        panic!(
            "the {size}-node cluster did not start after {PORT_ATTEMPTS} attempts: {last_failure}"
        );
    }

    /// Waits until the meta leader knows every node as a peer: a stream with
    /// one replica per node can be placed (right after the cluster answers,
    /// newer servers may still say "no suitable peers for placement").
    async fn wait_for_placement(&self) {
        let context = async_nats::jetstream::new(self.client().await);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let config = async_nats::jetstream::stream::Config {
            name: "cluster_ready_probe".to_owned(),
            subjects: vec!["cluster.ready.probe".to_owned()],
            num_replicas: self.size().min(5),
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        };
        loop {
            match context.create_stream(config.clone()).await {
                Ok(_) => {
                    let _ = context.delete_stream("cluster_ready_probe").await;
                    return;
                }
                Err(err) if tokio::time::Instant::now() >= deadline => panic!(
                    "the cluster cannot place a {}-replica stream: {err}\n{}",
                    self.size(),
                    self.logs()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// How many nodes the cluster has (running or not).
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// The client URL of every node, the seed list for a client.
    pub fn urls(&self) -> Vec<String> {
        (0..self.size()).map(|index| self.node(index)).collect()
    }

    /// The client URL of node `index`, `nats://127.0.0.1:<port>`.
    pub fn node(&self, index: usize) -> String {
        format!("nats://127.0.0.1:{}", self.node_ref(index).client_port)
    }

    /// The client port of node `index` (kept across restarts).
    pub fn port(&self, index: usize) -> u16 {
        self.node_ref(index).client_port
    }

    /// The `server_name` of node `index` (`n<index>`), as the server reports
    /// it in cluster info.
    pub fn server_name(&self, index: usize) -> &str {
        &self.node_ref(index).name
    }

    /// The node whose `server_name` is `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// Whether node `index` is running (not killed).
    pub fn is_running(&self, index: usize) -> bool {
        self.node_ref(index).child.is_some()
    }

    /// The process id of node `index`, `None` while it is killed.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.node_ref(index).child.as_ref().map(Child::id)
    }

    /// Kills node `index` with SIGKILL and waits until the process is gone.
    /// Its store stays for [`restart`](Self::restart).
    pub fn kill(&mut self, index: usize) {
        stop(&mut self.nodes[index]);
    }

    /// Starts node `index` again (killing it first if it runs) with the same
    /// ports, name and store, and returns once JetStream answers on it.
    pub async fn restart(&mut self, index: usize) {
        stop(&mut self.nodes[index]);
        let deadline = Instant::now() + READY_DEADLINE;
        let ready = match self.spawn(index) {
            Ok(()) => self.wait_ready(index, deadline).await,
            Err(failure) => Err(failure),
        };
        if let Err(failure) = ready {
            panic!("node {index} did not restart: {failure}\n{}", self.logs());
        }
    }

    /// The node that leads stream `stream` now, from `$JS.API.STREAM.INFO`
    /// (`cluster.leader`) asked of the running nodes in turn; `None` when no
    /// running node answers with a leader, or the leader it names is not
    /// running (a killed node's name can linger until the next election).
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        self.leader_of(&format!("$JS.API.STREAM.INFO.{stream}"))
            .await
    }

    /// The node that leads consumer `consumer` of `stream` now (it holds the
    /// consumer's pull requests), as [`stream_leader`](Self::stream_leader).
    pub async fn consumer_leader(&self, stream: &str, consumer: &str) -> Option<usize> {
        self.leader_of(&format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"))
            .await
    }

    /// The running leader an info request on `subject` names.
    async fn leader_of(&self, subject: &str) -> Option<usize> {
        for index in (0..self.size()).filter(|&index| self.is_running(index)) {
            let Ok(info) = request_json(&self.node(index), subject).await else {
                continue;
            };
            let leader = info
                .pointer("/cluster/leader")
                .and_then(serde_json::Value::as_str)
                .and_then(|name| self.index_of(name));
            return leader.filter(|&leader| self.is_running(leader));
        }
        None
    }

    /// Waits until stream `stream` has a running leader and returns its node.
    ///
    /// Panics after 30s with every node's log.
    pub async fn wait_for_stream_leader(&self, stream: &str) -> usize {
        self.wait_for_leader(&format!("stream {stream}"), || self.stream_leader(stream))
            .await
    }

    /// Waits until consumer `consumer` of `stream` has a running leader and
    /// returns its node.
    ///
    /// Panics after 30s with every node's log.
    pub async fn wait_for_consumer_leader(&self, stream: &str, consumer: &str) -> usize {
        self.wait_for_leader(&format!("consumer {consumer} of {stream}"), || {
            self.consumer_leader(stream, consumer)
        })
        .await
    }

    async fn wait_for_leader<F, Fut>(&self, what: &str, leader: F) -> usize
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Option<usize>>,
    {
        let deadline = Instant::now() + LEADER_DEADLINE;
        loop {
            if let Some(leader) = leader().await {
                return leader;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{what} has no running leader after {LEADER_DEADLINE:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An async-nats client with every node as seed: it fails over to a
    /// running node when its node is killed.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(1))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(50 * u64::try_from(attempts).unwrap_or(u64::MAX))
                    .min(Duration::from_millis(250))
            })
            .connect(self.urls().as_slice())
            .await
            .unwrap_or_else(|e| panic!("connecting to the cluster {:?}: {e}", self.urls()))
    }

    /// A flowgate JetStream transport on [`client`](Self::client) that
    /// creates its streams with one replica per node (at most 5).
    pub async fn jetstream(&self) -> flowgate::JetStream {
        let settings = flowgate::JetStreamSettings::default().replicas(self.size().min(5));
        flowgate::JetStream::from_client(self.client().await).with_settings(settings)
    }

    /// The log of node `index` (all its starts so far).
    pub fn log(&self, index: usize) -> String {
        let node = self.node_ref(index);
        (1..=node.starts)
            .map(|start| std::fs::read_to_string(self.log_path(index, start)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- next start ---\n")
    }

    /// Every node's log, headed by its name, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for index in 0..self.size() {
            let _ = writeln!(
                all,
                "=== node {index} ({}) log ===\n{}",
                self.server_name(index),
                self.log(index)
            );
        }
        all
    }

    fn node_ref(&self, index: usize) -> &Node {
        self.nodes.get(index).unwrap_or_else(|| {
            panic!(
                "the cluster has {} nodes, there is no node {index}",
                self.nodes.len()
            )
        })
    }

    fn log_path(&self, index: usize, start: usize) -> PathBuf {
        self.dir.path().join(format!("n{index}-{start}.log"))
    }

    fn config(&self, index: usize) -> String {
        let node = &self.nodes[index];
        let routes = self
            .nodes
            .iter()
            .filter(|other| other.name != node.name)
            .map(|other| format!("\"nats-route://127.0.0.1:{}\"", other.cluster_port))
            .collect::<Vec<_>>()
            .join(", ");
        let store = self.dir.path().join(&node.name);
        format!(
            "server_name: \"{name}\"\n\
             listen: \"127.0.0.1:{client}\"\n\
             jetstream {{\n  store_dir: \"{store}\"\n}}\n\
             cluster {{\n  name: \"{CLUSTER_NAME}\"\n  listen: \"127.0.0.1:{cluster}\"\n  routes: [{routes}]\n}}\n",
            name = node.name,
            client = node.client_port,
            cluster = node.cluster_port,
            store = store.display(),
        )
    }

    fn spawn(&mut self, index: usize) -> Result<(), String> {
        let config = self.config(index);
        let config_path = self.dir.path().join(format!("n{index}.conf"));
        std::fs::write(&config_path, config)
            .map_err(|e| format!("writing {config_path:?}: {e}"))?;
        self.nodes[index].starts += 1;
        let log_path = self.log_path(index, self.nodes[index].starts);
        let log = File::create(&log_path).map_err(|e| format!("creating {log_path:?}: {e}"))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cloning the log file handle: {e}"))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("spawning {:?}: {e}", self.binary))?;
        self.nodes[index].child = Some(child);
        Ok(())
    }

    async fn spawn_all_and_wait(&mut self) -> Result<(), String> {
        for index in 0..self.size() {
            self.spawn(index)?;
        }
        let deadline = Instant::now() + READY_DEADLINE;
        for index in 0..self.size() {
            if let Err(failure) = self.wait_ready(index, deadline).await {
                return Err(format!("{failure}\n{}", self.logs()));
            }
        }
        Ok(())
    }

    /// Waits until JetStream answers on node `index` without error (in a
    /// cluster: a meta leader is known), or the node exits, or `deadline`.
    async fn wait_ready(&mut self, index: usize, deadline: Instant) -> Result<(), String> {
        let url = self.node(index);
        loop {
            if let Some(child) = self.nodes[index].child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.nodes[index].child = None;
                    return Err(format!(
                        "node {index} exited with {status} before it was ready"
                    ));
                }
            }
            let last_error = match jetstream_answers(&url, None).await {
                Ok(()) => return Ok(()),
                Err(err) => err,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "node {index} ({url}) not ready after {READY_DEADLINE:?} (last error: {last_error})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop_all(&mut self) {
        for node in &mut self.nodes {
            stop(node);
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn stop(node: &mut Node) {
    if let Some(mut child) = node.child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One request to one node (discovered servers ignored), its answer as JSON;
/// an answer holding an `error` is an error.
async fn request_json(url: &str, subject: &str) -> Result<serde_json::Value, String> {
    let client = async_nats::ConnectOptions::new()
        .ignore_discovered_servers()
        .connection_timeout(Duration::from_millis(500))
        // Short: a stream without a leader does not answer at all.
        .request_timeout(Some(Duration::from_millis(500)))
        .connect(url)
        .await
        .map_err(|e| format!("connect to {url}: {e}"))?;
    let answer = client
        .request(subject.to_owned(), "".into())
        .await
        .map_err(|e| format!("{subject}: {e}"))
        .and_then(|reply| {
            serde_json::from_slice::<serde_json::Value>(&reply.payload)
                .map_err(|e| format!("{subject}: the answer is not JSON: {e}"))
        });
    let _ = client.drain().await;
    match answer? {
        answer if answer.get("error").is_some() => Err(format!("{subject}: {answer}")),
        answer => Ok(answer),
    }
}
