//! `meridian simulate` on real traffic: the real `meridian serve` writes a dnstap capture of
//! queries sent from several loopback sources and ECS subnets, and `meridian simulate` replays
//! it under a region drain. The shares and moved networks it prints are checked against what
//! was sent and against what the server itself answered. A text `--queries` file and bad input
//! (a malformed line, a partial drain's share past 100 %, an unknown name, a file that is not dnstap) too.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::{Edns, Message};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{RData, RecordType};
use serde_json::Value;

use common::{query, serve_command, write_config_dir, ServerProcess, EXAMPLE_ZONE};

/// Three regions located by `geoip.networks` (so the test needs no GeoIP database): ECS
/// subnets 10.1/16 us-east, 10.2/16 eu-west, 10.3/16 ap-southeast; loopback sources without
/// ECS are us-east. `www` is geo; `pool` is weighted between us-east and ap-southeast.
const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:0"]
zones = "zones"
udp_sockets = 1

[site]
id = "sim"
location = { lat = 50.11, lon = 8.68 }

[geoip]
networks = [
  { cidr = "10.1.0.0/16", region = "us-east" },
  { cidr = "10.2.0.0/16", region = "eu-west" },
  { cidr = "10.3.0.0/16", region = "ap-southeast" },
  { cidr = "127.0.0.0/8", region = "us-east" },
]

[regions.us-east]
location = { lat = 38.9, lon = -77.0 }
[regions.eu-west]
location = { lat = 53.35, lon = -6.26 }
[regions.ap-southeast]
location = { lat = 1.35, lon = 103.82 }

[[service]]
name = "www.example.com"
policy = "geo"
ttl = 30
endpoints = [
  { region = "eu-west", address = "192.0.2.10" },
  { region = "us-east", address = "192.0.2.20" },
  { region = "ap-southeast", address = "192.0.2.30" },
]

[[service]]
name = "pool.example.com"
policy = "weighted"
ttl = 30
endpoints = [
  { region = "us-east", address = "192.0.2.21", weight = 3 },
  { region = "ap-southeast", address = "192.0.2.31", weight = 1 },
]
"#;

fn region_of(addr: IpAddr) -> &'static str {
    match addr.to_string().as_str() {
        "192.0.2.10" => "eu-west",
        "192.0.2.20" | "192.0.2.21" => "us-east",
        "192.0.2.30" | "192.0.2.31" => "ap-southeast",
        other => panic!("unexpected answer {other}"),
    }
}

fn with_ecs(name: &str, ecs: Option<(&str, u8)>) -> Message {
    let mut m = query(name, RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Some((net, prefix)) = ecs {
        let ip: IpAddr = net.parse().expect("ecs address");
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(ip, prefix, 0)));
    }
    m.set_edns(edns);
    m
}

/// Sends `msg` over UDP from `source` and returns the answered address.
fn ask(server: SocketAddr, source: &str, msg: &Message) -> IpAddr {
    let sock = UdpSocket::bind((source, 0)).expect("bind loopback source");
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    sock.send_to(&msg.to_vec().expect("encode"), server)
        .expect("send");
    let mut buf = [0u8; 1500];
    let (n, _) = sock.recv_from(&mut buf).expect("answer");
    let resp = Message::from_vec(&buf[..n]).expect("decode");
    match resp.answers.first().map(|r| &r.data) {
        Some(RData::A(a)) => IpAddr::V4(a.0),
        other => panic!("no A answer: {other:?}"),
    }
}

fn simulate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("simulate")
        .args(args)
        .output()
        .expect("run meridian simulate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn simulate_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = simulate(&all);
    assert_eq!(code, 0, "simulate {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `{service: ({region: (now, after)}, networks, moved)}` from the JSON report.
type Shares = BTreeMap<String, (BTreeMap<String, (f64, f64)>, u64, u64)>;

fn shares(v: &Value) -> Shares {
    v["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| {
            let regions = s["regions"]
                .as_array()
                .expect("regions")
                .iter()
                .map(|r| {
                    (
                        r["region"].as_str().expect("region").to_string(),
                        (
                            r["now"].as_f64().expect("now"),
                            r["after"].as_f64().expect("after"),
                        ),
                    )
                })
                .collect();
            (
                s["name"].as_str().expect("name").to_string(),
                (
                    regions,
                    s["networks"].as_u64().expect("networks"),
                    s["moved"].as_u64().expect("moved"),
                ),
            )
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.051
}

#[test]
fn a_region_drain_replayed_from_the_servers_own_dnstap_capture() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config_dir(
        dir.path(),
        &[("example.com.zone", EXAMPLE_ZONE)],
        &format!("{CONFIG}\n[log]\ndnstap = \"file:capture.dnstap\"\n"),
    );
    let mut server = ServerProcess::spawn(serve_command(&config).env("MERIDIAN_LOG", "info"));
    let dns: SocketAddr = server.wait_until("serving", Duration::from_secs(20), |p| {
        let lines = p.stderr_lines();
        lines.iter().any(|l| l.contains("serving")).then(|| {
            lines
                .iter()
                .find(|l| l.contains("listening on UDP and TCP"))
                .and_then(|l| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix("address="))
                })
                .and_then(|a| a.parse().ok())
                .expect("DNS address in the log")
        })
    });

    // (source, ECS, how many www queries, the region it belongs to).
    type Client<'a> = (&'a str, Option<(&'a str, u8)>, usize, &'a str);
    let clients: [Client; 8] = [
        ("127.0.0.1", Some(("10.2.1.0", 24)), 2, "eu-west"),
        ("127.0.0.1", Some(("10.2.2.0", 24)), 2, "eu-west"),
        ("127.0.0.4", Some(("10.2.3.0", 24)), 2, "eu-west"),
        ("127.0.0.1", Some(("10.1.1.0", 24)), 2, "us-east"),
        ("127.0.0.4", Some(("10.1.2.0", 24)), 2, "us-east"),
        ("127.0.0.2", None, 1, "us-east"),
        ("127.0.0.3", None, 1, "us-east"),
        ("127.0.0.1", Some(("10.3.1.0", 24)), 3, "ap-southeast"),
    ];
    let mut answered: BTreeMap<&str, usize> = BTreeMap::new();
    for (source, ecs, n, region) in clients {
        for _ in 0..n {
            let got = ask(dns, source, &with_ecs("www.example.com.", ecs));
            assert_eq!(region_of(got), region, "www for {source} {ecs:?}");
            *answered.entry(region_of(got)).or_default() += 1;
        }
    }
    // 40 weighted answers from five networks; a drain in eu-west must not touch them.
    let mut pool: BTreeMap<&str, usize> = BTreeMap::new();
    for i in 0..40 {
        let ecs = format!("10.1.{}.0", 100 + i % 5);
        let got = ask(
            dns,
            "127.0.0.1",
            &with_ecs("pool.example.com.", Some((&ecs, 24))),
        );
        *pool.entry(region_of(got)).or_default() += 1;
    }
    // A query that is not at a balanced name is replayed but not in the table.
    ask(dns, "127.0.0.1", &with_ecs("ns1.example.com.", None));
    let status = server.terminate(Duration::from_secs(5));
    assert!(status.success(), "server exit: {status:?}");
    let capture = dir.path().join("capture.dnstap");
    let capture_s = capture.to_str().expect("utf-8 path");
    let config_s = config.to_str().expect("utf-8 path");

    let v = simulate_json(&[
        "--dnstap", capture_s, "--config", config_s, "--drain", "eu-west",
    ]);
    assert_eq!(v["queries"], 15 + 40 + 1, "every query of the capture: {v}");
    assert_eq!(v["balanced"], 15 + 40, "{v}");
    let s = shares(&v);
    let (www, networks, moved) = &s["www.example.com"];
    // What was sent: 6 eu-west, 6 us-east, 3 ap-southeast answers; the server agreed.
    assert_eq!(answered["eu-west"], 6);
    assert!(close(www["eu-west"].0, 40.0), "{www:?}");
    assert!(close(www["us-east"].0, 40.0), "{www:?}");
    assert!(close(www["ap-southeast"].0, 20.0), "{www:?}");
    // Under the drain, Dublin's clients go to the next nearest region, us-east.
    assert!(close(www["eu-west"].1, 0.0), "{www:?}");
    assert!(close(www["us-east"].1, 80.0), "{www:?}");
    assert!(close(www["ap-southeast"].1, 20.0), "{www:?}");
    assert_eq!(
        *networks, 8,
        "3 eu-west, 2 us-east and 1 ap ECS subnets, 2 resolvers"
    );
    assert_eq!(*moved, 3, "the three eu-west subnets move, nobody else");
    assert_eq!(v["services"][1]["name"], "www.example.com");
    assert_eq!(v["services"][1]["moved_endpoint"], 3, "{v}");

    // pool: untouched by the drain; "now" is a weighted draw, close to 3:1 but not exactly
    // what the server drew, so only the sum and the absence of a change are exact.
    let (p, pool_networks, pool_moved) = &s["pool.example.com"];
    assert_eq!((*pool_networks, *pool_moved), (5, 0), "{p:?}");
    for (region, (now, after)) in p {
        assert!(close(*now, *after), "pool {region}: {now} → {after}");
    }
    assert!(close(p.values().map(|(n, _)| n).sum::<f64>(), 100.0));
    assert!(pool.values().sum::<usize>() == 40);

    // The table says the same to people.
    let (code, text, err) = simulate(&[
        "--dnstap", capture_s, "--config", config_s, "--drain", "eu-west",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("after: --drain eu-west"), "{text}");
    // The rows of www: from its name to its "move" line.
    let www_rows: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("www.example.com"))
        .take_while(|l| !l.contains("move"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let row = |region: &str| www_rows.iter().find(|l| l.contains(region)).cloned();
    assert_eq!(
        row("eu-west"),
        Some("eu-west 40.0% 0.0% -40.0".into()),
        "{text}"
    );
    assert!(text.contains("client networks that move: 3 of 8"), "{text}");

    // --down of the one us-east endpoint: us-east's clients (and nobody else) go to Dublin.
    let v = simulate_json(&[
        "--dnstap",
        capture_s,
        "--config",
        config_s,
        "--down",
        "192.0.2.20",
    ]);
    let (www, _, moved) = &shares(&v)["www.example.com"];
    assert!(
        close(www["us-east"].1, 0.0) && close(www["eu-west"].1, 80.0),
        "{www:?}"
    );
    assert_eq!(*moved, 4, "2 us-east subnets and 2 resolvers");

    // A capture cut mid-frame (a killed server) is read up to its last whole frame.
    let bytes = std::fs::read(&capture).expect("capture");
    let cut = dir.path().join("cut.dnstap");
    std::fs::write(&cut, &bytes[..bytes.len() - 20]).expect("write");
    let v = simulate_json(&[
        "--dnstap",
        cut.to_str().expect("path"),
        "--config",
        config_s,
    ]);
    assert_eq!(
        v["queries"],
        15 + 40 + 1,
        "the cut was in the last response: {v}"
    );
}

fn text_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config_dir(dir.path(), &[("example.com.zone", EXAMPLE_ZONE)], CONFIG);
    (dir, config)
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).expect("write");
    path.to_str().expect("utf-8").to_string()
}

#[test]
fn text_queries_and_bad_input() {
    let (dir, config) = text_dir();
    let config = config.to_str().expect("utf-8").to_string();
    let queries = write(
        &dir.path().join("q.txt"),
        "# qname qtype client [ecs]\n\
         www.example.com A 192.0.2.99 10.2.0.0/24\n\
         www.example.com A 192.0.2.99 10.2.1.0/24   # the same resolver, another subnet\n\
         www.example.com a 127.0.0.9\n\
         \n\
         www.example.com A 198.51.100.7 10.3.0.0/24\n\
         mail.example.com MX 127.0.0.1\n",
    );
    let v = simulate_json(&[
        "--queries",
        &queries,
        "--config",
        &config,
        "--drain",
        "ap-southeast",
    ]);
    assert_eq!(
        (v["queries"].as_u64(), v["balanced"].as_u64()),
        (Some(5), Some(4))
    );
    let (www, networks, moved) = &shares(&v)["www.example.com"];
    assert!(
        close(www["eu-west"].0, 50.0) && close(www["us-east"].0, 25.0),
        "{www:?}"
    );
    assert!(close(www["ap-southeast"].0, 25.0) && close(www["ap-southeast"].1, 0.0));
    assert_eq!((*networks, *moved), (4, 1), "{www:?}");
    // Singapore's clients: Dublin is nearer than Washington.
    assert!(close(www["eu-west"].1, 75.0), "{www:?}");

    // Everything down: the service answers with every endpoint (serve-all), shown as it is.
    let v = simulate_json(&[
        "--queries",
        &queries,
        "--config",
        &config,
        "--down",
        "eu-west",
        "--down",
        "us-east",
        "--down",
        "ap-southeast",
    ]);
    let (www, _, moved) = &shares(&v)["www.example.com"];
    assert!(
        close(www["eu-west"].1, 50.0),
        "serve-all answers as if all were up: {www:?}"
    );
    assert_eq!(*moved, 0);

    // The drains the server saved hold in both runs ("now" is what the server answers after
    // a restart); --undrain tries lifting one. The file is only read.
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("mkdir state");
    let saved = r#"{"version": 1, "drains": [{"drain": true, "region": "eu-west", "at": "2026-12-06T00:00:00Z"}]}"#;
    std::fs::write(state.join("drains.json"), saved).expect("drains.json");
    let v = simulate_json(&[
        "--queries",
        &queries,
        "--config",
        &config,
        "--undrain",
        "eu-west",
    ]);
    let (www, networks, moved) = &shares(&v)["www.example.com"];
    assert!(
        close(www["eu-west"].0, 0.0) && close(www["us-east"].0, 75.0),
        "saved drain applied now: {www:?}"
    );
    assert!(
        close(www["eu-west"].1, 50.0) && close(www["us-east"].1, 25.0),
        "{www:?}"
    );
    assert_eq!(
        (*networks, *moved),
        (4, 2),
        "the two eu-west subnets come back"
    );
    assert_eq!(
        v["saved_drains"]["applied"],
        serde_json::json!(["region eu-west"]),
        "{v}"
    );
    let (code, text, err) = simulate(&["--queries", &queries, "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("saved drains from") && text.contains("region eu-west"),
        "{text}"
    );
    // A drains file that does not read: said, not applied, and left where it is.
    std::fs::write(state.join("drains.json"), "{ not json").expect("write");
    let (code, text, err) = simulate(&["--queries", &queries, "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("saved drains NOT applied"), "{text}");
    assert_eq!(
        std::fs::read_to_string(state.join("drains.json")).expect("still there"),
        "{ not json"
    );
    std::fs::remove_dir_all(&state).expect("rm state");

    let fail = |args: &[&str], want: &str| {
        let (code, out, err) = simulate(args);
        assert_eq!(code, 1, "{args:?} should fail: {out}{err}");
        assert!(err.contains(want), "{args:?}: `{want}` not in: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    let bad = write(
        &dir.path().join("bad.txt"),
        "www.example.com A 127.0.0.1\nwww.example.com A nowhere\n",
    );
    fail(
        &["--queries", &bad, "--config", &config],
        "bad.txt:2: client `nowhere` is not an IP address",
    );
    let bad = write(&dir.path().join("bad2.txt"), "www.example.com\n");
    fail(
        &["--queries", &bad, "--config", &config],
        "bad2.txt:1: `www.example.com`: expected `qname qtype client [ecs]`",
    );
    let bad = write(
        &dir.path().join("bad3.txt"),
        "www.example.com A 127.0.0.1 10.0.0.0/99\n",
    );
    fail(
        &["--queries", &bad, "--config", &config],
        "bad3.txt:1: ecs `10.0.0.0/99`",
    );
    fail(
        &[
            "--queries",
            &queries,
            "--config",
            &config,
            "--drain",
            "eu-west:150%",
        ],
        "the share must be above 0 and at most 100 %",
    );
    fail(
        &[
            "--queries",
            &queries,
            "--config",
            &config,
            "--drain",
            "mars",
        ],
        "--drain mars: no endpoint",
    );
    fail(
        &[
            "--queries",
            &queries,
            "--config",
            &config,
            "--down",
            "192.0.2.99",
        ],
        "--down 192.0.2.99: no endpoint",
    );
    let not_dnstap = write(&dir.path().join("x.dnstap"), "hello, this is text\n");
    fail(
        &["--dnstap", &not_dnstap, "--config", &config],
        "not a dnstap capture",
    );
    fail(
        &["--dnstap", "/nonexistent/capture", "--config", &config],
        "/nonexistent/capture",
    );
    fail(&["--config", &config], "--dnstap");
    // A frame length of 4 GB is refused before anything is allocated for it.
    use meridian::querylog::framestream::{control, START};
    let mut huge = control(START, true);
    huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xf0, 1, 2, 3]);
    let huge = write_bytes(&dir.path().join("huge.dnstap"), &huge);
    fail(
        &["--dnstap", &huge, "--config", &config],
        "a frame of 4294967280 bytes",
    );
    // A data frame that is not a dnstap message.
    let mut junk = control(START, true);
    junk.extend_from_slice(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
    let junk = write_bytes(&dir.path().join("junk.dnstap"), &junk);
    fail(&["--dnstap", &junk, "--config", &config], "frame 1:");
}

fn write_bytes(path: &Path, bytes: &[u8]) -> String {
    std::fs::write(path, bytes).expect("write");
    path.to_str().expect("utf-8").to_string()
}
