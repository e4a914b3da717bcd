//! What the connected nats-server can do: its version (from the `INFO` it
//! sends at connect, so reading it costs nothing), its JetStream API level
//! (asked for on demand), and which JetStream features need a newer server
//! than the oldest flowgate runs on (2.9).
//!
//! A feature that needs a newer server is refused by [`JetStream::require`]
//! with [`ServerTooOld`], which names the feature, the version it needs and
//! the version the server runs, instead of the raw API error an old server
//! would answer with (or, worse, a setting it silently ignores).

use std::fmt;

use super::JetStream;
use crate::Error;

/// A nats-server release, `major.minor.patch`. A pre-release or build suffix
/// (`2.11.0-RC.1`) is ignored: it orders as the release it leads to.
///
/// ```
/// use flowgate::ServerVersion;
///
/// let version = ServerVersion::parse("v2.10.26").expect("a version");
/// assert_eq!(version, ServerVersion::new(2, 10, 26));
/// assert!(version < ServerVersion::new(2, 11, 0));
/// assert_eq!(version.to_string(), "2.10.26");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl ServerVersion {
    /// The version `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses what the server reports (`2.10.26`, `v2.9.10`, `2.11.0-RC.1`);
    /// `None` for anything else. A missing patch number reads as 0.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let text = text.strip_prefix('v').unwrap_or(text);
        let release = text.split(['-', '+']).next()?;
        let mut parts = release.split('.');
        let number = |part: Option<&str>| part.and_then(|p| p.parse::<u32>().ok());
        let major = number(parts.next())?;
        let minor = number(parts.next())?;
        let patch = match parts.next() {
            Some(part) => number(Some(part))?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self::new(major, minor, patch))
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A JetStream feature that needs a newer nats-server than 2.9, the oldest
/// flowgate is tested on. Ask [`JetStream::require`] before using one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerFeature {
    /// A consumer filtering on several subjects (`filter_subjects`): 2.10.
    MultipleFilterSubjects,
    /// Metadata on streams and consumers: 2.10.
    Metadata,
    /// Subject transforms on streams: 2.10.
    SubjectTransforms,
    /// Compressed file-store streams: 2.10.
    StreamCompression,
    /// Priority groups on pull consumers (pinned client, overflow): 2.11.
    PriorityGroups,
    /// Pausing a consumer until a deadline: 2.11.
    ConsumerPause,
    /// Per-message TTLs (`Nats-TTL` header, `allow_msg_ttl` streams): 2.11.
    PerMessageTtl,
    /// Atomic batch publishing: 2.12.
    AtomicBatchPublish,
}

impl ServerFeature {
    /// The first nats-server release that has the feature.
    pub const fn since(self) -> ServerVersion {
        match self {
            ServerFeature::MultipleFilterSubjects
            | ServerFeature::Metadata
            | ServerFeature::SubjectTransforms
            | ServerFeature::StreamCompression => ServerVersion::new(2, 10, 0),
            ServerFeature::PriorityGroups
            | ServerFeature::ConsumerPause
            | ServerFeature::PerMessageTtl => ServerVersion::new(2, 11, 0),
            ServerFeature::AtomicBatchPublish => ServerVersion::new(2, 12, 0),
        }
    }

    /// Whether a server of `version` has the feature.
    pub fn available_on(self, version: ServerVersion) -> bool {
        version >= self.since()
    }

    /// Refuses the feature on a server older than it with [`ServerTooOld`].
    ///
    /// ```
    /// use flowgate::{ServerFeature, ServerVersion};
    ///
    /// let old = ServerVersion::new(2, 9, 10);
    /// let err = ServerFeature::MultipleFilterSubjects.check(old).unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "consumers with several filter subjects: needs nats-server 2.10.0 or newer, \
    ///      but the server runs 2.9.10; upgrade the server or leave the feature off"
    /// );
    /// assert!(ServerFeature::MultipleFilterSubjects.check(ServerVersion::new(2, 10, 26)).is_ok());
    /// ```
    pub fn check(self, version: ServerVersion) -> Result<(), ServerTooOld> {
        if self.available_on(version) {
            Ok(())
        } else {
            Err(ServerTooOld {
                feature: self,
                needs: self.since(),
                server: version,
            })
        }
    }
}

impl fmt::Display for ServerFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerFeature::MultipleFilterSubjects => "consumers with several filter subjects",
            ServerFeature::Metadata => "stream and consumer metadata",
            ServerFeature::SubjectTransforms => "stream subject transforms",
            ServerFeature::StreamCompression => "stream compression",
            ServerFeature::PriorityGroups => "priority groups (pinned clients, overflow)",
            ServerFeature::ConsumerPause => "pausing consumers",
            ServerFeature::PerMessageTtl => "per-message TTLs",
            ServerFeature::AtomicBatchPublish => "atomic batch publishing",
        })
    }
}

/// A requested JetStream feature needs a newer nats-server than the one
/// connected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{feature}: needs nats-server {needs} or newer, but the server runs {server}; upgrade the server or leave the feature off")]
pub struct ServerTooOld {
    /// The feature asked for.
    pub feature: ServerFeature,
    /// The first release that has it.
    pub needs: ServerVersion,
    /// The connected server's version.
    pub server: ServerVersion,
}

impl JetStream {
    /// The version of the server this connection talks to now (it may change
    /// when a reconnect lands on another server of a cluster); `None` when
    /// the server reported none that parses.
    pub fn server_version(&self) -> Option<ServerVersion> {
        ServerVersion::parse(&self.client.server_info().version)
    }

    /// Refuses `feature` with [`Error::ServerTooOld`] when the connected
    /// server is older than the feature. A server whose version does not
    /// parse is let through: it answers for itself.
    pub fn require(&self, feature: ServerFeature) -> Result<(), Error> {
        match self.server_version() {
            Some(version) => feature.check(version).map_err(Error::from),
            None => Ok(()),
        }
    }

    /// The JetStream API level the server reports (`$JS.API.INFO`): 0 for
    /// servers before 2.11, which report none.
    pub async fn api_level(&self) -> Result<u64, Error> {
        let reply = self
            .client
            .request("$JS.API.INFO", bytes::Bytes::new())
            .await
            .map_err(|e| Error::Broker(Box::new(e)))?;
        api_level_of(&reply.payload)
    }
}

/// Logs which server a new connection talks to.
pub(super) fn log_server(client: &async_nats::Client) {
    let info = client.server_info();
    tracing::debug!(
        server = %info.server_name,
        version = %info.version,
        jetstream = info.jetstream,
        "connected to nats-server"
    );
}

/// The API level in a `$JS.API.INFO` answer.
fn api_level_of(answer: &[u8]) -> Result<u64, Error> {
    let answer: serde_json::Value = serde_json::from_slice(answer)
        .map_err(|e| Error::Broker(format!("JetStream account info is not JSON: {e}").into()))?;
    if let Some(error) = answer.get("error") {
        return Err(Error::Broker(
            format!("JetStream account info failed: {error}").into(),
        ));
    }
    Ok(answer
        .pointer("/api/level")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_as_servers_report_them() {
        assert_eq!(
            ServerVersion::parse("2.9.10"),
            Some(ServerVersion::new(2, 9, 10))
        );
        assert_eq!(
            ServerVersion::parse("v2.15.1"),
            Some(ServerVersion::new(2, 15, 1))
        );
        assert_eq!(
            ServerVersion::parse("2.11.0-RC.1"),
            Some(ServerVersion::new(2, 11, 0))
        );
        assert_eq!(
            ServerVersion::parse("2.12"),
            Some(ServerVersion::new(2, 12, 0))
        );
        for junk in ["", "v", "2", "two.ten", "2.10.x", "2.10.1.4"] {
            assert_eq!(ServerVersion::parse(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn versions_order_numerically() {
        let v = ServerVersion::parse;
        assert!(v("2.9.10") < v("2.10.0"));
        assert!(v("2.10.26") < v("2.11.0"));
        assert!(v("2.12.8") < v("2.15.1"));
    }

    #[test]
    fn features_of_2_10_are_refused_on_2_9_and_named_in_the_error() {
        let old = ServerVersion::new(2, 9, 10);
        let err = ServerFeature::Metadata
            .check(old)
            .expect_err("2.9 has no metadata");
        assert_eq!(err.needs, ServerVersion::new(2, 10, 0));
        assert_eq!(err.server, old);
        let message = Error::from(err).to_string();
        assert!(
            message.contains("stream and consumer metadata"),
            "{message}"
        );
        assert!(message.contains("2.10.0 or newer"), "{message}");
        assert!(message.contains("runs 2.9.10"), "{message}");

        assert!(ServerFeature::Metadata
            .check(ServerVersion::new(2, 10, 0))
            .is_ok());
        assert!(ServerFeature::PriorityGroups
            .check(ServerVersion::new(2, 10, 26))
            .is_err());
        assert!(ServerFeature::PriorityGroups
            .check(ServerVersion::new(2, 12, 8))
            .is_ok());
    }

    #[test]
    fn api_level_reads_the_account_info_and_is_zero_before_2_11() {
        let modern = br#"{"type":"io.nats.jetstream.api.v1.account_info_response","api":{"level":5,"total":0,"errors":0}}"#;
        assert_eq!(api_level_of(modern).expect("level"), 5);
        let old = br#"{"type":"io.nats.jetstream.api.v1.account_info_response","api":{"total":0,"errors":0}}"#;
        assert_eq!(api_level_of(old).expect("level"), 0);
        let refused = br#"{"error":{"code":503,"description":"JetStream not enabled"}}"#;
        assert!(api_level_of(refused).is_err());
    }
}
