//! Where to connect: one NATS URL or a comma-separated seed list, with any
//! credentials in the URLs moved into the connect options and kept out of
//! every error and log line.

use async_nats::ServerAddr;

use crate::Error;

/// The servers to connect to, without credentials, and the credentials the
/// URLs carried.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Seeds {
    /// The URLs with their user info taken out.
    pub(crate) urls: Vec<String>,
    /// What the URLs' user info said.
    pub(crate) credentials: Option<Credentials>,
}

/// Credentials from a URL's user info: `user:password@` or `token@`.
#[derive(PartialEq, Eq)]
pub(crate) enum Credentials {
    UserPassword(String, String),
    Token(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::UserPassword(user, _) => write!(f, "UserPassword({user:?}, ***)"),
            Credentials::Token(_) => write!(f, "Token(***)"),
        }
    }
}

impl Seeds {
    /// Reads `urls`: one URL, or several separated by commas.
    pub(crate) fn parse(urls: &str) -> Result<Self, Error> {
        let mut seeds = Seeds {
            urls: Vec::new(),
            credentials: None,
        };
        for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let (bare, userinfo) = split_userinfo(url);
            let addr: ServerAddr = url.parse().map_err(|e| Error::Connect {
                url: redact(url),
                source: Box::new(e),
            })?;
            if userinfo.is_some() {
                let found = match (addr.username(), addr.password()) {
                    (Some(user), Some(password)) => {
                        Credentials::UserPassword(decode(user), decode(password))
                    }
                    (Some(token), None) => Credentials::Token(decode(token)),
                    _ => continue,
                };
                match &seeds.credentials {
                    Some(known) if *known != found => {
                        return Err(Error::Config(format!(
                            "the seed URLs carry different credentials ({}): give every URL the same, or none and set them in the connect options",
                            redact(urls)
                        )))
                    }
                    _ => seeds.credentials = Some(found),
                }
            }
            seeds.urls.push(bare);
        }
        if seeds.urls.is_empty() {
            return Err(Error::Config(
                "no NATS URL given: pass one, like nats://127.0.0.1:4222, or a comma-separated seed list".to_owned(),
            ));
        }
        Ok(seeds)
    }

    /// The seed list as it may be shown (no credentials).
    pub(crate) fn shown(&self) -> String {
        self.urls.join(",")
    }

    /// Adds the URLs' credentials to `options`.
    pub(crate) fn apply(&self, options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        match &self.credentials {
            Some(Credentials::UserPassword(user, password)) => {
                options.user_and_password(user.clone(), password.clone())
            }
            Some(Credentials::Token(token)) => options.token(token.clone()),
            None => options,
        }
    }
}

/// `url` without its user info, and the user info.
fn split_userinfo(url: &str) -> (String, Option<&str>) {
    let (scheme, rest) = match url.find("://") {
        Some(at) => (&url[..at + 3], &url[at + 3..]),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => (format!("{scheme}{}", &rest[at + 1..]), Some(&rest[..at])),
        None => (url.to_owned(), None),
    }
}

/// `urls` with every user info replaced by `***`, for errors and logs.
pub(crate) fn redact(urls: &str) -> String {
    urls.split(',')
        .map(|url| match split_userinfo(url.trim()) {
            (bare, Some(_)) => match bare.find("://") {
                Some(at) => format!("{}***@{}", &bare[..at + 3], &bare[at + 3..]),
                None => format!("***@{bare}"),
            },
            (bare, None) => bare,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Percent-decodes user info (`%40` → `@`).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_urls() {
        let seeds = Seeds::parse(
            "nats://alice:s%40cret@127.0.0.1:4222, nats://alice:s%40cret@127.0.0.1:4223",
        )
        .expect("parses");
        assert_eq!(
            seeds.urls,
            vec!["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
        );
        assert_eq!(
            seeds.credentials,
            Some(Credentials::UserPassword("alice".into(), "s@cret".into()))
        );
        assert!(!format!("{seeds:?}").contains("cret"));
        let token = Seeds::parse("tls://t0ken@nats.example.com").expect("parses");
        assert_eq!(token.credentials, Some(Credentials::Token("t0ken".into())));
        assert_eq!(token.shown(), "tls://nats.example.com");
    }

    #[test]
    fn different_credentials_and_empty_lists_are_refused() {
        assert!(Seeds::parse("nats://a:1@h1,nats://b:2@h2").is_err());
        assert!(Seeds::parse(" , ").is_err());
        let plain = Seeds::parse("127.0.0.1:4222").expect("parses");
        assert_eq!(plain.credentials, None);
    }

    #[test]
    fn redaction_hides_every_user_info() {
        assert_eq!(
            redact("nats://alice:pw@h1:4222,nats://h2:4222"),
            "nats://***@h1:4222,nats://h2:4222"
        );
        assert_eq!(redact("t0ken@h"), "***@h");
    }
}
