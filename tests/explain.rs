//! `explain --down` on a snapshot that serves: the endpoints it takes as down are down in the
//! explanation only. It goes to `select` as its `up` override (through the trace); writing
//! `set_healthy(false)` into the snapshot, as it once did, took them out of the real answers.

mod common;

use std::net::IpAddr;

use common::{query, TestServer};
use hickory_proto::rr::{RData, RecordType};

fn addrs(s: &TestServer) -> Vec<IpAddr> {
    let r = s.udp(&query("www.example.com.", RecordType::A));
    r.answers
        .iter()
        .filter_map(|a| match &a.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

#[test]
fn explain_down_leaves_the_served_health_alone() {
    let s = TestServer::example();
    let snap = s.shared.load_full();
    // A client in Europe (by ECS) gets eu-west, 192.0.2.10; with it down, another region.
    let req = |down: &[&str]| meridian::explain::Request {
        name: "www.example.com".into(),
        rtype: RecordType::A,
        client: "127.0.0.1".parse().expect("ip"),
        ecs: None,
        down: down.iter().map(|d| d.to_string()).collect(),
        notes: Vec::new(),
    };
    let (_, v) =
        meridian::explain::explain(&snap, &req(&["192.0.2.10", "us-east"])).expect("explains");
    let cands = v["candidates"].as_array().expect("candidates");
    let by = |a: &str| {
        cands
            .iter()
            .find(|c| c["address"] == a)
            .unwrap_or_else(|| panic!("no candidate {a}: {v}"))
    };
    // Down in the explanation...
    for a in ["192.0.2.10", "192.0.2.20", "192.0.2.21"] {
        assert_eq!(by(a)["healthy"], false, "{a} in {v}");
        assert_eq!(by(a)["picked"], false, "{a} in {v}");
    }
    assert_eq!(by("192.0.2.30")["healthy"], true, "{v}");
    // ... and nowhere else: the served snapshot's state and its answers are untouched.
    for a in ["192.0.2.10", "192.0.2.20", "192.0.2.21"] {
        assert!(
            s.endpoint_state("www.example.com", a).healthy(),
            "explain --down {a} wrote into the served health state"
        );
    }
    let (_, again) = meridian::explain::explain(&snap, &req(&[])).expect("explains");
    assert!(
        again["candidates"]
            .as_array()
            .expect("candidates")
            .iter()
            .all(|c| c["healthy"] == true),
        "an explanation without --down still sees the earlier one's: {again}"
    );
    let served = addrs(&s);
    assert!(!served.is_empty(), "no answer");
    // An unknown --down is still an error.
    assert!(meridian::explain::explain(&snap, &req(&["eu-nowhere"])).is_err());
}
