//! A real `nats-server -js` per test, on a free port with its own store.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// How long a server may take to accept connections and answer JetStream.
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// Starting on a fresh port is retried this often when the port was taken
/// between finding it free and the server binding it.
const PORT_ATTEMPTS: usize = 5;

pub(crate) const NOT_FOUND: &str = "nats-server not found: install it with `apt-get update && apt-get install -y nats-server`, point FLOWGATE_NATS_SERVER at one, or run the README's test command, which installs the tested versions";

/// A `nats-server` with JetStream enabled, owned by one test: its own port,
/// its own store directory, stopped when dropped.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: usize,
    auth: Option<Auth>,
    extra_args: Vec<String>,
}

impl NatsServer {
    /// Starts a server on a free port of 127.0.0.1 with a fresh store, and
    /// returns once it accepts connections and JetStream answers.
    ///
    /// Panics when `nats-server` is not installed or does not come up.
    pub async fn start() -> Self {
        Self::start_configured(None, Vec::new(), None).await
    }

    /// Starts a server like [`start`](Self::start) that only lets in clients
    /// presenting `token` (`nats-server --auth`).
    pub async fn start_with_token(token: &str) -> Self {
        Self::start_configured(Some(Auth::Token(token.to_owned())), Vec::new(), None).await
    }

    /// Starts a server like [`start`](Self::start) that only lets in `user`
    /// with `password` (`nats-server --user --pass`).
    pub async fn start_with_user(user: &str, password: &str) -> Self {
        let auth = Auth::User(user.to_owned(), password.to_owned());
        Self::start_configured(Some(auth), Vec::new(), None).await
    }

    /// Starts a server like [`start`](Self::start) with `args` added to its
    /// command line on every start (restarts too), e.g. `["--no_advertise"]`.
    pub async fn start_with_args<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args = args.into_iter().map(Into::into).collect();
        Self::start_configured(None, args, None).await
    }

    /// Starts a server like [`start`](Self::start) that also reads `config`
    /// (nats-server config file syntax, written to the server's temp dir).
    /// The port, address and store of [`start`](Self::start) are given on the
    /// command line and win over the file.
    pub async fn start_with_config(config: &str) -> Self {
        Self::start_configured(None, Vec::new(), Some(config)).await
    }

    async fn start_configured(
        auth: Option<Auth>,
        mut extra_args: Vec<String>,
        config: Option<&str>,
    ) -> Self {
        let binary = find_binary().unwrap_or_else(|| panic!("{NOT_FOUND}"));
        let dir = tempfile::Builder::new()
            .prefix("flowgate-e2e-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for the server's store: {e}"));
        if let Some(config) = config {
            let path = dir.path().join("server.conf");
            std::fs::write(&path, config)
                .unwrap_or_else(|e| panic!("cannot write the server config {path:?}: {e}"));
            extra_args.extend(["-c".to_owned(), path.display().to_string()]);
        }
        let mut server = NatsServer {
            binary,
            port: 0,
            dir,
            child: None,
            starts: 0,
            auth,
            extra_args,
        };
        let mut last_failure = String::new();
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port();
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                Err(failure) => {
                    last_failure = failure;
                    server.stop();
                }
            }
        }
        panic!("nats-server did not start after {PORT_ATTEMPTS} attempts: {last_failure}");
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the running server, `None` while it is killed.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Connects a flowgate JetStream transport to this server.
    pub async fn jetstream(&self) -> flowgate::JetStream {
        flowgate::JetStream::connect(&self.url())
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url()))
    }

    /// Kills the server with SIGKILL, no goodbye to clients, and waits until
    /// the process is gone. The store stays for [`restart`](Self::restart).
    pub fn kill(&mut self) {
        self.stop();
    }

    /// Starts the server again on the same port with the same store (after
    /// [`kill`](Self::kill), or killing it first), and returns once it is ready.
    pub async fn restart(&mut self) {
        self.stop();
        if let Err(failure) = self.spawn_and_wait().await {
            panic!(
                "nats-server did not restart on port {}: {failure}",
                self.port
            );
        }
    }

    /// The server's log (all starts so far), for failure messages.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- next start ---\n")
    }

    fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn log_path(&self, start: usize) -> PathBuf {
        self.dir.path().join(format!("server-{start}.log"))
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log_path = self.log_path(self.starts);
        let log = File::create(&log_path).map_err(|e| format!("creating {log_path:?}: {e}"))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cloning the log file handle: {e}"))?;
        let child = Command::new(&self.binary)
            .arg("-js")
            .arg("-sd")
            .arg(self.store_dir())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(self.auth.iter().flat_map(Auth::args))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("spawning {:?}: {e}", self.binary))?;
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "nats-server exited with {status} before it was ready; its log:\n{}",
                        self.log()
                    ));
                }
            }
            let last_error = match jetstream_answers(&self.url(), self.auth.as_ref()).await {
                Ok(()) => return Ok(()),
                Err(err) => err,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "nats-server on port {} not ready after {READY_DEADLINE:?} (last error: {last_error}); its log:\n{}",
                    self.port,
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How clients must authenticate to a test server.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    Token(String),
    User(String, String),
}

impl Auth {
    fn args(&self) -> Vec<&str> {
        match self {
            Auth::Token(token) => vec!["--auth", token],
            Auth::User(user, password) => vec!["--user", user, "--pass", password],
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Connects and asks JetStream for the account info: both must work.
pub(crate) async fn jetstream_answers(url: &str, auth: Option<&Auth>) -> Result<(), String> {
    let options = match auth {
        Some(Auth::Token(token)) => async_nats::ConnectOptions::with_token(token.clone()),
        Some(Auth::User(user, password)) => {
            async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        None => async_nats::ConnectOptions::new(),
    };
    let options = options
        .connection_timeout(Duration::from_millis(500))
        .request_timeout(Some(Duration::from_secs(1)));
    let client = options
        .connect(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // A raw request: async-nats' typed account info does not parse every
    // server version's answer, and all this needs is that JetStream answers.
    let result = match client.request("$JS.API.INFO", "".into()).await {
        Ok(reply) => match serde_json::from_slice::<serde_json::Value>(&reply.payload) {
            Ok(answer) if answer.get("error").is_none() => Ok(()),
            Ok(answer) => Err(format!("JetStream answered with an error: {answer}")),
            Err(e) => Err(format!("JetStream answer is not JSON: {e}")),
        },
        Err(e) => Err(format!("JetStream info request: {e}")),
    };
    let _ = client.drain().await;
    result
}

/// A port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0 to find a free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local address of the probe socket: {e}"))
        .port()
}

/// The variable that points every test at one `nats-server` binary (the
/// README's test command sets it for each server version it runs).
pub const SERVER_VAR: &str = "FLOWGATE_NATS_SERVER";

/// The `nats-server` the tests run: the one [`SERVER_VAR`] names, else the
/// first on PATH or in the usual system locations.
#[derive(Debug, Clone)]
pub struct ServerBinary {
    /// Where it is.
    pub path: PathBuf,
    /// What `nats-server --version` says, e.g. `2.12.8`.
    pub version: String,
}

/// The server binary of this test process, found once; the first call prints
/// which one it is (past the test harness' capture, so every test binary's
/// run shows it). `None` when there is none; panics when [`SERVER_VAR`]
/// names something that is not an executable `nats-server`.
pub fn server_binary() -> Option<&'static ServerBinary> {
    static FOUND: std::sync::OnceLock<Option<ServerBinary>> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            let found = locate_binary().map(|path| ServerBinary {
                version: binary_version(&path),
                path,
            });
            if let Some(binary) = &found {
                use std::io::Write;
                let chosen = if std::env::var_os(SERVER_VAR).is_some() {
                    format!("from {SERVER_VAR}")
                } else {
                    format!("found on PATH; set {SERVER_VAR} to choose another")
                };
                let _ = writeln!(
                    std::io::stderr(),
                    "flowgate-tests: nats-server {} at {} ({chosen})",
                    binary.version,
                    binary.path.display()
                );
            }
            found
        })
        .as_ref()
}

/// The path of [`server_binary`].
pub(crate) fn find_binary() -> Option<PathBuf> {
    server_binary().map(|binary| binary.path.clone())
}

fn locate_binary() -> Option<PathBuf> {
    if let Some(chosen) = std::env::var_os(SERVER_VAR).filter(|value| !value.is_empty()) {
        let path = PathBuf::from(chosen);
        assert!(
            is_executable(&path),
            "{SERVER_VAR}={} is not an executable file: point it at a nats-server binary \
             (./scripts/test installs the pinned versions under ~/.cache/flowgate/nats-server/<version>/)",
            path.display()
        );
        return Some(path);
    }
    let from_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let system = ["/usr/sbin", "/usr/local/bin", "/usr/bin", "/usr/local/sbin"]
        .iter()
        .map(PathBuf::from);
    from_path
        .into_iter()
        .chain(system)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| is_executable(candidate))
}

/// `2.12.8` from `nats-server: v2.12.8`; panics when the binary does not
/// answer `--version` like a nats-server.
fn binary_version(path: &Path) -> String {
    let output = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running `{} --version`: {e}", path.display()));
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .strip_prefix("nats-server: v")
        .map(str::to_owned)
        .unwrap_or_else(|| {
            panic!(
                "`{} --version` printed {:?}, not a nats-server version",
                path.display(),
                text.trim()
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
