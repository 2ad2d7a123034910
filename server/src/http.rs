//! The HTTP routes of protocol v1, the token checks and the request log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::keys::{classify, decode_segment, KeyClass};
use crate::metrics::{Metrics, Observation};
use crate::storage::{hash_hex, Storage, StorageError};
use crate::tokens::{Access, Grant, Tokens};

/// The most ops one batch may carry.
pub const MAX_BATCH_OPS: usize = 1000;

/// How long `GET /health` waits for the storage.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// What every handler shares.
pub struct App {
    pub storage: Box<dyn Storage>,
    pub tokens: Tokens,
    pub metrics: Metrics,
    pub max_body: usize,
}

type Shared = Arc<App>;

/// A refusal: a status and a one-line reason, sent as the body.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn new(status: StatusCode, reason: impl Into<String>) -> ApiError {
        ApiError(status, reason.into())
    }
    fn bad(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, reason)
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        tracing::error!(error = %e, "storage failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let reason = self.1.replace(['\r', '\n'], " ");
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            reason,
        )
            .into_response()
    }
}

/// The device a request was made by, for the log (never the token).
#[derive(Clone)]
struct Device(String);

/// Request body bytes actually read, for the log and the metrics.
#[derive(Clone, Copy)]
struct BytesIn(u64);

pub fn router(app: Shared) -> Router {
    Router::new()
        .route(
            "/v1/blobs/{key}",
            get(get_blob).put(put_blob).delete(delete_blob),
        )
        .route(
            "/v1/blobs/",
            get(empty_key).put(empty_key).delete(empty_key),
        )
        .route("/v1/keys", get(list_keys))
        .route("/v1/batch", post(batch))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// Logs every request as one JSON line and feeds the metrics.
async fn observe(State(app): State<Shared>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().to_string();
    let declared_in = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let response = next.run(request).await;
    let latency = start.elapsed();
    let status = response.status().as_u16();
    let bytes_in = response
        .extensions()
        .get::<BytesIn>()
        .map(|b| b.0)
        .unwrap_or(if status == 413 { 0 } else { declared_in });
    let bytes_out = axum::body::HttpBody::size_hint(response.body())
        .exact()
        .unwrap_or(0);
    let device = response
        .extensions()
        .get::<Device>()
        .map(|d| d.0.as_str())
        .unwrap_or("-");
    tracing::info!(
        route = %route,
        method = %method,
        status,
        device,
        bytes_in,
        bytes_out,
        latency_ms = latency.as_secs_f64() * 1000.0,
        "request"
    );
    app.metrics.observe(&Observation {
        route: &route,
        method: &method,
        status,
        bytes_in,
        bytes_out,
        latency,
    });
    response
}

impl App {
    /// The grant of the request's bearer token: 401 without a valid one.
    fn authenticate(&self, headers: &HeaderMap) -> Result<&Grant, ApiError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "missing bearer token"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "the Authorization header is not `Bearer <token>`",
                )
            })?;
        self.tokens
            .lookup(token)
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid token"))
    }

    /// Reads a body of at most `max_body` bytes: 413 beyond it.
    async fn read_body(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
        let too_big = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body over the limit of {} bytes", self.max_body),
            )
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err(too_big());
        }
        axum::body::to_bytes(body, self.max_body)
            .await
            .map_err(|e| {
                let inner = e.into_inner();
                if inner
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    too_big()
                } else {
                    ApiError::bad("the request body could not be read")
                }
            })
    }
}

fn partition_name(class: &KeyClass) -> &str {
    match class {
        KeyClass::Summary => "the summary documents",
        KeyClass::Partition(p) => p,
    }
}

fn check(grant: &Grant, key: &str, access: Access) -> Result<(), ApiError> {
    let class = classify(key).map_err(ApiError::bad)?;
    if grant.allows(&class, access) {
        return Ok(());
    }
    let verb = match access {
        Access::Read => "read",
        Access::Write => "write",
    };
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "this token may not {verb} partition {}",
            partition_name(&class)
        ),
    ))
}

/// The key of a `/v1/blobs/{key}` request, decoded from the raw path segment (the
/// router matched exactly one segment, so an encoded `/` stays inside the key).
fn key_of(uri: &Uri) -> Result<String, ApiError> {
    let segment = uri
        .path()
        .strip_prefix("/v1/blobs/")
        .ok_or_else(|| ApiError::bad("malformed key"))?;
    decode_segment(segment).map_err(ApiError::bad)
}

/// Attaches the device (and the body size read) to a response for the log.
fn finish(
    result: Result<Response, ApiError>,
    grant: Option<&Grant>,
    bytes_in: Option<u64>,
) -> Response {
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    if let Some(g) = grant {
        response.extensions_mut().insert(Device(g.device.clone()));
    }
    if let Some(n) = bytes_in {
        response.extensions_mut().insert(BytesIn(n));
    }
    response
}

/// An answer given before the request's body was read: the connection closes after
/// it (the unread body is still on the wire), so the client is told not to reuse it.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// [`finish`] for a request with a body: `read` is the size read, `None` when the
/// answer came before the body was read (the connection then closes).
fn finish_with_body(
    result: Result<Response, ApiError>,
    grant: &Grant,
    read: Option<u64>,
) -> Response {
    let unread = read.is_none();
    let response = finish(result, Some(grant), read);
    if unread {
        closing(response)
    } else {
        response
    }
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

async fn empty_key(State(app): State<Shared>, headers: HeaderMap) -> Response {
    match app.authenticate(&headers) {
        Ok(g) => finish(Err(ApiError::bad("malformed key: empty")), Some(g), None),
        Err(e) => e.into_response(),
    }
}

async fn get_blob(State(app): State<Shared>, uri: Uri, headers: HeaderMap) -> Response {
    let grant = match app.authenticate(&headers) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let result = async {
        let key = key_of(&uri)?;
        check(grant, &key, Access::Read)?;
        match app.storage.load(&key).await? {
            None => Err(ApiError::new(StatusCode::NOT_FOUND, "no such key")),
            Some(bytes) => {
                let etag = format!("\"{}\"", hash_hex(&bytes));
                let mut response = Response::new(Body::from(bytes));
                let h = response.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                h.insert(
                    header::ETAG,
                    HeaderValue::from_str(&etag).expect("hex is a valid header"),
                );
                Ok(response)
            }
        }
    }
    .await;
    finish(result, Some(grant), None)
}

/// What a PUT's conditional headers ask for.
enum Condition {
    None,
    Absent,
    Hash(String),
}

fn parse_hash(value: &str) -> Option<String> {
    let hex = value.to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

fn condition(headers: &HeaderMap) -> Result<Condition, ApiError> {
    let none_match = headers.get(header::IF_NONE_MATCH);
    let if_match = headers.get(header::IF_MATCH);
    match (none_match, if_match) {
        (None, None) => Ok(Condition::None),
        (Some(_), Some(_)) => Err(ApiError::bad("both If-None-Match and If-Match given")),
        (Some(v), None) => match v.to_str().map(str::trim) {
            Ok("*") => Ok(Condition::Absent),
            _ => Err(ApiError::bad("If-None-Match must be `*`")),
        },
        (None, Some(v)) => v
            .to_str()
            .ok()
            .map(str::trim)
            .and_then(|v| v.strip_prefix('"')?.strip_suffix('"'))
            .and_then(parse_hash)
            .map(Condition::Hash)
            .ok_or_else(|| ApiError::bad("If-Match must be `\"<blake3 hex>\"`")),
    }
}

async fn put_blob(State(app): State<Shared>, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let grant = match app.authenticate(&headers) {
        Ok(g) => g,
        Err(e) => return closing(e.into_response()),
    };
    let mut read = None;
    let result = async {
        let key = key_of(&uri)?;
        check(grant, &key, Access::Write)?;
        let condition = condition(&headers)?;
        let bytes = app.read_body(&headers, body).await?;
        read = Some(bytes.len() as u64);
        let stored = match condition {
            Condition::None => {
                app.storage.store(&key, &bytes).await?;
                true
            }
            Condition::Absent => app.storage.store_if(&key, &bytes, None).await?,
            Condition::Hash(h) => app.storage.store_if(&key, &bytes, Some(&h)).await?,
        };
        if stored {
            Ok(no_content())
        } else {
            app.metrics.conflict();
            Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "the stored value does not match the condition",
            ))
        }
    }
    .await;
    finish_with_body(result, grant, read)
}

async fn delete_blob(State(app): State<Shared>, uri: Uri, headers: HeaderMap) -> Response {
    let grant = match app.authenticate(&headers) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let result = async {
        let key = key_of(&uri)?;
        check(grant, &key, Access::Write)?;
        app.storage.clear(&key).await?;
        Ok(no_content())
    }
    .await;
    finish(result, Some(grant), None)
}

/// Decodes a query value: `+` is a space, `%XX` a byte, UTF-8 required.
fn query_param(uri: &Uri, name: &str) -> Result<Option<String>, ApiError> {
    let Some(query) = uri.query() else {
        return Ok(None);
    };
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            let v = v.replace('+', " ");
            return decode_segment(&v)
                .map(Some)
                .map_err(|_| ApiError::bad(format!("malformed query parameter `{name}`")));
        }
    }
    Ok(None)
}

async fn list_keys(State(app): State<Shared>, uri: Uri, headers: HeaderMap) -> Response {
    let grant = match app.authenticate(&headers) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let result = async {
        let prefix = query_param(&uri, "prefix")?.unwrap_or_default();
        let mut keys = app.storage.list(&prefix).await?;
        keys.retain(|k| {
            classify(k)
                .map(|c| grant.allows(&c, Access::Read))
                .unwrap_or(false)
        });
        Ok(axum::Json(keys).into_response())
    }
    .await;
    finish(result, Some(grant), None)
}

/// `expected` of `store_if`: present, and either a hash or null (must be absent).
#[derive(Deserialize)]
struct Expected(Option<String>);

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Op {
    Load {
        key: String,
    },
    Store {
        key: String,
        value: String,
    },
    StoreIf {
        key: String,
        value: String,
        expected: Expected,
    },
    Clear {
        key: String,
    },
}

#[derive(Deserialize)]
struct BatchRequest {
    ops: Vec<Value>,
}

/// One op after the whole batch was checked: the value decoded.
enum Checked {
    Load(String),
    Store(String, Vec<u8>),
    StoreIf(String, Vec<u8>, Option<String>),
    Clear(String),
}

impl Checked {
    fn key(&self) -> &str {
        match self {
            Checked::Load(k) | Checked::Clear(k) => k,
            Checked::Store(k, _) | Checked::StoreIf(k, _, _) => k,
        }
    }
    fn access(&self) -> Access {
        match self {
            Checked::Load(_) => Access::Read,
            _ => Access::Write,
        }
    }
}

/// Checks the whole batch before any op runs: a malformed op, a bad base64 value or
/// a bad hash refuses the batch (400) and nothing is written.
fn parse_batch(bytes: &[u8]) -> Result<Vec<Checked>, ApiError> {
    let request: BatchRequest =
        serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("bad JSON: {e}")))?;
    if request.ops.len() > MAX_BATCH_OPS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("more than {MAX_BATCH_OPS} ops in one batch"),
        ));
    }
    let decode = |i: usize, v: &str| {
        B64.decode(v)
            .map_err(|_| ApiError::bad(format!("op {i}: bad base64 value")))
    };
    let mut out = Vec::with_capacity(request.ops.len());
    for (i, op) in request.ops.into_iter().enumerate() {
        let op: Op =
            serde_json::from_value(op).map_err(|e| ApiError::bad(format!("op {i}: {e}")))?;
        out.push(match op {
            Op::Load { key } => Checked::Load(key),
            Op::Store { key, value } => Checked::Store(key, decode(i, &value)?),
            Op::StoreIf {
                key,
                value,
                expected,
            } => {
                let expected = match expected.0 {
                    None => None,
                    Some(h) => Some(parse_hash(&h).ok_or_else(|| {
                        ApiError::bad(format!("op {i}: expected is not a blake3 hex hash"))
                    })?),
                };
                Checked::StoreIf(key, decode(i, &value)?, expected)
            }
            Op::Clear { key } => Checked::Clear(key),
        });
    }
    Ok(out)
}

async fn run_op(app: &App, grant: &Grant, op: Checked) -> Value {
    if let Err(ApiError(status, reason)) = check(grant, op.key(), op.access()) {
        return json!({"status": status.as_u16(), "error": reason});
    }
    let result: Result<Value, StorageError> = async {
        Ok(match op {
            Checked::Load(key) => match app.storage.load(&key).await? {
                Some(bytes) => json!({"status": 200, "value": B64.encode(bytes)}),
                None => json!({"status": 404}),
            },
            Checked::Store(key, value) => {
                app.storage.store(&key, &value).await?;
                json!({"status": 204})
            }
            Checked::StoreIf(key, value, expected) => {
                if app
                    .storage
                    .store_if(&key, &value, expected.as_deref())
                    .await?
                {
                    json!({"status": 204})
                } else {
                    app.metrics.conflict();
                    json!({"status": 412})
                }
            }
            Checked::Clear(key) => {
                app.storage.clear(&key).await?;
                json!({"status": 204})
            }
        })
    }
    .await;
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "storage failed");
        json!({"status": 503, "error": "storage unavailable"})
    })
}

async fn batch(State(app): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let grant = match app.authenticate(&headers) {
        Ok(g) => g,
        Err(e) => return closing(e.into_response()),
    };
    let mut read = None;
    let result = async {
        let bytes = app.read_body(&headers, body).await?;
        read = Some(bytes.len() as u64);
        let ops = parse_batch(&bytes)?;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(run_op(&app, grant, op).await);
        }
        Ok(axum::Json(json!({ "results": results })).into_response())
    }
    .await;
    finish_with_body(result, grant, read)
}

async fn health(State(app): State<Shared>) -> Response {
    match tokio::time::timeout(HEALTH_TIMEOUT, app.storage.ping()).await {
        Ok(Ok(())) => "ok".into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check failed");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable").into_response()
        }
        Err(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage timed out").into_response()
        }
    }
}

async fn metrics(State(app): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}
