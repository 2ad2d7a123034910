//! The HTTP cloud tier: a [`Persistence`] that speaks the sync server's protocol
//! (`datasync-server`, README "The HTTP cloud tier") on a blocking client over
//! rustls, so that it builds wherever the library does, mobile included.
//!
//! Every call is one request. A connection refused, a timeout or a 5xx answer is an
//! adapter error: the instance goes offline and retries with backoff. A 403 is a
//! refusal of that one key ([`AdapterError::refused`]): the sync goes on without it.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::partition::hash_bytes;
use crate::persistence::{AdapterError, AdapterResult, Persistence};

/// How an [`HttpPersistence`] waits for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpOptions {
    /// The longest wait for a connection to be established (default 5 s).
    pub connect_timeout: Duration,
    /// The longest wait for each read or write on the connection, the answer's
    /// first bytes included (default 30 s).
    pub read_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// The longest answer read from the server: the server's own default body limit.
const MAX_ANSWER: u64 = 32 * 1024 * 1024;

/// The most of an error answer's text kept in a message.
const MAX_REASON: usize = 300;

/// A cloud tier on a `datasync-server` at a URL, with a bearer token. It offers
/// conditional writes and listing, so several devices may share it.
pub struct HttpPersistence {
    agent: ureq::Agent,
    /// The server's URL without a trailing `/` (it may have a path).
    base: String,
    /// `Bearer <token>`; never written into a message or a log.
    authorization: String,
}

impl fmt::Debug for HttpPersistence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPersistence")
            .field("url", &self.base)
            .finish_non_exhaustive()
    }
}

impl HttpPersistence {
    /// A tier on the server at `url` (`http://` or `https://`), authenticated by
    /// `token`, with the default timeouts. Nothing is sent until the first sync.
    pub fn new(url: &str, token: &str) -> Result<HttpPersistence> {
        HttpPersistence::with_options(url, token, HttpOptions::default())
    }

    /// As [`HttpPersistence::new`], with these timeouts (each > 0).
    pub fn with_options(url: &str, token: &str, options: HttpOptions) -> Result<HttpPersistence> {
        let base = url.trim_end_matches('/');
        let rest = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"));
        if rest.is_none_or(str::is_empty) || base.chars().any(char::is_whitespace) {
            return Err(Error::InvalidConfig(format!(
                "the cloud URL {url:?} is not an http:// or https:// URL"
            )));
        }
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::InvalidConfig(
                "the token must be non-empty printable ASCII without spaces".into(),
            ));
        }
        if options.connect_timeout.is_zero() || options.read_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "the HTTP timeouts must be positive".into(),
            ));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A redirect would carry the token to wherever it points.
            .max_redirects(0)
            .timeout_connect(Some(options.connect_timeout))
            .timeout_per_read(Some(options.read_timeout))
            .timeout_per_write(Some(options.read_timeout))
            .user_agent(concat!("datasync/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(HttpPersistence {
            agent: config.into(),
            base: base.to_string(),
            authorization: format!("Bearer {token}"),
        })
    }

    /// The server's URL, as given (without a trailing `/`).
    pub fn url(&self) -> &str {
        &self.base
    }

    fn blob_url(&self, key: &str) -> String {
        format!("{}/v1/blobs/{}", self.base, encode_segment(key))
    }

    /// Sends a request (`body`: PUT with bytes) and returns the status and answer.
    /// A connection the server dropped before answering (a kept-alive connection it
    /// had closed meanwhile) is tried once more on a fresh one; every request of the
    /// protocol may be repeated (a conditional write that had landed answers 412, and
    /// the sync reads the key again).
    fn send(
        &self,
        method: &str,
        url: &str,
        condition: Option<(&str, String)>,
        body: Option<&[u8]>,
    ) -> AdapterResult<(u16, Vec<u8>)> {
        let what = || format!("{method} {}", self.path_of(url));
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.send_once(method, url, condition.as_ref(), body) {
                Err(e) if attempt < 2 && dropped(&e) => {
                    log::debug!(target: "datasync::http", "{} on {}: the connection was dropped ({e}); trying again", what(), self.base);
                }
                Err(e) => return Err(AdapterError::new(describe(&self.base, what(), &e))),
                Ok(answer) => return Ok(answer),
            }
        }
    }

    fn send_once(
        &self,
        method: &str,
        url: &str,
        condition: Option<&(&str, String)>,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), ureq::Error> {
        let auth = self.authorization.as_str();
        let response = match (method, body) {
            ("GET", _) => self.agent.get(url).header("Authorization", auth).call(),
            ("DELETE", _) => self.agent.delete(url).header("Authorization", auth).call(),
            (_, body) => {
                let mut request = self
                    .agent
                    .put(url)
                    .header("Authorization", auth)
                    .header("Content-Type", "application/octet-stream");
                if let Some((name, value)) = condition {
                    request = request.header(*name, value.as_str());
                }
                request.send(body.unwrap_or_default())
            }
        }?;
        let status = response.status().as_u16();
        let answer = response
            .into_body()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()?;
        Ok((status, answer))
    }

    /// The part of `url` after the base, for messages.
    fn path_of<'a>(&self, url: &'a str) -> &'a str {
        url.strip_prefix(self.base.as_str()).unwrap_or(url)
    }

    /// The error for an answer the operation did not expect.
    fn unexpected(
        &self,
        what: &str,
        key: Option<&str>,
        status: u16,
        answer: &[u8],
    ) -> AdapterError {
        let reason = reason(answer);
        match status {
            401 => AdapterError::new("the server rejected the token"),
            403 => AdapterError::refused(match key {
                Some(_) => format!("the server refused it to this token ({reason})"),
                None => format!("the server refused {what} to this token ({reason})"),
            }),
            _ => AdapterError::new(format!(
                "{what} on {}: the server answered {status}: {reason}",
                self.base
            )),
        }
    }
}

/// Whether the server closed the connection without an answer (not a refusal to
/// connect, nor a timeout).
fn dropped(e: &ureq::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(e, ureq::Error::Io(io) if matches!(io.kind(), UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted))
}

/// One line of a failure, naming the server but none of the request's headers.
fn describe(base: &str, what: String, e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => format!("{what} on {base} timed out"),
        ureq::Error::Io(io) => format!("cannot reach {base} ({what}): {io}"),
        ureq::Error::HostNotFound => format!("cannot reach {base} ({what}): host not found"),
        ureq::Error::ConnectionFailed => format!("cannot reach {base} ({what}): connection failed"),
        other => format!("{what} on {base} failed: {other}"),
    }
}

/// The first line of an error answer, shortened.
fn reason(answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(&answer[..answer.len().min(MAX_REASON * 4)]);
    let line = text.lines().next().unwrap_or("").trim();
    match line.char_indices().nth(MAX_REASON) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None if line.is_empty() => "(no reason given)".to_string(),
        None => line.to_string(),
    }
}

/// `key` as one path segment: RFC 3986 unreserved characters as they are, every
/// other byte as `%XX` (and the dots of a key `.` or `..`, which a URL would read as
/// a step up or in place).
pub(crate) fn encode_segment(key: &str) -> String {
    if key == "." || key == ".." {
        return "%2E".repeat(key.len());
    }
    let mut out = String::with_capacity(key.len() * 3);
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Persistence for HttpPersistence {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        let url = self.blob_url(key);
        match self.send("GET", &url, None, None)? {
            (200, bytes) => Ok(Some(bytes)),
            (404, _) => Ok(None),
            (status, answer) => Err(self.unexpected("GET", Some(key), status, &answer)),
        }
    }

    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        let url = self.blob_url(key);
        match self.send("PUT", &url, None, Some(bytes))? {
            (200 | 204, _) => Ok(()),
            (status, answer) => Err(self.unexpected("PUT", Some(key), status, &answer)),
        }
    }

    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        let url = self.blob_url(key);
        match self.send("DELETE", &url, None, None)? {
            (200 | 204 | 404, _) => Ok(()),
            (status, answer) => Err(self.unexpected("DELETE", Some(key), status, &answer)),
        }
    }

    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        let url = format!("{}/v1/keys", self.base);
        match self.send("GET", &url, None, None)? {
            (200, answer) => serde_json::from_slice::<Vec<String>>(&answer)
                .map(Some)
                .map_err(|e| {
                    AdapterError::new(format!(
                        "GET /v1/keys on {}: the answer is not a JSON array of keys: {e}",
                        self.base
                    ))
                }),
            (status, answer) => Err(self.unexpected("GET /v1/keys", None, status, &answer)),
        }
    }

    fn store_if(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        bytes: &[u8],
    ) -> AdapterResult<Option<bool>> {
        let url = self.blob_url(key);
        let condition = match expected {
            None => ("If-None-Match", "*".to_string()),
            Some(held) => ("If-Match", format!("\"{}\"", hash_bytes(held))),
        };
        match self.send("PUT", &url, Some(condition), Some(bytes))? {
            (200 | 204, _) => Ok(Some(true)),
            (412, _) => Ok(Some(false)),
            (status, answer) => Err(self.unexpected("PUT", Some(key), status, &answer)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_travel_as_one_segment() {
        assert_eq!(encode_segment("app.notes-1_~x"), "app.notes-1_~x");
        assert_eq!(encode_segment("!datasync.meta"), "%21datasync.meta");
        assert_eq!(encode_segment("a/b c:d%"), "a%2Fb%20c%3Ad%25");
        assert_eq!(encode_segment("é"), "%C3%A9");
        assert_eq!(encode_segment(".."), "%2E%2E");
        assert_eq!(encode_segment("..x"), "..x");
    }

    #[test]
    fn urls_tokens_and_timeouts_are_checked() {
        assert!(HttpPersistence::new("http://127.0.0.1:1", "t").is_ok());
        assert_eq!(
            HttpPersistence::new("https://example.test/sync/", "t")
                .unwrap()
                .url(),
            "https://example.test/sync"
        );
        for url in ["", "ftp://x", "http://", "127.0.0.1:80", "http://a b"] {
            assert!(HttpPersistence::new(url, "t").is_err(), "{url:?}");
        }
        for token in ["", "a b", "a\nb"] {
            assert!(
                HttpPersistence::new("http://x", token).is_err(),
                "{token:?}"
            );
        }
        let zero = HttpOptions {
            connect_timeout: Duration::ZERO,
            ..HttpOptions::default()
        };
        assert!(HttpPersistence::with_options("http://x", "t", zero).is_err());
    }

    #[test]
    fn an_unreachable_server_is_an_error_without_the_token() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let options = HttpOptions {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(2),
        };
        let mut tier = HttpPersistence::with_options(
            &format!("http://127.0.0.1:{port}"),
            "s3cret-token",
            options,
        )
        .unwrap();
        let e = tier.load("app.notes").unwrap_err();
        assert!(!e.is_refused());
        assert!(e.to_string().contains("127.0.0.1"), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(!format!("{tier:?}").contains("s3cret"));
    }

    #[test]
    fn a_server_that_never_answers_times_out() {
        // Accepts the connection and reads, but never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let silent = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut conn, &mut buf);
            let _ = rx.recv_timeout(Duration::from_secs(10));
        });
        let options = HttpOptions {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_millis(300),
        };
        let mut tier =
            HttpPersistence::with_options(&format!("http://127.0.0.1:{port}"), "t", options)
                .unwrap();
        let started = std::time::Instant::now();
        let e = tier.load("app.notes").unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(e.to_string().contains("timed out"), "{e}");
        tx.send(()).unwrap();
        silent.join().unwrap();
    }

    #[test]
    fn a_connection_dropped_without_an_answer_is_tried_once_more() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Drops the first two connections unanswered, answers 404 on the third.
        let peer = std::thread::spawn(move || {
            for n in 0..3 {
                let (mut conn, _) = listener.accept().unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                if n == 2 {
                    let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                }
            }
        });
        let url = format!("http://127.0.0.1:{port}");
        let mut tier = HttpPersistence::new(&url, "t").unwrap();
        let e = tier.load("app.a").unwrap_err();
        assert!(
            e.to_string().contains("cannot reach"),
            "two drops in a row fail: {e}"
        );
        assert_eq!(tier.load("app.b").unwrap(), None, "one drop is tried again");
        peer.join().unwrap();
    }

    #[test]
    fn error_reasons_are_one_short_line() {
        assert_eq!(reason(b"outside the token\nmore"), "outside the token");
        assert_eq!(reason(b""), "(no reason given)");
        assert!(reason(&[b'x'; 2000]).chars().count() <= MAX_REASON + 1);
    }
}
