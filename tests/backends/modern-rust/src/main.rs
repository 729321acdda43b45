//! modern-rust: the "new" demo backend for strangler's tests.
//!
//! hyper 0.14 + tokio + serde_json, HTTP/1.1 with keep-alive. Same API as
//! legacy-go (see ../README.md), except for the deliberate bug: /api/search
//! matches case-sensitively. Logs one startup line to stderr; set
//! BACKEND_LOG=1 for one line per request.

// Handlers return Result<Resp, Resp>: Err is the early error response.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::body::{Bytes, HttpBody};
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use hyper::service::{make_service_fn, service_fn};
use hyper::{Body, Method, Request, Response, Server, StatusCode};
use serde_json::{json, Map, Value};

const SERVICE: &str = "modern-rust";
const DEFAULT_LISTEN: &str = "127.0.0.1:9002";
const MAX_DELAY_MS: u64 = 60_000;
const ECHO_BODY_MAX: u64 = 64 << 10; // bodies up to this size are echoed back as text
const MAX_ORDER_BODY: u64 = 1 << 20;
const MAX_BYTES_N: u64 = 2 << 30; // /bytes?n= upper bound: 2 GiB
const MAX_CHUNKS: u64 = 100_000;
const MAX_CHUNK_SIZE: u64 = 1 << 20;
const MAX_INTERVAL_MS: u64 = 60_000;
const MAX_ID: i64 = 1000;

/// Searched by /api/search; result ids are index+1.
/// Must stay identical to `catalogue` in ../legacy-go/main.go.
const CATALOGUE: [&str; 10] = [
    "Red Shoes",
    "Blue Shirt",
    "Green Hat",
    "Red Scarf",
    "Black Boots",
    "White Socks",
    "Blue Jeans",
    "Yellow Raincoat",
    "Leather Belt",
    "Dark Red Sweater",
];

static NEXT_ORDER_ID: AtomicI64 = AtomicI64::new(1001); // POST /api/orders: 1001, 1002, ...
static BLOCK: [u8; 64 << 10] = [b'b'; 64 << 10];

type Resp = Response<Body>;

fn usage_exit(msg: &str) -> ! {
    eprintln!("{SERVICE}: {msg}\nusage: {SERVICE} [--listen HOST:PORT]   (default {DEFAULT_LISTEN})");
    std::process::exit(2);
}

fn parse_args() -> String {
    let mut listen = DEFAULT_LISTEN.to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--listen" || a == "-listen" {
            listen = args.next().unwrap_or_else(|| usage_exit("--listen needs a value"));
        } else if let Some(v) = a.strip_prefix("--listen=").or_else(|| a.strip_prefix("-listen=")) {
            listen = v.to_string();
        } else if a == "-h" || a == "--help" {
            usage_exit("help");
        } else {
            usage_exit(&format!("unknown argument {a:?}"));
        }
    }
    listen
}

#[tokio::main]
async fn main() {
    let listen = parse_args();
    let listener = match std::net::TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{SERVICE}: listen {listen}: {e}");
            std::process::exit(1);
        }
    };
    listener.set_nonblocking(true).expect("set_nonblocking");
    let local = listener.local_addr().expect("local_addr");
    let log = std::env::var_os("BACKEND_LOG").is_some_and(|v| !v.is_empty());

    let make_svc =
        make_service_fn(move |_conn| async move { Ok::<_, Infallible>(service_fn(move |req| handle(req, log))) });
    let server = match Server::from_tcp(listener) {
        Ok(b) => b.http1_only(true).http1_keepalive(true).serve(make_svc),
        Err(e) => {
            eprintln!("{SERVICE}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("{SERVICE} listening on http://{local}");
    if let Err(e) = server.await {
        eprintln!("{SERVICE}: {e}");
        std::process::exit(1);
    }
}

async fn handle(req: Request<Body>, log: bool) -> Result<Resp, Infallible> {
    let start = Instant::now();
    let (method, uri) = if log {
        (Some(req.method().clone()), Some(req.uri().clone()))
    } else {
        (None, None)
    };
    let mut resp = route(req).await;
    resp.headers_mut()
        .insert("x-served-by", HeaderValue::from_static(SERVICE));
    if let (Some(m), Some(u)) = (method, uri) {
        eprintln!("{SERVICE} {m} {u} {} {:?}", resp.status().as_u16(), start.elapsed());
    }
    Ok(resp)
}

// ---------------------------------------------------------------- helpers

fn json_resp(status: StatusCode, v: &Value) -> Resp {
    let body = serde_json::to_vec(v).expect("serialise JSON");
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("response")
}

fn error(status: StatusCode, msg: &str) -> Resp {
    json_resp(status, &json!({ "error": msg }))
}

fn method_not_allowed(allow: &'static str) -> Resp {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// Accept `want` (and HEAD for GET); otherwise Err(405).
fn method_is(m: &Method, want: Method) -> Result<(), Resp> {
    if *m == want || (want == Method::GET && *m == Method::HEAD) {
        return Ok(());
    }
    Err(method_not_allowed(if want == Method::GET {
        "GET, HEAD"
    } else {
        "POST"
    }))
}

/// A float as encoding/json prints a float64: integral values without ".0".
fn num(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        json!(f as i64)
    } else {
        json!(f)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Form-style unescape ('+' is a space); None for a malformed %-escape.
fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let (h, l) = (hex(*b.get(i + 1)?)?, hex(*b.get(i + 2)?)?);
                out.push(h << 4 | l);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Parse a query string like Go's url.ParseQuery: pairs split on '&',
/// pairs with ';' or a bad escape dropped.
fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for pair in q.unwrap_or("").split('&') {
        if pair.is_empty() || pair.contains(';') {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if let (Some(k), Some(v)) = (unescape(k), unescape(v)) {
            out.push((k, v));
        }
    }
    out
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Absent or empty -> def; malformed or outside [0, max] -> 400.
fn int_param(q: &[(String, String)], name: &str, def: u64, max: u64) -> Result<u64, Resp> {
    match param(q, name) {
        None | Some("") => Ok(def),
        Some(s) => match s.parse::<i64>() {
            Ok(v) if v >= 0 && v as u64 <= max => Ok(v as u64),
            _ => Err(error(StatusCode::BAD_REQUEST, &format!("invalid {name} (0..{max})"))),
        },
    }
}

fn is_numeric(s: &str) -> bool {
    let d = s.strip_prefix('-').unwrap_or(s);
    !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit())
}

/// Non-numeric -> 400; numeric but outside 1..1000 -> 404.
fn parse_id(s: &str, kind: &str) -> Result<i64, Resp> {
    if !is_numeric(s) {
        return Err(error(StatusCode::BAD_REQUEST, &format!("invalid {kind} id")));
    }
    match s.parse::<i64>() {
        Ok(id) if (1..=MAX_ID).contains(&id) => Ok(id),
        _ => Err(error(StatusCode::NOT_FOUND, &format!("{kind} not found"))),
    }
}

/// Current time as RFC 3339 UTC with second precision, e.g. 2024-05-01T12:00:00Z.
fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (H. Hinnant), proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn user(id: i64) -> Value {
    json!({ "id": id, "name": format!("user-{id}"), "email": format!("user{id}@example.com") })
}

fn order(id: i64) -> Value {
    json!({
        "id": id,
        "user_id": (id - 1) % 5 + 1,
        "status": "shipped",
        "total": num(id as f64 * 10.0 + 2.5),
        "currency": "EUR",
        "created_at": now_rfc3339(),
    })
}

// ---------------------------------------------------------------- routing

async fn route(req: Request<Body>) -> Resp {
    let query = parse_query(req.uri().query());
    match delay(&query).await {
        Ok(()) => {}
        Err(r) => return r,
    }
    let path = req.uri().path().to_string();
    let p = path.as_str();
    let m = req.method().clone();
    let r = if p == "/health" {
        method_is(&m, Method::GET).map(|_| json_resp(StatusCode::OK, &json!({"status": "ok", "service": SERVICE})))
    } else if p == "/api/users" {
        method_is(&m, Method::GET).map(|_| json_resp(StatusCode::OK, &Value::Array((1..=5).map(user).collect())))
    } else if let Some(id) = p.strip_prefix("/api/users/") {
        method_is(&m, Method::GET)
            .and_then(|_| parse_id(id, "user"))
            .map(|id| json_resp(StatusCode::OK, &user(id)))
    } else if p == "/api/orders" {
        match m {
            Method::GET | Method::HEAD => Ok(json_resp(StatusCode::OK, &Value::Array((1..=3).map(order).collect()))),
            Method::POST => Ok(create_order(req).await),
            _ => Err(method_not_allowed("GET, HEAD, POST")),
        }
    } else if let Some(id) = p.strip_prefix("/api/orders/") {
        method_is(&m, Method::GET)
            .and_then(|_| parse_id(id, "order"))
            .map(|id| json_resp(StatusCode::OK, &order(id)))
    } else if p == "/api/search" {
        method_is(&m, Method::GET).map(|_| search(param(&query, "q").unwrap_or("")))
    } else if p == "/echo" || p.starts_with("/echo/") {
        Ok(echo(req).await)
    } else if p == "/stream" {
        method_is(&m, Method::GET).and_then(|_| stream(&query))
    } else if p == "/bytes" {
        method_is(&m, Method::GET).and_then(|_| bytes(&query))
    } else if let Some(code) = p.strip_prefix("/status/") {
        status(code)
    } else {
        Err(error(StatusCode::NOT_FOUND, "not found"))
    };
    r.unwrap_or_else(|e| e)
}

async fn delay(query: &[(String, String)]) -> Result<(), Resp> {
    match param(query, "delay_ms") {
        None | Some("") => Ok(()),
        Some(s) => match s.parse::<i64>() {
            Ok(ms) if ms >= 0 => {
                tokio::time::sleep(Duration::from_millis((ms as u64).min(MAX_DELAY_MS))).await;
                Ok(())
            }
            _ => Err(error(StatusCode::BAD_REQUEST, "invalid delay_ms")),
        },
    }
}

// ---------------------------------------------------------------- endpoints

/// THE DELIBERATE BUG: the match is case-sensitive (legacy-go lower-cases
/// both sides), so `q=red` finds "Red Shoes" on legacy-go but not here.
/// Score in hundredths: 99 - 2*position - (len(title) - len(q)), at least 1.
fn search(q: &str) -> Resp {
    let mut hits: Vec<(i64, usize, &str)> = Vec::new();
    for (i, title) in CATALOGUE.iter().enumerate() {
        if let Some(pos) = title.find(q) {
            let hundredths = (99 - 2 * pos as i64 - (title.len() as i64 - q.len() as i64)).max(1);
            hits.push((hundredths, i + 1, title));
        }
    }
    hits.sort_by_key(|h| std::cmp::Reverse(h.0)); // stable: ties stay in catalogue order
    let results: Vec<Value> = hits
        .into_iter()
        .map(|(h, id, title)| json!({ "id": id, "title": title, "score": h as f64 / 100.0 }))
        .collect();
    json_resp(StatusCode::OK, &json!({ "query": q, "results": results }))
}

async fn create_order(req: Request<Body>) -> Resp {
    let mut body = req.into_body();
    let mut buf = Vec::new();
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(c) => {
                if (buf.len() + c.len()) as u64 > MAX_ORDER_BODY {
                    return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
                }
                buf.extend_from_slice(&c);
            }
            Err(_) => return error(StatusCode::BAD_REQUEST, "cannot read body"),
        }
    }
    let bad = || error(StatusCode::BAD_REQUEST, "invalid JSON order");
    let obj = match serde_json::from_slice::<Value>(&buf) {
        Ok(Value::Object(o)) => o,
        _ => return bad(),
    };
    let field = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let user_id = match field("user_id") {
        None => 1,
        Some(v) => match v.as_i64() {
            Some(n) => n,
            None => return bad(),
        },
    };
    let total = match field("total") {
        None => 0.0,
        Some(v) => match v.as_f64() {
            Some(n) => n,
            None => return bad(),
        },
    };
    let (status, currency) = match (field("status"), field("currency")) {
        (Some(s), _) if !s.is_string() => return bad(),
        (_, Some(c)) if !c.is_string() => return bad(),
        (s, c) => (
            s.and_then(Value::as_str).unwrap_or("pending").to_string(),
            c.and_then(Value::as_str).unwrap_or("EUR").to_string(),
        ),
    };
    let id = NEXT_ORDER_ID.fetch_add(1, Ordering::Relaxed);
    let o = json!({
        "id": id,
        "user_id": user_id,
        "status": status,
        "total": num(total),
        "currency": currency,
        "created_at": now_rfc3339(),
    });
    let mut r = json_resp(StatusCode::CREATED, &o);
    r.headers_mut().insert(
        LOCATION,
        HeaderValue::from_str(&format!("/api/orders/{id}")).expect("location"),
    );
    r
}

async fn echo(req: Request<Body>) -> Resp {
    let (parts, mut body) = req.into_parts();
    let mut headers = Map::new();
    for name in parts.headers.keys() {
        let joined: Vec<String> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        headers.insert(name.as_str().to_string(), Value::String(joined.join(", ")));
    }
    // Stream the body: count every byte, keep only the first ECHO_BODY_MAX+1.
    let mut kept: Vec<u8> = Vec::new();
    let mut total: u64 = 0;
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(c) => {
                total += c.len() as u64;
                let room = (ECHO_BODY_MAX as usize + 1).saturating_sub(kept.len());
                kept.extend_from_slice(&c[..c.len().min(room)]);
            }
            Err(_) => return error(StatusCode::BAD_REQUEST, "cannot read body"),
        }
    }
    let text = if total <= ECHO_BODY_MAX {
        String::from_utf8_lossy(&kept).into_owned()
    } else {
        String::new()
    };
    json_resp(
        StatusCode::OK,
        &json!({
            "method": parts.method.as_str(),
            "path": parts.uri.to_string(),
            "headers": headers,
            "body": text,
            "body_bytes": total,
        }),
    )
}

fn stream(query: &[(String, String)]) -> Result<Resp, Resp> {
    let chunks = int_param(query, "chunks", 5, MAX_CHUNKS)?;
    let size = int_param(query, "size", 16, MAX_CHUNK_SIZE)?;
    let interval = int_param(query, "interval_ms", 0, MAX_INTERVAL_MS)?;
    // A channel body has no known length: hyper sends it chunked.
    let (mut tx, body) = Body::channel();
    tokio::spawn(async move {
        let chunk = Bytes::from(vec![b'x'; size as usize]);
        for i in 0..chunks {
            if i > 0 && interval > 0 {
                tokio::time::sleep(Duration::from_millis(interval)).await;
            }
            if size > 0 && tx.send_data(chunk.clone()).await.is_err() {
                return; // client went away
            }
        }
    });
    Ok(Response::builder()
        .header(CONTENT_TYPE, "text/plain")
        .body(body)
        .expect("response"))
}

fn bytes(query: &[(String, String)]) -> Result<Resp, Resp> {
    let n = int_param(query, "n", 0, MAX_BYTES_N)?;
    let body = if n == 0 {
        Body::empty()
    } else {
        let (mut tx, body) = Body::channel();
        tokio::spawn(async move {
            let mut left = n;
            while left > 0 {
                let k = left.min(BLOCK.len() as u64) as usize;
                if tx.send_data(Bytes::from_static(&BLOCK[..k])).await.is_err() {
                    return; // client went away (or HEAD)
                }
                left -= k as u64;
            }
        });
        body
    };
    Ok(Response::builder()
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, n)
        .body(body)
        .expect("response"))
}

fn status(code: &str) -> Result<Resp, Resp> {
    let bad = || error(StatusCode::BAD_REQUEST, "invalid status code (200..599)");
    let n = match code.parse::<i64>() {
        Ok(n) if is_numeric(code) && (200..=599).contains(&n) => n as u16,
        _ => return Err(bad()),
    };
    let sc = StatusCode::from_u16(n).map_err(|_| bad())?;
    if n == 204 || n == 304 {
        return Ok(Response::builder().status(sc).body(Body::empty()).expect("response"));
    }
    Ok(json_resp(sc, &json!({ "status": n })))
}
