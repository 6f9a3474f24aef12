//! The typed `/status` document (`meridian::status::Status`) is the one definition the admin
//! API writes and `meridian status` reads: what the server sends reads into it and writes back
//! as the same JSON, so no field the server sends is lost to the reader, whichever variant an
//! entry takes (a drain, a rejected reload, a probe result, the shares history adds). A
//! failed zone's variant is read by `tests/degraded.rs` through `meridian status`.

mod common;

use std::time::Duration;

use common::*;

const TOKEN: &str = "status-doc-token";

fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (code, _, body) = http_exchange(addr, &req).expect("an HTTP response");
    assert_eq!(code, 200, "{body}");
    body
}

fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> String {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    http_exchange(addr, &req).expect("an HTTP response").2
}

/// `/status` read into the typed document and written again: the same JSON.
fn round_trip(addr: std::net::SocketAddr) -> meridian::status::Status {
    let body = get(addr, "/status");
    let doc: meridian::status::Status =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    // Compared as JSON values: serde_json reads a float to the nearest but one digit at times
    // (no `float_roundtrip`), the same way on both sides here.
    let sent: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let again = serde_json::to_value(&doc).expect("to value");
    assert_eq!(again, sent, "the typed document lost or changed a field");
    doc
}

#[test]
fn status_reads_into_the_typed_document_and_writes_back_the_same_json() {
    let health = HealthStub::start();
    let check = format!("http://{}/health", health.addr);
    let s = TestServer::start(
        &[("example.com.zone", EXAMPLE_ZONE)],
        &format!(
            "{}\n\
             [health.web]\nkind = \"http\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\n\
             [[service]]\nname = \"probed.example.com\"\npolicy = \"round-robin\"\n\
             health = \"web\"\nendpoints = [\n  {{ region = \"eu-west\", address = \
             \"192.0.2.77\", check = \"{check}\" }},\n]\n",
            example_config()
                .replace("127.0.0.1:9053", "127.0.0.1:0")
                .replace("change-me", TOKEN),
        ),
    );
    let admin = s.start_admin().addr;
    let _prober = s.start_prober();
    let first = round_trip(admin);
    assert!(first.zones.iter().all(|z| z.loaded), "{first:?}");
    // A drain, a rejected reload, probe results and a second of history.
    post(admin, "/api/v1/drain", r#"{"region": "eu-west"}"#);
    std::fs::write(s.config_path(), "not toml [").expect("break the config");
    post(admin, "/api/v1/reload", "");
    std::thread::sleep(Duration::from_millis(1500));
    let doc = round_trip(admin);
    assert_eq!(doc.drains.len(), 1);
    assert_eq!(doc.last_reload.as_ref().map(|r| r.ok), Some(false));
    assert!(doc.events.is_some() && doc.regions.is_some());
    assert!(
        doc.services
            .iter()
            .flat_map(|s| &s.endpoints)
            .any(|e| e.last_probe.is_some()),
        "{doc:?}"
    );
}
