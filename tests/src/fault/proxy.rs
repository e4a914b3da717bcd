//! A loopback TCP proxy between a NATS client and its server that freezes,
//! delays, cuts and refuses connections on command, while traffic flows.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::NatsServer;

/// Bytes read in one go from either side.
const CHUNK: usize = 16 * 1024;
/// Chunks a direction holds while frozen or delayed before it stops reading
/// (then TCP back-pressure holds the rest in the kernel buffers).
const HELD_CHUNKS: usize = 1024;

/// One direction of the traffic through a [`FaultProxy`], or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the server: publishes, subscribes, acks, requests.
    ClientToServer,
    /// From the server to the client: INFO, messages, replies, PONGs.
    ServerToClient,
    /// Both directions.
    Both,
}

impl Direction {
    fn indexes(self) -> &'static [usize] {
        match self {
            Direction::ClientToServer => &[C2S],
            Direction::ServerToClient => &[S2C],
            Direction::Both => &[C2S, S2C],
        }
    }
}

const C2S: usize = 0;
const S2C: usize = 1;

/// Where a [`FaultProxy`] forwards to: a loopback port, a socket address or
/// a [`NatsServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upstream(pub SocketAddr);

impl From<SocketAddr> for Upstream {
    fn from(addr: SocketAddr) -> Self {
        Upstream(addr)
    }
}

impl From<u16> for Upstream {
    fn from(port: u16) -> Self {
        Upstream(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }
}

impl From<&NatsServer> for Upstream {
    fn from(server: &NatsServer) -> Self {
        Upstream::from(server.port())
    }
}

/// A TCP proxy on a free port of 127.0.0.1 in front of one upstream server:
/// point a client at [`url`](Self::url) and inject faults into its
/// connection from the test while traffic flows.
///
/// Every accepted client connection gets its own upstream connection. The
/// controls apply to every connection, current and future:
///
/// * [`freeze`](Self::freeze) / [`thaw`](Self::thaw): hold the bytes of one
///   direction (not dropped, no connection closed) and flush them in order
///   on thaw, unless the connection is [`cut`](Self::cut) first.
/// * [`delay`](Self::delay): latency added to one direction.
/// * [`cut`](Self::cut): every current connection closed abruptly (reset,
///   held bytes dropped); new connections are accepted afterwards.
/// * [`refuse`](Self::refuse): while on, new connections are accepted and
///   reset at once, as if the server were down.
///
/// NATS servers advertise other addresses to clients (`connect_urls` in
/// INFO, when clustered); a client that adds them to its pool may reconnect
/// around the proxy. Connect with [`FaultProxy::connect_options`] (which
/// ignores discovered servers), or start the server with `--no_advertise`.
///
/// Dropping the proxy stops listening and cuts every connection.
///
/// ```no_run
/// # async fn demo() {
/// use flowgate_tests::{FaultProxy, NatsServer, fault::Direction};
/// let server = NatsServer::start().await;
/// let proxy = FaultProxy::start(&server).await;
/// let nats = proxy.jetstream().await;
/// proxy.freeze(Direction::ServerToClient); // replies are held...
/// proxy.thaw(Direction::ServerToClient); // ...and delivered
/// proxy.cut(); // the client reconnects through the proxy
/// # }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    frozen: [watch::Sender<bool>; 2],
    delay: [Mutex<Duration>; 2],
    refuse: AtomicBool,
    /// Bumped by every cut; each connection watches it.
    cuts: watch::Sender<u64>,
    accepted: AtomicUsize,
    refused: AtomicUsize,
    open: AtomicUsize,
    forwarded: [AtomicU64; 2],
}

impl Shared {
    fn delay(&self, direction: usize) -> Duration {
        *crate::lock(&self.delay[direction])
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (a port of 127.0.0.1, a socket address or
    /// a [`NatsServer`]) listening on a free port of 127.0.0.1.
    ///
    /// Panics when it cannot listen.
    pub async fn start(upstream: impl Into<Upstream>) -> Self {
        let Upstream(upstream) = upstream.into();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap_or_else(|e| panic!("fault proxy: cannot listen on 127.0.0.1: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fault proxy: local address of the listener: {e}"));
        let shared = Arc::new(Shared {
            upstream,
            frozen: [watch::Sender::new(false), watch::Sender::new(false)],
            delay: [Mutex::new(Duration::ZERO), Mutex::new(Duration::ZERO)],
            refuse: AtomicBool::new(false),
            cuts: watch::Sender::new(0),
            accepted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            forwarded: [AtomicU64::new(0), AtomicU64::new(0)],
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        FaultProxy {
            addr,
            shared,
            accept,
        }
    }

    /// The URL clients connect to, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Stops forwarding `direction`: bytes read from then on are held, in
    /// order, until [`thaw`](Self::thaw) (or dropped by a [`cut`](Self::cut)).
    /// No connection is closed. A chunk already being written when this is
    /// called still goes through.
    pub fn freeze(&self, direction: Direction) {
        for &index in direction.indexes() {
            self.shared.frozen[index].send_replace(true);
        }
    }

    /// Resumes forwarding `direction`; the held bytes are written first.
    pub fn thaw(&self, direction: Direction) {
        for &index in direction.indexes() {
            self.shared.frozen[index].send_replace(false);
        }
    }

    /// Holds every chunk of `direction` for `latency` after the proxy read it.
    /// Applies to bytes read from now on; `Duration::ZERO` removes the delay.
    /// Order is kept: bytes read after a shorter delay is set still wait
    /// behind those read before.
    pub fn delay(&self, direction: Direction, latency: Duration) {
        for &index in direction.indexes() {
            *crate::lock(&self.shared.delay[index]) = latency;
        }
    }

    /// Closes every current connection abruptly on both sides (a TCP reset;
    /// held bytes are dropped). Connections made afterwards are served.
    pub fn cut(&self) {
        self.shared.cuts.send_modify(|cuts| *cuts += 1);
    }

    /// While `refusing`, new connections are accepted and reset at once, as if
    /// the server were down. Current connections are left alone: [`cut`](Self::cut)
    /// them too to take the server away.
    pub fn refuse(&self, refusing: bool) {
        self.shared.refuse.store(refusing, Ordering::SeqCst);
    }

    /// Client connections accepted and forwarded so far (refused ones not
    /// counted).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Client connections refused so far (see [`refuse`](Self::refuse)).
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Client connections open through the proxy right now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Bytes handed to the receiving side in `direction` so far, over all
    /// connections ([`Direction::Both`]: the sum). Held bytes are not counted
    /// until they are forwarded.
    pub fn bytes_forwarded(&self, direction: Direction) -> u64 {
        direction
            .indexes()
            .iter()
            .map(|&index| self.shared.forwarded[index].load(Ordering::SeqCst))
            .sum()
    }

    /// async-nats options suited to connecting through a proxy in fault
    /// tests: discovered servers ignored (reconnects come back through the
    /// proxy), the first reconnect at once and the next ones at most 250ms
    /// apart, a 1s connect timeout, unlimited reconnects. Pings stay at
    /// async-nats' default (every 60s), so a freeze does not make the client
    /// drop the connection as stale; add `.ping_interval(..)` for that.
    pub fn connect_options() -> async_nats::ConnectOptions {
        async_nats::ConnectOptions::new()
            .ignore_discovered_servers()
            .retain_servers_order()
            .connection_timeout(Duration::from_secs(1))
            .max_reconnects(None)
            .reconnect_delay_callback(reconnect_delay)
    }

    /// Connects a flowgate JetStream transport through the proxy with
    /// [`connect_options`](Self::connect_options).
    pub async fn jetstream(&self) -> flowgate::JetStream {
        self.jetstream_with(Self::connect_options()).await
    }

    /// Connects a flowgate JetStream transport through the proxy with your
    /// own `options` (start from [`connect_options`](Self::connect_options)).
    pub async fn jetstream_with(&self, options: async_nats::ConnectOptions) -> flowgate::JetStream {
        flowgate::JetStream::connect_with_options(&self.url(), options)
            .await
            .unwrap_or_else(|e| panic!("connecting through the fault proxy {}: {e}", self.url()))
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The delay before reconnect attempt `attempts` (1 = the first).
fn reconnect_delay(attempts: usize) -> Duration {
    let step = Duration::from_millis(50);
    let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
    (step * attempts.saturating_sub(1)).min(Duration::from_millis(250))
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(err) => {
                tracing::warn!(error = %err, "fault proxy: accept failed");
                // Pacing after a failed accept (out of descriptors, say).
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shared.refuse.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let cuts = shared.cuts.subscribe();
        tokio::spawn(serve(client, shared.clone(), cuts));
    }
}

/// Counts a connection as open while alive.
struct OpenGuard<'a>(&'a AtomicUsize);

impl<'a> OpenGuard<'a> {
    fn new(open: &'a AtomicUsize) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        OpenGuard(open)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Forwards one client connection until either side closes or a cut.
async fn serve(client: TcpStream, shared: Arc<Shared>, mut cuts: watch::Receiver<u64>) {
    let _open = OpenGuard::new(&shared.open);
    let server = tokio::select! {
        biased;
        _ = cuts.changed() => {
            let _ = client.set_zero_linger();
            return;
        }
        server = TcpStream::connect(shared.upstream) => match server {
            Ok(server) => server,
            Err(err) => {
                tracing::debug!(upstream = %shared.upstream, error = %err, "fault proxy: upstream connect failed");
                let _ = client.set_zero_linger();
                return;
            }
        },
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let cut = tokio::select! {
        biased;
        _ = cuts.changed() => true,
        () = pump(&mut client_read, &mut server_write, C2S, &shared) => false,
        () = pump(&mut server_read, &mut client_write, S2C, &shared) => false,
    };
    if cut {
        // Closing with SO_LINGER 0 resets both connections: no FIN, no
        // flushing of what the kernel still buffers.
        let _ = AsRef::<TcpStream>::as_ref(&client_read).set_zero_linger();
        let _ = AsRef::<TcpStream>::as_ref(&server_read).set_zero_linger();
    }
}

/// Copies one direction, chunk by chunk, honouring its freeze and delay.
/// Returns when the source is done and what was read is written, or at once
/// when the destination fails.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    direction: usize,
    shared: &Shared,
) {
    let (held_tx, mut held) = mpsc::channel::<(Instant, Bytes)>(HELD_CHUNKS);
    let read = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due = Instant::now() + shared.delay(direction);
                    let chunk = Bytes::copy_from_slice(&buf[..n]);
                    if held_tx.send((due, chunk)).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let mut frozen = shared.frozen[direction].subscribe();
    let write = async {
        while let Some((due, chunk)) = held.recv().await {
            tokio::time::sleep_until(due).await;
            if frozen.wait_for(|frozen| !*frozen).await.is_err() {
                return;
            }
            // Counted before the write: the receiver may act on the bytes
            // before this task runs again.
            shared.forwarded[direction].fetch_add(chunk.len() as u64, Ordering::SeqCst);
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::pin!(write);
    tokio::select! {
        () = &mut write => return,
        () = read => {}
    }
    // The source is done: what it sent is still written (after a thaw).
    write.await;
}
