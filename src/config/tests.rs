//! Unit tests of reading and checking a config: located problems, stand-ins, defaults.

use std::path::Path;
use std::time::Duration;

use super::load::examine_text;
use super::*;

fn parse_str(s: &str) -> Result<LoadedConfig, Problems> {
    let dir = std::env::temp_dir();
    parse(&dir.join("t.toml"), s.to_string())
}

#[test]
fn unknown_key_names_line_and_key() {
    let err =
        parse_str("[server]\nlisten = [\"127.0.0.1:53\"]\nzones = \".\"\nlisen = 1\n").unwrap_err();
    let p = &err.0[0];
    assert_eq!((p.line, p.col), (4, 1), "{p}");
    assert!(p.message.contains("server"), "{p}");
    assert!(p.message.contains("lisen"), "{p}");
}

#[test]
fn bad_listen_address_is_located() {
    let err = parse_str("[server]\nlisten = [\"127.0.0.1\"]\nzones = \".\"\n").unwrap_err();
    let p = &err.0[0];
    assert_eq!(p.line, 2, "{p}");
    assert_eq!(p.col, 11, "{p}");
    assert!(p.message.starts_with("server.listen:"), "{p}");
}

#[test]
fn wrong_type_names_nested_key() {
    let err = parse_str("[server]\nlisten = [\"127.0.0.1:1\"]\nzones = \".\"\n[site]\nid = 5\n")
        .unwrap_err();
    let p = &err.0[0];
    assert_eq!(p.line, 5, "{p}");
    assert!(p.message.contains("site.id"), "{p}");
}

#[test]
fn status_specs() {
    assert_eq!(
        status_ranges(&StatusSpec::Text("200-299".into())).unwrap(),
        vec![(200, 299)]
    );
    assert!(status_ranges(&StatusSpec::Text("299-200".into())).is_err());
    assert!(status_ranges(&StatusSpec::Code(42)).is_err());
}

#[test]
fn bad_health_header_is_a_problem() {
    let err = parse_str(
        "[server]\nlisten = [\"127.0.0.1:1\"]\nzones = \".\"\n[health.h]\nkind = \"http\"\nheaders = { \"Bad Name\" = \"x\" }\n",
    )
    .unwrap_err();
    assert!(
        err.0.iter().any(|p| p.message.contains("health.h.headers")),
        "{err}"
    );
}

fn positions(e: &Problems) -> Vec<(usize, usize)> {
    e.0.iter().map(|p| (p.line, p.col)).collect()
}

#[test]
fn a_type_error_per_section_is_reported() {
    let err = parse_str(concat!(
        "[server]\nlisten = \"x\"\nzones = \".\"\n",        // 1-3
        "[site]\nid = 5\n",                                 // 4-5
        "[regions.eu]\ncountries = \"DE\"\n",               // 6-7
        "[[service]]\nname = \"a.example.\"\npolicy = 1\n", // 8-10
        "endpoints = [{ address = \"192.0.2.1\" }]\n",      // 11
        "[[service]]\nname = \"b.example.\"\npolicy = \"round-robin\"\n", // 12-14
        "endpoints = [{ address = \"192.0.2.1\" }]\nbogus = 1\n", // 15-16
    ))
    .unwrap_err();
    assert_eq!(
        positions(&err),
        [(2, 10), (5, 6), (7, 13), (10, 10), (16, 1)],
        "{err}"
    );
    // Services are named by their name; serde's words become TOML's.
    assert!(
        err.0[3]
            .message
            .starts_with("service \"a.example.\".policy: expected a string, found an integer"),
        "{err}"
    );
    assert!(
        err.0[4]
            .message
            .starts_with("service \"b.example.\".bogus:"),
        "{err}"
    );
}

#[test]
fn semantic_checks_run_beside_type_errors() {
    // service[0] does not deserialize; service[1] does and has its own problems, which
    // name it by its own name. Nothing is said about the stand-in for service[0], nor
    // about the region whose type is wrong but which service[1] refers to.
    let err = parse_str(concat!(
        "[server]\nlisten = [\"127.0.0.1:1\"]\nzones = \".\"\ntcp_idle_timeout = \"soon\"\n", // 1-4
        "[regions.eu]\ncountries = \"DE\"\n",                                                 // 5-6
        "[[service]]\nname = \"a.example.\"\npolicy = 1\n",                                   // 7-9
        "endpoints = [{ address = \"192.0.2.1\" }]\n",                                        // 10
        "[[service]]\nname = \"b.example.\"\npolicy = \"fastest\"\n", // 11-13
        "endpoints = [{ address = \"192.0.2.1\", region = \"eu\" }, { address = \"x\" }]\n", // 14
    ))
    .unwrap_err();
    let msgs: Vec<String> = err.0.iter().map(|p| p.message.clone()).collect();
    assert_eq!(
        positions(&err),
        [(4, 20), (6, 13), (9, 10), (13, 10), (14, 68)],
        "{err}"
    );
    assert!(msgs[0].starts_with("server.tcp_idle_timeout:"), "{err}");
    assert!(
        msgs[3].starts_with("service \"b.example.\".policy:"),
        "{err}"
    );
    assert!(
        msgs[4].starts_with("service \"b.example.\".endpoints[1].address:"),
        "{err}"
    );
}

#[test]
fn syntax_errors_are_located_and_the_rest_still_checked() {
    let err = parse_str(
        "[server]\nlisten = [\"127.0.0.1:1\"]\nzones = \".\"\nfoo = = 1\n[site]\nid = \"\"\n",
    )
    .unwrap_err();
    assert!(
        err.0
            .iter()
            .any(|p| (p.line, p.col) == (4, 7) && p.message.contains("`=`")),
        "{err}"
    );
    assert!(
        err.0.iter().any(|p| p.message.starts_with("site.id:")),
        "{err}"
    );
    // A broken header leaves the document's shape in doubt: only the syntax error shows.
    let err = parse_str("[server\nlisten = [\"127.0.0.1:1\"]\nzones = \".\"\n").unwrap_err();
    assert_eq!(positions(&err), [(1, 8)], "{err}");
}

#[test]
fn a_broken_server_section_still_names_the_zones_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    let e = examine_text(&path, "[server]\nlisten = 1\nzones = \".\"\n".into());
    assert_eq!(e.zones_dir.as_deref(), Some(dir.path()));
    assert_eq!(e.problems.len(), 1, "{:?}", e.problems);
    let e = examine_text(&path, "[server]\nlisten = 1\nzones = \"nope\"\n".into());
    assert_eq!(e.zones_dir, None);
    let mut p = e.problems;
    sort_problems(&mut p, &path);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[1].message.starts_with("server.zones:"), "{p:?}");
}

#[test]
fn sorted_problems_have_no_repeats() {
    let f = Path::new("a.toml");
    let path = f.to_path_buf();
    let z = Path::new("z/a.zone");
    let mut p = vec![
        Problem::new(z, 1, 1, "z"),
        Problem::new(f, 3, 1, "b"),
        Problem::new(f, 1, 2, "a"),
        Problem::new(f, 3, 1, "c"),
        Problem::new(f, 3, 1, "b"),
    ];
    sort_problems(&mut p, &path);
    let got: Vec<String> = p.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "a.toml:1:2: a",
            "a.toml:3:1: b",
            "a.toml:3:1: c",
            "z/a.zone:1:1: z"
        ]
    );
}

#[test]
fn rrl_defaults_follow_bind() {
    let base = "[server]\nlisten = [\"127.0.0.1:1\"]\nzones = \".\"\n";
    assert!(parse_str(base).unwrap().rrl.is_none());
    let r = parse_str(&format!("{base}[rrl]\nresponses_per_second = 7\n"))
        .unwrap()
        .rrl
        .unwrap();
    assert_eq!(
        (
            r.responses_per_second,
            r.nxdomains_per_second,
            r.errors_per_second
        ),
        (7, 7, 7)
    );
    assert_eq!((r.slip, r.ipv4_prefix, r.ipv6_prefix), (2, 24, 56));
    assert_eq!(r.window, Duration::from_secs(5));
    assert_eq!(r.table_size, rrl::DEFAULT_TABLE_SIZE);
    assert!(!r.log_only && r.exempt.is_empty());
}

#[test]
fn cookie_secret_is_32_hex_digits() {
    let cfg = |v: &str| {
        format!("[server]\nlisten = [\"127.0.0.1:1\"]\nzones = \".\"\ncookie_secret = \"{v}\"\n")
    };
    assert!(parse_str(&cfg("000102030405060708090a0b0c0d0e0f"))
        .unwrap()
        .cookie_secret
        .is_some());
    let err = parse_str(&cfg("0001")).unwrap_err();
    assert_eq!((err.0[0].line, err.0[0].col), (4, 17), "{err}");
}

#[test]
fn line_col_counts_from_one() {
    assert_eq!(line_col("ab\ncd", 3), (2, 1));
    assert_eq!(line_col("ab\ncd", 1), (1, 2));
}

#[test]
fn prober_cpu_budget_is_checked_where_it_is_written() {
    let base = "[server]\nlisten = [\"127.0.0.1:1\"]\nzones = \".\"\n";
    let ok = parse_str(&format!("{base}[prober]\ncpu_budget = \"25%\"\n")).unwrap();
    assert_eq!(prober::cpu_budget(ok.config.prober.as_ref()), Some(0.25));
    let off = parse_str(&format!("{base}[prober]\ncpu_budget = \"off\"\n")).unwrap();
    assert_eq!(prober::cpu_budget(off.config.prober.as_ref()), None);
    let default = parse_str(base).unwrap();
    assert_eq!(
        prober::cpu_budget(default.config.prober.as_ref()),
        Some(prober::DEFAULT_CPU_BUDGET)
    );
    for bad in ["\"250%\"", "\"25\"", "\"fast\""] {
        let err = parse_str(&format!("{base}[prober]\ncpu_budget = {bad}\n")).unwrap_err();
        let p = &err.0[0];
        assert_eq!((p.line, p.col), (5, 14), "{p}");
        assert!(p.message.starts_with("prober.cpu_budget:"), "{p}");
    }
    let err = parse_str(&format!("{base}[prober]\ncpu_budget = 25\n")).unwrap_err();
    assert!(err.0[0].message.contains("cpu_budget"), "{}", err.0[0]);
    let err = parse_str(&format!("{base}[prober]\nbudget = \"25%\"\n")).unwrap_err();
    assert_eq!(err.0[0].line, 5, "{}", err.0[0]);
}
