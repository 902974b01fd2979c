//! The table API of the web server (`faust-rs/src/web/tables.rs`), tested through the
//! router without a socket (`tower::ServiceExt::oneshot` on `faust::web::router_of`):
//! listing, pages, key reads, writes and deletes, every error status, HTML pages, the
//! cluster map at `/router/`, and a list of malformed requests that must all get a 4xx.
//!
//! Two workers of one app (in this process, on librdkafka's mock cluster, each with its
//! own web server on a free port for the forwarding between them) show the KIP-67 side: a
//! key owned by the other worker is read, written and deleted through either worker
//! (`x-faust-served-by`), a page gathers the keys of both, a forwarded read lands on the
//! standby copy (`x-faust-standby: true`), and a forwarded write to a standby is refused
//! with 503 and `Retry-After`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use common::{kafka_partition, wait_until, wait_until_async, Broker, Raw, RawProducer, DEADLINE};
use faust::rdkafka_async::{ClientConfig, Consumer, Offset, TopicPartitionList};
use faust::{App, Table, Worker};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use tower::ServiceExt;

const PARTITIONS: i32 = 4;
/// The largest key a table takes (LMDB's 511 bytes less the partition prefix).
const MAX_KEY: usize = 507;
/// The largest body the API takes.
const MAX_BODY: usize = 1 << 20;

// ---------------------------------------------------------------------------------------
// Requests without a socket.

/// An answer of the router.
#[derive(Debug)]
struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (checking the content type).
    #[track_caller]
    fn json(&self) -> Value {
        assert!(
            self.content_type().starts_with("application/json"),
            "a JSON answer, got {:?}: {}",
            self.content_type(),
            self.text()
        );
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {}", self.text()))
    }

    /// A JSON error `{"error": "..."}` with `status`; its message.
    #[track_caller]
    fn error(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("a JSON error, got {v}"))
            .to_owned()
    }

    /// An HTML page (checking the content type).
    #[track_caller]
    fn html(&self) -> String {
        assert!(
            self.content_type().starts_with("text/html"),
            "an HTML answer, got {:?}: {}",
            self.content_type(),
            self.text()
        );
        self.text()
    }
}

/// Sends `req` to `router`.
async fn send(router: &Router, req: Request<Body>) -> Resp {
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .expect("a body");
    Resp {
        status,
        headers,
        body: body.to_vec(),
    }
}

async fn get(router: &Router, uri: &str) -> Resp {
    send(router, request(Method::GET, uri, &[], Vec::new())).await
}

async fn get_html(router: &Router, uri: &str) -> Resp {
    let accept = "text/html,application/xhtml+xml,*/*;q=0.8";
    send(
        router,
        request(Method::GET, uri, &[("accept", accept)], Vec::new()),
    )
    .await
}

async fn put_json(router: &Router, uri: &str, body: &str) -> Resp {
    let headers = [("content-type", "application/json")];
    send(router, request(Method::PUT, uri, &headers, body.into())).await
}

async fn post_form(router: &Router, uri: &str, body: &str) -> Resp {
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    send(router, request(Method::POST, uri, &headers, body.into())).await
}

async fn delete(router: &Router, uri: &str) -> Resp {
    send(router, request(Method::DELETE, uri, &[], Vec::new())).await
}

fn request(method: Method, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Request<Body> {
    build(method, uri, headers, body).unwrap_or_else(|e| {
        let short: String = uri.chars().take(80).collect();
        panic!("a request for {short}: {e}")
    })
}

fn build(
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Request<Body>, axum::http::Error> {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Body::from(body))
}

/// `key` as one path segment.
fn seg(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON object's entries in the order of the text (`serde_json::Map` would sort them).
#[derive(Debug)]
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A page of a table listing.
#[derive(Debug, Deserialize)]
struct Page {
    results: Ordered,
    page: usize,
    size: usize,
    total: usize,
    pages: usize,
    next: Option<usize>,
    missing_workers: Vec<String>,
}

fn page_of(resp: &Resp) -> Page {
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert!(resp.content_type().starts_with("application/json"));
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("a page ({e}): {}", resp.text()))
}

// ---------------------------------------------------------------------------------------
// The app.

/// The app of these tests: `totals` (public, `String -> i64`, the sum of the amounts of
/// the `tx` events per user), `ids` (public, `u64 -> String`, written only through the
/// API: its keys must decode as numbers) and `secret` (private, counts events per user).
struct Tables {
    totals: Table<String, i64>,
    secret: Table<String, i64>,
}

fn make_app(broker: &Broker, id: &str, dir: &std::path::Path, web: bool) -> (App, Tables) {
    for table in ["totals", "ids", "secret"] {
        // Made once per broker (the second worker of an app finds them).
        let _ = broker
            .cluster
            .create_topic(&format!("{id}-{table}-changelog"), PARTITIONS, 1);
    }
    let mut app = broker.app(id).datadir(dir).topic_partitions(PARTITIONS);
    if web {
        app = app.web_port(0);
        app.configure(|s| s.web_enabled = true);
    }
    let totals = app
        .table::<String, i64>("totals")
        .default(0)
        .public(true)
        .help("amounts per user");
    let _ids = app.table::<u64, String>("ids").public(true);
    let secret = app.table::<String, i64>("secret").default(0);
    let tx = app.topic::<String, i64>("tx");
    let (t, s) = (totals.clone(), secret.clone());
    app.agent("sum", &tx, move |mut stream| {
        let (t, s) = (t.clone(), s.clone());
        async move {
            while let Some((user, amount)) = stream.next_item().await {
                let user = user.unwrap_or_default();
                t.update(&user, |v| *v += amount)?;
                s.update(&user, |v| *v += 1)?;
            }
            Ok(())
        }
    });
    (app, Tables { totals, secret })
}

/// The users of the events: plain ones and some that need escaping in URLs and HTML.
fn users() -> Vec<String> {
    let mut users: Vec<String> = (0..12).map(|i| format!("u{i:02}")).collect();
    for odd in ["<b>x</b>", "a/b", "with space", "ünï", "50%", "q?x=1&y"] {
        users.push(odd.to_owned());
    }
    users
}

/// Sends `n` events over [`users`] from event `from`; adds them to `oracle`.
async fn send_tx(producer: &RawProducer, from: u64, n: u64, oracle: &mut BTreeMap<String, i64>) {
    let users = users();
    let records: Vec<Raw> = (from..from + n)
        .map(|i| {
            let user = users[(i as usize * 7) % users.len()].clone();
            let amount = (i % 11) as i64 + 1;
            *oracle.entry(user.clone()).or_default() += amount;
            Raw::new("tx", amount.to_string()).key(user.into_bytes())
        })
        .collect();
    producer.send(&records).await;
}

fn holds(t: &Table<String, i64>, oracle: &BTreeMap<String, i64>) -> bool {
    oracle
        .iter()
        .all(|(k, v)| t.get(k).ok().flatten() == Some(*v))
}

/// The changelog records of `key` in partition `p` of `topic` up to its current end, as
/// (value, followed by a commit marker).
async fn changelog_of(
    bootstrap: &str,
    topic: &str,
    p: i32,
    key: &[u8],
) -> Vec<(Option<Vec<u8>>, bool)> {
    let mut consumer = Consumer::new(
        ClientConfig::new()
            .bootstrap_servers(bootstrap)
            .group_id(format!("changelog-reader-{topic}-{p}"))
            .enable_auto_commit(false),
    )
    .expect("a consumer");
    let (_, high) = consumer
        .fetch_watermarks(topic, p, Duration::from_secs(10))
        .await
        .expect("watermarks");
    let mut tpl = TopicPartitionList::new();
    tpl.add(topic, p, Offset::Beginning);
    consumer.assign(&tpl).await.expect("assign");
    let mut out: Vec<(Option<Vec<u8>>, bool)> = Vec::new();
    let mut read = 0;
    while read < high {
        let m = tokio::time::timeout(DEADLINE, consumer.recv())
            .await
            .expect("the changelog's records within the deadline")
            .expect("a record");
        read = m.offset() + 1;
        let marker = m.headers().last("faust-marker").flatten() == Some(&b"commit"[..]);
        if marker {
            for entry in &mut out {
                entry.1 = true;
            }
        } else if m.key() == Some(key) {
            out.push((m.payload().map(<[u8]>::to_vec), false));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// One worker: every endpoint and error through the router.

struct One {
    broker: Broker,
    worker: Worker,
    router: Router,
    tables: Tables,
    oracle: BTreeMap<String, i64>,
    _dir: tempfile::TempDir,
}

async fn one_worker(id: &str) -> One {
    let broker = Broker::new();
    broker.topic("tx", PARTITIONS);
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, tables) = make_app(&broker, id, dir.path(), false);
    let worker = app.start().await.expect("the worker starts");
    let producer = RawProducer::new(&broker.bootstrap());
    let mut oracle = BTreeMap::new();
    send_tx(&producer, 0, 400, &mut oracle).await;
    wait_until("the worker sums every event", || {
        holds(&tables.totals, &oracle)
    })
    .await;
    wait_until("the worker processes every task", || {
        worker.active_tasks().len() == PARTITIONS as usize
    })
    .await;
    let router = faust::web::router_of(&app).expect("a running worker");
    One {
        broker,
        worker,
        router,
        tables,
        oracle,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_api_answers_every_endpoint_and_error() {
    let One {
        broker,
        worker,
        router: r,
        tables,
        mut oracle,
        _dir,
    } = one_worker("web-tables-one").await;
    let r = &r;

    // The list: the public tables only.
    for uri in ["/api/table/", "/api/table"] {
        let resp = get(r, uri).await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.json(), json!({"results": ["totals", "ids"]}), "{uri}");
    }

    // A private table or an unknown one is 404 (a JSON error) on every URL and method.
    for name in ["secret", "nope"] {
        for uri in [
            format!("/api/table/{name}/"),
            format!("/api/table/{name}"),
            format!("/api/table/{name}/?page=2&size=3"),
            format!("/api/table/{name}/u01/"),
            format!("/api/table/{name}/u01"),
        ] {
            let msg = get(r, &uri).await.error(StatusCode::NOT_FOUND);
            assert!(msg.contains(name), "{uri}: {msg}");
            if uri.contains("u01") {
                put_json(r, &uri, "5").await.error(StatusCode::NOT_FOUND);
                post_form(r, &uri, "value=5")
                    .await
                    .error(StatusCode::NOT_FOUND);
                delete(r, &uri).await.error(StatusCode::NOT_FOUND);
            }
            let page = get_html(r, &uri).await;
            assert_eq!(page.status, StatusCode::NOT_FOUND, "{uri}");
            page.html();
        }
    }
    assert_eq!(
        tables.secret.get(&"u01".to_owned()).unwrap(),
        Some(oracle_count("u01")),
        "the private table is untouched"
    );

    // The whole table, in key order, in pages.
    let all: Vec<(String, Value)> = oracle.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let first = page_of(&get(r, "/api/table/totals/").await);
    assert_eq!(
        first.results.0, all,
        "the default page holds every key, in order"
    );
    assert_eq!(
        (first.page, first.size, first.total, first.pages, first.next),
        (1, 100, all.len(), 1, None)
    );
    assert!(first.missing_workers.is_empty());
    let same = page_of(&get(r, "/api/table/totals").await);
    assert_eq!(same.results.0, all);

    let size = 4;
    let pages = all.len().div_ceil(size);
    let mut gathered = Vec::new();
    for n in 1..=pages {
        let p = page_of(&get(r, &format!("/api/table/totals/?page={n}&size={size}")).await);
        assert_eq!(
            (p.page, p.size, p.total, p.pages),
            (n, size, all.len(), pages)
        );
        assert_eq!(p.next, (n < pages).then_some(n + 1), "page {n}");
        assert!(p.results.0.len() == size || n == pages);
        gathered.extend(p.results.0);
    }
    assert_eq!(
        gathered, all,
        "the pages, one after the other, are the table"
    );
    let past = page_of(
        &get(
            r,
            &format!("/api/table/totals/?page={}&size={size}", pages + 1),
        )
        .await,
    );
    assert!(past.results.0.is_empty());
    assert_eq!(past.next, None);
    // Out-of-range numbers are clamped: size to 1..=10,000, page to >= 1.
    let p = page_of(&get(r, "/api/table/totals/?size=0&page=0").await);
    assert_eq!((p.page, p.size, p.pages), (1, 1, all.len()));
    assert_eq!(p.results.0, all[..1]);
    let p = page_of(&get(r, "/api/table/totals/?size=1000000").await);
    assert_eq!(p.size, 10_000);
    let p = page_of(&get(r, &format!("/api/table/totals/?page={}", usize::MAX)).await);
    assert!(p.results.0.is_empty());
    // Unknown parameters are ignored.
    page_of(&get(r, "/api/table/totals/?foo=bar").await);
    for q in [
        "page=abc",
        "size=x",
        "page=-1",
        "size=-5",
        "page=1.5",
        "page=99999999999999999999999",
    ] {
        let msg = get(r, &format!("/api/table/totals/?{q}"))
            .await
            .error(StatusCode::BAD_REQUEST);
        assert!(!msg.is_empty(), "{q}");
        let page = get_html(r, &format!("/api/table/totals/?{q}")).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{q}");
        page.html();
    }

    // One key.
    for (user, total) in &oracle {
        for uri in [
            format!("/api/table/totals/{}/", seg(user)),
            format!("/api/table/totals/{}", seg(user)),
        ] {
            let resp = get(r, &uri).await;
            assert_eq!(resp.status, StatusCode::OK, "{uri}: {}", resp.text());
            assert_eq!(resp.json(), json!({ user.clone(): total }), "{uri}");
            assert_eq!(resp.header("x-faust-standby"), None);
            assert_eq!(
                resp.header("x-faust-served-by"),
                worker.worker_id().as_deref()
            );
        }
    }
    let msg = get(r, "/api/table/totals/nobody/")
        .await
        .error(StatusCode::NOT_FOUND);
    assert!(msg.contains("nobody"), "{msg}");

    // PUT with JSON: 200 once the write is in the changelog (data, then a commit marker).
    let resp = put_json(r, "/api/table/totals/put-key/", "42").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.json(), json!({"put-key": 42}));
    let p = kafka_partition(b"put-key", PARTITIONS);
    let log = changelog_of(
        &broker.bootstrap(),
        "web-tables-one-totals-changelog",
        p,
        b"put-key",
    )
    .await;
    assert_eq!(
        log.last(),
        Some(&(Some(b"42".to_vec()), true)),
        "the write is in the changelog, with its flush's commit marker, when the PUT answers"
    );
    assert_eq!(tables.totals.get(&"put-key".to_owned()).unwrap(), Some(42));
    assert_eq!(
        get(r, "/api/table/totals/put-key/").await.json(),
        json!({"put-key": 42})
    );
    oracle.insert("put-key".into(), 42);

    // POST with a form (`value=`), the key without the trailing slash.
    let resp = post_form(r, "/api/table/totals/form-key", "other=1&value=%2D17").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.json(), json!({"form-key": -17}));
    assert_eq!(
        tables.totals.get(&"form-key".to_owned()).unwrap(),
        Some(-17)
    );
    // PUT with a form and POST with JSON work as well.
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    let resp = send(
        r,
        request(
            Method::PUT,
            "/api/table/totals/form-key/",
            &headers,
            b"value=18".to_vec(),
        ),
    )
    .await;
    assert_eq!(resp.json(), json!({"form-key": 18}));
    let headers = [("content-type", "application/json")];
    let resp = send(
        r,
        request(
            Method::POST,
            "/api/table/totals/form-key/",
            &headers,
            b"19".to_vec(),
        ),
    )
    .await;
    assert_eq!(resp.json(), json!({"form-key": 19}));
    // Without a content type the body is read as JSON.
    let resp = send(
        r,
        request(
            Method::PUT,
            "/api/table/totals/form-key/",
            &[],
            b" 20 ".to_vec(),
        ),
    )
    .await;
    assert_eq!(resp.json(), json!({"form-key": 20}));
    assert_eq!(
        get(r, "/api/table/totals/form-key/").await.json(),
        json!({"form-key": 20})
    );
    // An escaped key, written through the API and read back by the app.
    let odd = "<i>new</i> / ü";
    let resp = put_json(r, &format!("/api/table/totals/{}/", seg(odd)), "7").await;
    assert_eq!(resp.json(), json!({ odd: 7 }));
    assert_eq!(tables.totals.get(&odd.to_owned()).unwrap(), Some(7));

    // A value that does not decode as the table's type (i64), or a body that is no value.
    for (ct, body) in [
        ("application/json", "\"abc\""),
        ("application/json", "1.5"),
        ("application/json", "null"),
        ("application/json", "{\"a\": 1}"),
        ("application/json", "[1]"),
        ("application/json", "99999999999999999999"),
        ("application/json", "not json"),
        ("application/json", ""),
        ("application/json", "{"),
        ("text/plain", "42 43"),
        ("application/x-www-form-urlencoded", "value=abc"),
        ("application/x-www-form-urlencoded", "value="),
        ("application/x-www-form-urlencoded", "other=1"),
        ("application/x-www-form-urlencoded", ""),
        ("application/x-www-form-urlencoded", "value=%ZZ"),
        ("application/x-www-form-urlencoded", "value=%4"),
        ("application/x-www-form-urlencoded", "value=%FF"),
    ] {
        for method in [Method::PUT, Method::POST] {
            let resp = send(
                r,
                request(
                    method.clone(),
                    "/api/table/totals/form-key/",
                    &[("content-type", ct)],
                    body.into(),
                ),
            )
            .await;
            let msg = resp.error(StatusCode::BAD_REQUEST);
            assert!(!msg.is_empty(), "{method} {ct} {body:?}");
        }
    }
    // A body that is not UTF-8.
    let resp = send(
        r,
        request(
            Method::PUT,
            "/api/table/totals/form-key/",
            &[("content-type", "application/x-www-form-urlencoded")],
            vec![b'v', b'a', b'l', b'u', b'e', b'=', 0xff, 0xfe],
        ),
    )
    .await;
    resp.error(StatusCode::BAD_REQUEST);
    let resp = send(
        r,
        request(
            Method::PUT,
            "/api/table/totals/form-key/",
            &[],
            vec![0xff, 0xfe],
        ),
    )
    .await;
    resp.error(StatusCode::BAD_REQUEST);
    assert_eq!(
        tables.totals.get(&"form-key".to_owned()).unwrap(),
        Some(20),
        "refused writes change nothing"
    );
    oracle.insert("form-key".into(), 20);
    oracle.insert(odd.into(), 7);

    // The `ids` table's keys are numbers: other keys do not decode.
    let resp = put_json(r, "/api/table/ids/7/", "\"seven\"").await;
    assert_eq!(resp.json(), json!({"7": "seven"}));
    assert_eq!(
        get(r, "/api/table/ids/7/").await.json(),
        json!({"7": "seven"})
    );
    put_json(r, "/api/table/ids/8/", "8")
        .await
        .error(StatusCode::BAD_REQUEST);
    for key in [
        "abc",
        "-1",
        "1.5",
        "18446744073709551616",
        "%22x%22",
        "%5B1%5D",
    ] {
        let uri = format!("/api/table/ids/{key}/");
        let msg = get(r, &uri).await.error(StatusCode::BAD_REQUEST);
        assert!(msg.contains("does not decode"), "{uri}: {msg}");
        put_json(r, &uri, "\"x\"")
            .await
            .error(StatusCode::BAD_REQUEST);
        delete(r, &uri).await.error(StatusCode::BAD_REQUEST);
    }
    get(r, "/api/table/ids/9/")
        .await
        .error(StatusCode::NOT_FOUND);

    // Keys of at most 507 bytes; longer ones are refused (400), whatever the method.
    let longest = "k".repeat(MAX_KEY);
    get(r, &format!("/api/table/totals/{longest}/"))
        .await
        .error(StatusCode::NOT_FOUND);
    let resp = put_json(r, &format!("/api/table/totals/{longest}/"), "1").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    oracle.insert(longest.clone(), 1);
    for key in [
        "k".repeat(MAX_KEY + 1),
        "ü".repeat(MAX_KEY / 2 + 1),
        "k".repeat(60_000),
    ] {
        let uri = format!("/api/table/totals/{}/", seg(&key));
        let msg = get(r, &uri).await.error(StatusCode::BAD_REQUEST);
        assert!(msg.contains("longer than"), "{msg}");
        put_json(r, &uri, "1").await.error(StatusCode::BAD_REQUEST);
        post_form(r, &uri, "value=1")
            .await
            .error(StatusCode::BAD_REQUEST);
        delete(r, &uri).await.error(StatusCode::BAD_REQUEST);
    }

    // Malformed percent-encoding in the path.
    for uri in [
        "/api/table/totals/%FF/",
        "/api/table/totals/%C3%28/",
        "/api/table/%FF/",
        "/api/table/%FF/u01/",
    ] {
        get(r, uri).await.error(StatusCode::BAD_REQUEST);
        if uri.matches('/').count() == 5 {
            put_json(r, uri, "1").await.error(StatusCode::BAD_REQUEST);
            delete(r, uri).await.error(StatusCode::BAD_REQUEST);
        }
        let page = get_html(r, uri).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{uri}");
        page.html();
    }

    // A body over 1 MiB: 413 (a JSON body, a form, with or without a length).
    let huge = format!("\"{}\"", "x".repeat(MAX_BODY));
    let resp = put_json(r, "/api/table/totals/form-key/", &huge).await;
    assert_eq!(
        resp.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        resp.text()
    );
    let resp = post_form(
        r,
        "/api/table/totals/form-key/",
        &format!("value={}", "1".repeat(MAX_BODY)),
    )
    .await;
    assert_eq!(
        resp.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        resp.text()
    );
    let chunks = futures_util::stream::iter(
        (0..17).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b'1'; 64 << 10]))),
    );
    let req = Request::builder()
        .method(Method::PUT)
        .uri("/api/table/totals/form-key/")
        .body(Body::from_stream(chunks))
        .unwrap();
    let resp = send(r, req).await;
    assert_eq!(
        resp.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "a streamed body: {}",
        resp.text()
    );
    // Just under the limit is read (and refused for its value, not its size).
    let big = format!("\"{}\"", "x".repeat(MAX_BODY - 2));
    put_json(r, "/api/table/totals/form-key/", &big)
        .await
        .error(StatusCode::BAD_REQUEST);

    // DELETE: 200, then the key is gone (here, in the app's table, and in the changelog).
    for uri in ["/api/table/totals/put-key/", "/api/table/totals/form-key"] {
        let resp = delete(r, uri).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        get(r, uri).await.error(StatusCode::NOT_FOUND);
    }
    assert_eq!(
        delete(r, "/api/table/totals/put-key/").await.status,
        StatusCode::OK,
        "deleting an absent key is no error"
    );
    assert_eq!(tables.totals.get(&"put-key".to_owned()).unwrap(), None);
    let log = changelog_of(
        &broker.bootstrap(),
        "web-tables-one-totals-changelog",
        p,
        b"put-key",
    )
    .await;
    assert_eq!(
        log.last(),
        Some(&(None, true)),
        "a tombstone with its commit marker"
    );
    oracle.remove("put-key");
    oracle.remove("form-key");
    let p = page_of(&get(r, "/api/table/totals/?size=10000").await);
    let now: Vec<(String, Value)> = oracle.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    assert_eq!(p.results.0, now, "the listing after the writes and deletes");

    // HTML: the list, a page, a key, an error, the cluster map; every key escaped.
    let list = get_html(r, "/api/table/").await;
    assert_eq!(list.status, StatusCode::OK);
    let list = list.html();
    assert!(
        list.contains("href=\"/api/table/totals/\"") && list.contains("href=\"/api/table/ids/\""),
        "{list}"
    );
    assert!(!list.contains("secret"), "{list}");
    let page = get_html(r, "/api/table/totals/?size=1000").await;
    assert_eq!(page.status, StatusCode::OK);
    let page = page.html();
    assert!(page.contains("&lt;b&gt;x&lt;/b&gt;"), "{page}");
    assert!(!page.contains("<b>x</b>"), "a key is escaped: {page}");
    assert!(page.contains("&lt;i&gt;new&lt;/i&gt; / ü"), "{page}");
    assert!(page.contains(&format!("{} keys", oracle.len())), "{page}");
    assert!(
        page.contains(&format!("href=\"/api/table/totals/{}/\"", seg("<b>x</b>"))),
        "{page}"
    );
    for (user, total) in &oracle {
        if user.chars().all(|c| c.is_ascii_alphanumeric()) {
            assert!(
                page.contains(&format!(">{user}</a></td><td><code>{total}</code>")),
                "{user}: {page}"
            );
        }
    }
    let paged = get_html(r, "/api/table/totals/?size=5&page=2").await.html();
    assert!(
        paged.contains("href=\"?page=1&amp;size=5\"")
            && paged.contains("href=\"?page=3&amp;size=5\""),
        "{paged}"
    );
    let one = get_html(r, &format!("/api/table/totals/{}/", seg("<b>x</b>"))).await;
    assert_eq!(one.status, StatusCode::OK);
    let one = one.html();
    assert!(
        one.contains("&lt;b&gt;x&lt;/b&gt;") && !one.contains("<b>x</b>"),
        "{one}"
    );
    assert!(one.contains(&oracle["<b>x</b>"].to_string()), "{one}");
    let missing = get_html(
        r,
        &format!("/api/table/totals/{}/", seg("<script>alert(1)</script>")),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let missing = missing.html();
    assert!(
        !missing.contains("<script>") && missing.contains("&lt;script&gt;"),
        "{missing}"
    );
    let cluster = get_html(r, "/router/").await;
    assert_eq!(cluster.status, StatusCode::OK);
    let cluster = cluster.html();
    assert!(
        cluster.contains(&format!("{PARTITIONS} tasks")),
        "{cluster}"
    );

    // /router/: the cluster map, every task owned by this (only) worker.
    let me = worker.worker_id().expect("a worker id");
    for uri in ["/router/", "/router"] {
        let v = get(r, uri).await.json();
        assert_eq!(v["worker"], json!(me), "{v}");
        let tasks = v["tasks"].as_array().expect("tasks");
        assert_eq!(tasks.len(), PARTITIONS as usize, "{v}");
        for (p, t) in tasks.iter().enumerate() {
            assert_eq!(t["task"], json!(p));
            assert_eq!(t["owner"]["id"], json!(me), "{v}");
            assert_eq!(t["standbys"], json!([]), "one worker: no standbys");
        }
        assert!(
            v["workers"][&me]["active"]
                .as_array()
                .is_some_and(|a| a.len() == PARTITIONS as usize),
            "{v}"
        );
    }

    worker.shutdown().await.expect("a clean stop");
}

/// How many events of the first batch went to `user` (the `secret` table counts them).
fn oracle_count(user: &str) -> i64 {
    let users = users();
    (0..400u64)
        .filter(|i| users[(*i as usize * 7) % users.len()] == user)
        .count() as i64
}

/// A request: method, URI, headers, body.
type Case<'a> = (Method, String, Vec<(&'a str, &'a str)>, Vec<u8>);

/// Malformed requests of every kind: each gets a 4xx, never a 5xx (nor a panic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_4xx_never_a_5xx() {
    let One {
        broker: _broker,
        worker,
        router: r,
        _dir,
        ..
    } = one_worker("web-tables-bad").await;
    let r = &r;
    let long_key = "k".repeat(600);
    let very_long_key = "%41".repeat(20_000);
    let json_ct = ("content-type", "application/json");
    let form_ct = ("content-type", "application/x-www-form-urlencoded");
    let html = ("accept", "text/html");
    let huge = vec![b'7'; MAX_BODY + 1];
    let cases: Vec<Case<'_>> = vec![
        // Paths.
        (Method::GET, "/api/table/totals/%FF/".into(), vec![], vec![]),
        (Method::GET, "/api/table/totals/%FF".into(), vec![html], vec![]),
        (Method::GET, "/api/table/totals/%C0%AF/".into(), vec![], vec![]),
        (Method::GET, "/api/table/totals/%ED%A0%80/".into(), vec![], vec![]),
        (Method::GET, "/api/table/%FF%FE/".into(), vec![], vec![]),
        (Method::GET, "/api/table/%FF%FE".into(), vec![], vec![]),
        (Method::PUT, "/api/table/totals/%FF/".into(), vec![json_ct], b"1".to_vec()),
        (Method::DELETE, "/api/table/totals/%FF/".into(), vec![], vec![]),
        (Method::GET, "/api/table/totals//".into(), vec![], vec![]),
        (Method::GET, "/api/table//".into(), vec![], vec![]),
        (Method::GET, "/api/table//u01/".into(), vec![], vec![]),
        (Method::GET, "/api/table/totals/u01/extra/".into(), vec![], vec![]),
        (Method::GET, "/api/table/../secret/".into(), vec![], vec![]),
        (Method::GET, "/api/table/secret/u01/".into(), vec![], vec![]),
        (Method::GET, "/api/table/%2E%2E/secret/".into(), vec![], vec![]),
        (Method::GET, "/api/table/totals%2Fsecret/".into(), vec![], vec![]),
        (Method::GET, "/api/table/totals/%00/".into(), vec![], vec![]),
        (Method::GET, "/api/table/totals/%ZZ/".into(), vec![], vec![]),
        (Method::GET, "/api/table/totals/%/".into(), vec![], vec![]),
        (Method::GET, "/api/table/totals/%4/".into(), vec![], vec![]),
        (Method::GET, "/api/table/%ZZ/".into(), vec![], vec![]),
        (Method::GET, format!("/api/table/totals/{long_key}/"), vec![], vec![]),
        (Method::GET, format!("/api/table/totals/{long_key}/"), vec![html], vec![]),
        (Method::PUT, format!("/api/table/totals/{long_key}/"), vec![json_ct], b"1".to_vec()),
        (Method::DELETE, format!("/api/table/totals/{long_key}/"), vec![], vec![]),
        (Method::GET, format!("/api/table/totals/{very_long_key}/"), vec![], vec![]),
        (Method::GET, format!("/api/table/{very_long_key}/"), vec![], vec![]),
        (Method::GET, "/api/table/ids/abc/".into(), vec![], vec![]),
        (Method::GET, "/api/table/ids/%7B%7D/".into(), vec![], vec![]),
        (Method::GET, "/api/table/ids/-0.5/".into(), vec![html], vec![]),
        // Queries.
        (Method::GET, "/api/table/totals/?page=%FF".into(), vec![], vec![]),
        (Method::GET, "/api/table/totals/?page=1&page=2".into(), vec![], vec![]),
        (Method::GET, "/api/table/totals/?page%5B%5D=1&page=x".into(), vec![], vec![]),
        (Method::GET, "/api/table/totals/?size=1e3".into(), vec![], vec![]),
        (Method::GET, "/api/table/totals/?page=".into(), vec![], vec![]),
        (Method::GET, "/api/table/totals/?local=300".into(), vec![], vec![]),
        (Method::GET, "/api/table/totals/?size=%".into(), vec![], vec![]),
        // Methods.
        (Method::PATCH, "/api/table/totals/u01/".into(), vec![json_ct], b"1".to_vec()),
        (Method::PUT, "/api/table/totals/".into(), vec![json_ct], b"1".to_vec()),
        (Method::POST, "/api/table/".into(), vec![json_ct], b"1".to_vec()),
        (Method::DELETE, "/api/table/totals/".into(), vec![], vec![]),
        (Method::DELETE, "/router/".into(), vec![], vec![]),
        // Bodies.
        (Method::PUT, "/api/table/totals/u01/".into(), vec![json_ct], b"\"1\"".to_vec()),
        (Method::PUT, "/api/table/totals/u01/".into(), vec![json_ct], b"true".to_vec()),
        (Method::PUT, "/api/table/totals/u01/".into(), vec![json_ct], b"1e400".to_vec()),
        (Method::PUT, "/api/table/totals/u01/".into(), vec![json_ct], b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".to_vec()),
        (Method::PUT, "/api/table/totals/u01/".into(), vec![json_ct], "[".repeat(100_000).into_bytes()),
        (Method::PUT, "/api/table/totals/u01/".into(), vec![json_ct], vec![0, 1, 2, 3]),
        (Method::PUT, "/api/table/totals/u01/".into(), vec![json_ct], vec![0xef, 0xbb, 0xbf, b'1']),
        (Method::PUT, "/api/table/totals/u01/".into(), vec![("content-type", "application/json; charset=latin1")], vec![0xe9]),
        (Method::PUT, "/api/table/totals/u01/".into(), vec![form_ct], b"value=%".to_vec()),
        (Method::PUT, "/api/table/totals/u01/".into(), vec![form_ct], b"value=%%%".to_vec()),
        (Method::PUT, "/api/table/totals/u01/".into(), vec![form_ct], b"%ZZ=1&value=1".to_vec()),
        (Method::PUT, "/api/table/totals/u01/".into(), vec![form_ct], b"value=1e3".to_vec()),
        (Method::PUT, "/api/table/totals/u01/".into(), vec![form_ct], b"value=%22x%22".to_vec()),
        (Method::PUT, "/api/table/totals/u01/".into(), vec![form_ct], b"&&&=&=".to_vec()),
        (Method::POST, "/api/table/totals/u01/".into(), vec![form_ct], vec![0xff; 64]),
        (Method::POST, "/api/table/totals/u01/".into(), vec![("content-type", "multipart/form-data; boundary=x")], b"--x\r\nContent-Disposition: form-data; name=\"value\"\r\n\r\n1\r\n--x--".to_vec()),
        (Method::PUT, "/api/table/totals/u01/".into(), vec![json_ct], huge.clone()),
        (Method::POST, "/api/table/totals/u01/".into(), vec![form_ct], huge.clone()),
        (Method::PUT, "/api/table/totals/u01/".into(), vec![json_ct, html], huge),
        (Method::PUT, "/api/table/ids/1/".into(), vec![json_ct], b"1".to_vec()),
        (Method::PUT, "/api/table/ids/1/".into(), vec![json_ct, html], b"{}".to_vec()),
        // Headers.
        (Method::GET, "/api/table/secret/".into(), vec![("accept", "text/html; q=x")], vec![]),
        (Method::PUT, "/api/table/totals/u01/".into(), vec![("content-type", "application/x-www-form-urlencoded; charset=utf-16")], vec![0xff, 0xfe, b'v', 0]),
    ];
    let mut seen = Vec::new();
    for (method, uri, headers, body) in cases {
        let preview = String::from_utf8_lossy(&body[..body.len().min(24)]).into_owned();
        let body_len = body.len();
        let req = build(method.clone(), &uri, &headers, body).unwrap_or_else(|e| {
            panic!(
                "{method} {}: not a valid request: {e}",
                &uri[..uri.len().min(80)]
            )
        });
        let resp = send(r, req).await;
        let short: String = uri.chars().take(60).collect();
        assert!(
            resp.status.is_client_error(),
            "{method} {short} {headers:?}: {} {}",
            resp.status,
            resp.text().chars().take(300).collect::<String>()
        );
        seen.push(format!(
            "{method} {short} {preview:?} ({} bytes) -> {}",
            body_len,
            resp.status.as_u16()
        ));
    }
    eprintln!("malformed requests:\n  {}", seen.join("\n  "));
    // Nothing of it reached the table.
    let v = get(r, "/api/table/totals/u01/").await;
    assert_eq!(v.status, StatusCode::OK);
    // The worker is still fine.
    assert!(!worker.stopping().is_cancelled());
    worker.shutdown().await.expect("a clean stop");
}

// ---------------------------------------------------------------------------------------
// Two workers: forwarding to the owner, the whole table from both, standby reads.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_the_other_worker_are_forwarded_and_pages_gather_both() {
    const APP: &str = "web-tables-two";
    let broker = Broker::new();
    broker.topic("tx", PARTITIONS);
    let producer = RawProducer::new(&broker.bootstrap());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut oracle = BTreeMap::new();
    let (app_a, tables_a) = make_app(&broker, APP, dir_a.path(), true);
    let a = app_a.start().await.expect("A starts");
    send_tx(&producer, 0, 300, &mut oracle).await;
    wait_until("A sums every event", || holds(&tables_a.totals, &oracle)).await;
    let (app_b, tables_b) = make_app(&broker, APP, dir_b.path(), true);
    let b = app_b.start().await.expect("B starts");
    let (id_a, id_b) = (a.worker_id().unwrap(), b.worker_id().unwrap());
    wait_until(
        "both maps show both workers, their URLs and standbys",
        || {
            [&a, &b].iter().all(|w| {
                let m = w.cluster_map().unwrap();
                m.workers.len() == 2
                    && m.workers.values().all(|w| w.url.is_some())
                    && (0..PARTITIONS).all(|p| {
                        let owner = m.owner(p).map(|o| o.id.clone());
                        let standbys: Vec<String> =
                            m.standbys(p).iter().map(|s| s.id.clone()).collect();
                        match owner {
                            Some(o) if o == id_a => standbys == vec![id_b.clone()],
                            Some(o) if o == id_b => standbys == vec![id_a.clone()],
                            _ => false,
                        }
                    })
            }) && {
                let (x, y) = (a.active_tasks(), b.active_tasks());
                !x.is_empty()
                    && !y.is_empty()
                    && x.is_disjoint(&y)
                    && x.len() + y.len() == PARTITIONS as usize
            }
        },
    )
    .await;
    send_tx(&producer, 300, 300, &mut oracle).await;
    wait_until("owners and standbys hold every sum", || {
        holds(&tables_a.totals, &oracle) && holds(&tables_b.totals, &oracle)
    })
    .await;
    let ra = faust::web::router_of(&app_a).unwrap();
    let rb = faust::web::router_of(&app_b).unwrap();
    let (tasks_a, tasks_b) = (a.active_tasks(), b.active_tasks());
    let owner_of = |key: &str| -> String {
        if tasks_a.contains(&kafka_partition(key.as_bytes(), PARTITIONS)) {
            id_a.clone()
        } else {
            id_b.clone()
        }
    };
    eprintln!("A = {id_a} owns {tasks_a:?}; B = {id_b} owns {tasks_b:?}");

    // Reads of every key through either worker: the owner serves them.
    for (user, total) in &oracle {
        for r in [&ra, &rb] {
            let resp = get(r, &format!("/api/table/totals/{}/", seg(user))).await;
            assert_eq!(resp.status, StatusCode::OK, "{user}: {}", resp.text());
            assert_eq!(resp.json(), json!({ user.clone(): total }));
            assert_eq!(
                resp.header("x-faust-served-by"),
                Some(owner_of(user).as_str()),
                "{user}"
            );
            assert_eq!(resp.header("x-faust-standby"), None);
        }
    }
    // An HTML page of a forwarded key.
    let key_b = oracle
        .keys()
        .find(|k| owner_of(k) == id_b && k.starts_with('u'))
        .expect("a key of B")
        .clone();
    let key_a = oracle
        .keys()
        .find(|k| owner_of(k) == id_a && k.starts_with('u'))
        .expect("a key of A")
        .clone();
    let page = get_html(&ra, &format!("/api/table/totals/{key_b}/")).await;
    assert_eq!(page.header("x-faust-served-by"), Some(id_b.as_str()));
    assert!(page.html().contains(&oracle[&key_b].to_string()));

    // Writes and deletes of a key of the other worker, through either worker.
    for (via, other, key, owner_table) in [
        (&ra, &rb, &key_b, &tables_b.totals),
        (&rb, &ra, &key_a, &tables_a.totals),
    ] {
        let uri = format!("/api/table/totals/{key}/");
        let resp = put_json(via, &uri, "1234").await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(resp.json(), json!({ key.clone(): 1234 }));
        assert_eq!(
            resp.header("x-faust-served-by"),
            Some(owner_of(key).as_str())
        );
        assert_eq!(
            owner_table.get(key).unwrap(),
            Some(1234),
            "written in the owner's table"
        );
        for r in [via, other] {
            assert_eq!(get(r, &uri).await.json(), json!({ key.clone(): 1234 }));
        }
        let resp = post_form(via, &uri, "value=4321").await;
        assert_eq!(resp.json(), json!({ key.clone(): 4321 }));
        assert_eq!(owner_table.get(key).unwrap(), Some(4321));
        // A bad value is the client's error here and at the owner alike.
        put_json(via, &uri, "\"x\"")
            .await
            .error(StatusCode::BAD_REQUEST);
        put_json(via, &uri, "x")
            .await
            .error(StatusCode::BAD_REQUEST);
        let resp = delete(via, &uri).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(
            resp.header("x-faust-served-by"),
            Some(owner_of(key).as_str())
        );
        assert_eq!(owner_table.get(key).unwrap(), None);
        for r in [via, other] {
            get(r, &uri).await.error(StatusCode::NOT_FOUND);
        }
        oracle.remove(key);
    }

    // A page through either worker lists the keys of both.
    let all: Vec<(String, Value)> = oracle.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let owners: BTreeSet<String> = oracle.keys().map(|k| owner_of(k)).collect();
    assert_eq!(owners.len(), 2, "keys on both workers");
    for r in [&ra, &rb] {
        let resp = get(r, "/api/table/totals/").await;
        assert_eq!(resp.header("x-faust-incomplete"), None);
        let p = page_of(&resp);
        assert!(p.missing_workers.is_empty(), "{:?}", p.missing_workers);
        assert_eq!(p.results.0, all);
        assert_eq!(p.total, all.len());
        let mut gathered = Vec::new();
        for n in 1..=all.len().div_ceil(3) {
            gathered.extend(
                page_of(&get(r, &format!("/api/table/totals/?page={n}&size=3")).await)
                    .results
                    .0,
            );
        }
        assert_eq!(gathered, all);
    }
    let html = get_html(&rb, "/api/table/totals/?size=1000").await.html();
    for user in oracle.keys().filter(|k| k.starts_with('u')) {
        assert!(
            html.contains(&format!(">{user}</a>")),
            "{user} in the HTML page"
        );
    }

    // A forwarded request is never forwarded again: the non-owner answers from its standby
    // copy (reads) or refuses (writes) with 503 and Retry-After.
    let forwarded = ("x-faust-forwarded", "a-test");
    let other_a = oracle.keys().find(|k| owner_of(k) == id_a).unwrap().clone();
    let want = json!({ other_a.clone(): oracle[&other_a] });
    let uri = format!("/api/table/totals/{}/", seg(&other_a));
    wait_until_async("B's standby copy serves a key of A", || async {
        let resp = send(&rb, request(Method::GET, &uri, &[forwarded], vec![])).await;
        resp.status == StatusCode::OK && resp.json() == want
    })
    .await;
    let resp = send(&rb, request(Method::GET, &uri, &[forwarded], vec![])).await;
    assert_eq!(resp.json(), want);
    assert_eq!(resp.header("x-faust-standby"), Some("true"));
    assert_eq!(resp.header("x-faust-served-by"), Some(id_b.as_str()));
    for method in [Method::PUT, Method::DELETE] {
        let resp = send(
            &rb,
            request(
                method,
                &uri,
                &[forwarded, ("content-type", "application/json")],
                b"5".to_vec(),
            ),
        )
        .await;
        resp.error(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.header("retry-after"), Some("1"));
    }
    assert_eq!(
        tables_a.totals.get(&other_a).unwrap(),
        Some(oracle[&other_a])
    );

    // /router/ from either worker: the same owners and standbys.
    for (r, me) in [(&ra, &id_a), (&rb, &id_b)] {
        let v = get(r, "/router/").await.json();
        assert_eq!(&v["worker"], &json!(me));
        for t in v["tasks"].as_array().unwrap() {
            let p = t["task"].as_i64().unwrap() as i32;
            let (owner, standby) = if tasks_a.contains(&p) {
                (&id_a, &id_b)
            } else {
                (&id_b, &id_a)
            };
            assert_eq!(t["owner"]["id"], json!(owner), "{v}");
            assert_eq!(t["standbys"][0]["id"], json!(standby), "{v}");
            assert!(
                t["owner"]["url"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("http://127.0.0.1:")),
                "{v}"
            );
        }
    }

    // B leaves: A answers for B's keys (from its standby copy, then as their owner).
    let key_b = oracle.keys().find(|k| owner_of(k) == id_b).unwrap().clone();
    let want = json!({ key_b.clone(): oracle[&key_b] });
    b.shutdown().await.expect("B stops");
    let uri = format!("/api/table/totals/{}/", seg(&key_b));
    let answers = std::sync::Mutex::new(Vec::new());
    wait_until_async("A serves B's keys after B left", || async {
        let resp = get(&ra, &uri).await;
        let ok = resp.status == StatusCode::OK;
        let standby = resp.header("x-faust-standby").map(str::to_owned);
        answers
            .lock()
            .unwrap()
            .push((resp.status.as_u16(), standby));
        if ok {
            assert_eq!(resp.json(), want);
        }
        ok && resp.header("x-faust-standby").is_none()
    })
    .await;
    let mut answers = answers.into_inner().unwrap();
    answers.dedup();
    eprintln!("A's answers for B's key after B left: {answers:?}");
    a.shutdown().await.expect("A stops");
}
