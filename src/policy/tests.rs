use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::Name;

use super::*;
use crate::geo::{AddrSource, Locator};
use crate::health::EndpointState;

fn ep(addr: &str, region: Option<usize>, weight: f64, priority: u32) -> Endpoint {
    Endpoint {
        addr: addr.parse().unwrap(),
        target: None,
        region,
        weight,
        capacity: weight,
        priority,
        probe: String::new(),
        health: None,
        pool: None,
        state: Arc::new(EndpointState::new(true)),
    }
}

fn svc(policy: PolicyKind, max: usize, eps: Vec<Endpoint>) -> Service {
    Service::new(
        Name::from_ascii("www.example.com.").unwrap(),
        policy,
        30,
        max,
        WhenAllDown::ServeAll,
        None,
        eps,
    )
}

fn pick(s: &Service, client: &str) -> Vec<usize> {
    let loc = Locator::default();
    let mut c = Client::new(
        client.parse::<IpAddr>().unwrap(),
        AddrSource::SourceIp,
        &loc,
    );
    select(s, &[], Family::V4, &mut c, None).picks.to_vec()
}

#[test]
fn weighted_shares_follow_weights() {
    let s = svc(
        PolicyKind::Weighted,
        1,
        vec![
            ep("192.0.2.1", None, 3.0, 1),
            ep("192.0.2.2", None, 2.0, 1),
            ep("192.0.2.3", None, 1.0, 1),
        ],
    );
    let mut counts = [0usize; 3];
    let n = 30_000;
    for _ in 0..n {
        counts[pick(&s, "10.0.0.1")[0]] += 1;
    }
    for (i, w) in [3.0, 2.0, 1.0].iter().enumerate() {
        let share = counts[i] as f64 / n as f64;
        assert!((share - w / 6.0).abs() < 0.02, "endpoint {i}: {share}");
    }
}

#[test]
fn round_robin_rotates() {
    let s = svc(
        PolicyKind::RoundRobin,
        1,
        vec![
            ep("192.0.2.1", None, 1.0, 1),
            ep("192.0.2.2", None, 1.0, 1),
            ep("192.0.2.3", None, 1.0, 1),
        ],
    );
    let seq: Vec<usize> = (0..6).map(|_| pick(&s, "10.0.0.1")[0]).collect();
    assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
}

#[test]
fn failover_takes_lowest_priority_that_is_up() {
    let s = svc(
        PolicyKind::Failover,
        2,
        vec![
            ep("192.0.2.1", None, 1.0, 2),
            ep("192.0.2.2", None, 1.0, 1),
            ep("192.0.2.3", None, 1.0, 3),
        ],
    );
    assert_eq!(pick(&s, "10.0.0.1"), vec![1]);
    s.endpoints[1].state.set_healthy(false);
    assert_eq!(pick(&s, "10.0.0.1"), vec![0]);
    s.endpoints[0].state.set_drained(true);
    assert_eq!(pick(&s, "10.0.0.1"), vec![2]);
}

#[test]
fn hash_is_stable_and_moves_only_the_lost_endpoints_clients() {
    let eps: Vec<Endpoint> = (1..=5)
        .map(|i| ep(&format!("192.0.2.{i}"), None, 1.0, 1))
        .collect();
    let s = svc(PolicyKind::Hash, 1, eps);
    let clients: Vec<String> = (0..2000)
        .map(|i| format!("10.{}.{}.7", i / 256, i % 256))
        .collect();
    let before: Vec<usize> = clients.iter().map(|c| pick(&s, c)[0]).collect();
    // Stable, and the same /24 maps to the same endpoint.
    for (c, b) in clients.iter().zip(&before).take(50) {
        assert_eq!(pick(&s, c)[0], *b);
        let same_24 = format!("{}.200", &c[..c.rfind('.').unwrap()]);
        assert_eq!(pick(&s, &same_24)[0], *b);
    }
    // Spread over all endpoints.
    for e in 0..5 {
        let n = before.iter().filter(|&&b| b == e).count();
        assert!((250..=550).contains(&n), "endpoint {e} got {n} of 2000");
    }
    s.endpoints[2].state.set_healthy(false);
    for (c, b) in clients.iter().zip(&before) {
        let now = pick(&s, c)[0];
        if *b != 2 {
            assert_eq!(now, *b, "client {c} moved although its endpoint stayed up");
        } else {
            assert_ne!(now, 2);
        }
    }
}

#[test]
fn all_down_serve_all_and_empty() {
    let mut s = svc(
        PolicyKind::Weighted,
        2,
        vec![ep("192.0.2.1", None, 1.0, 1), ep("192.0.2.2", None, 1.0, 1)],
    );
    for e in &s.endpoints {
        e.state.set_healthy(false);
    }
    let mut p = pick(&s, "10.0.0.1");
    p.sort();
    assert_eq!(p, vec![0, 1]);
    s.when_all_down = WhenAllDown::Empty;
    assert!(pick(&s, "10.0.0.1").is_empty());
}

#[test]
fn latency_and_least_loaded_use_live_figures_or_fall_back() {
    let s = svc(
        PolicyKind::Latency,
        1,
        vec![ep("192.0.2.1", None, 1.0, 1), ep("192.0.2.2", None, 1.0, 1)],
    );
    let seen: std::collections::HashSet<usize> =
        (0..200).map(|_| pick(&s, "10.0.0.1")[0]).collect();
    assert_eq!(seen.len(), 2, "no figures: weighted over both");
    s.endpoints[0].state.set_rtt_us(Some(9000));
    s.endpoints[1].state.set_rtt_us(Some(800));
    assert!((0..50).all(|_| pick(&s, "10.0.0.1")[0] == 1));

    let s = svc(
        PolicyKind::LeastLoaded,
        1,
        vec![ep("192.0.2.1", None, 1.0, 1), ep("192.0.2.2", None, 1.0, 1)],
    );
    s.endpoints[0].state.set_load(Some(0.2));
    s.endpoints[1].state.set_load(Some(0.9));
    assert!((0..50).all(|_| pick(&s, "10.0.0.1")[0] == 0));
}

#[test]
fn policy_kinds_follow_the_config_order() {
    for (i, name) in crate::config::POLICIES.iter().enumerate() {
        let k = PolicyKind::parse(name).unwrap();
        assert_eq!(k as usize, i, "{name}");
        assert_eq!(k.as_str(), *name);
    }
}

fn many(n: usize) -> Vec<Endpoint> {
    (0..n)
        .map(|i| {
            ep(
                &format!("10.0.{}.{}", i / 256, i % 256),
                None,
                (1 + i % 4) as f64,
                1,
            )
        })
        .collect()
}

fn pick_n(s: &Service, n: usize) -> Vec<Vec<usize>> {
    (0..n).map(|_| pick(s, "10.0.0.1")).collect()
}

/// The binary-search draws (many endpoints, some down) keep the weighted shares, and a
/// multivalue answer never repeats an endpoint.
#[test]
fn weighted_draws_over_many_endpoints_follow_weights_around_down_ones() {
    let s = svc(PolicyKind::Weighted, 1, many(40));
    for i in (0..40).step_by(3) {
        s.endpoints[i].state.set_healthy(false);
    }
    let up: Vec<usize> = (0..40).filter(|i| i % 3 != 0).collect();
    let total: f64 = up.iter().map(|&i| s.endpoints[i].weight).sum();
    let mut counts = [0usize; 40];
    let n = 60_000;
    for p in pick_n(&s, n) {
        counts[p[0]] += 1;
    }
    for (i, &c) in counts.iter().enumerate() {
        let share = c as f64 / n as f64;
        let want = if i % 3 == 0 {
            0.0
        } else {
            s.endpoints[i].weight / total
        };
        assert!(
            (share - want).abs() < 0.006,
            "endpoint {i}: {share} vs {want}"
        );
    }
    let s = svc(PolicyKind::Weighted, 3, many(40));
    for p in pick_n(&s, 500) {
        let mut d = p.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 3, "{p:?}");
    }
}

/// With nearly everything down the draws miss and the exact order over the few left takes
/// over: both of them, never a down one.
#[test]
fn weighted_with_most_endpoints_down_still_finds_the_up_ones() {
    let s = svc(PolicyKind::Weighted, 2, many(1000));
    for e in &s.endpoints[..998] {
        e.state.set_healthy(false);
    }
    for p in pick_n(&s, 50) {
        let mut p = p;
        p.sort();
        assert_eq!(p, vec![998, 999]);
    }
}

/// latency: lowest first, then the next lowest; equal figures weighted among themselves.
#[test]
fn latency_takes_the_lowest_figures_in_order_with_ties_weighted() {
    let s = svc(PolicyKind::Latency, 3, many(12));
    for (i, e) in s.endpoints.iter().enumerate() {
        e.state.set_rtt_us(Some(if i == 7 {
            100
        } else if i % 2 == 0 {
            300
        } else {
            200
        }));
    }
    let mut second = [0usize; 12];
    for p in pick_n(&s, 4000) {
        assert_eq!(p[0], 7);
        assert!(
            p[1] % 2 == 1 && p[2] % 2 == 1 && p[1] != p[2] && p[1] != 7,
            "{p:?}"
        );
        second[p[1]] += 1;
    }
    // Odd endpoints other than 7 tie at 200 µs: weights 2, 4, 2, 4, 2 (1, 3, 5, 9, 11).
    let tied = [1usize, 3, 5, 9, 11];
    let total: f64 = tied.iter().map(|&i| s.endpoints[i].weight).sum();
    for i in tied {
        let share = second[i] as f64 / 4000.0;
        let want = s.endpoints[i].weight / total;
        assert!(
            (share - want).abs() < 0.04,
            "endpoint {i}: {share} vs {want}"
        );
    }
}

/// hash with several answers: the rendezvous order, the same for the same subnet, distinct.
#[test]
fn hash_multivalue_is_stable_and_distinct() {
    let s = svc(PolicyKind::Hash, 3, many(100));
    let a = pick(&s, "10.9.8.7");
    assert_eq!(a.len(), 3);
    assert_eq!(pick(&s, "10.9.8.200"), a);
    let mut d = a.clone();
    d.sort();
    d.dedup();
    assert_eq!(d.len(), 3);
    // Taking the best away promotes the second and third.
    s.endpoints[a[0]].state.set_healthy(false);
    assert_eq!(pick(&s, "10.9.8.7")[..2], a[1..]);
}

/// A query reads a group's up-count, kept per health epoch, not every endpoint's health
/// (issue 22): while no endpoint's health changes, queries at a service of 1,000 endpoints
/// read the flags of at most the few endpoints their draws land on, for every policy that
/// does not rank by a figure of each endpoint, with everything up and with some down.
/// Another test bumping the epoch at the same time (the epoch is process-wide) makes a query
/// recount once, so only the queries that ran within one unchanged epoch, after a query that
/// did too, are held to it.
#[test]
fn queries_read_the_up_count_not_every_endpoint() {
    use crate::health::{epoch, UP_READS};
    let reads = || UP_READS.with(|c| c.get());
    for policy in [
        PolicyKind::Weighted,
        PolicyKind::Geo,
        PolicyKind::Failover,
        PolicyKind::RoundRobin,
    ] {
        for down in [0usize, 10] {
            if policy == PolicyKind::RoundRobin && down > 0 {
                continue; // lists the eligible endpoints while some are down (documented)
            }
            let mut eps = many(1000);
            for (i, e) in eps.iter_mut().enumerate() {
                e.priority = 1 + (i % 2) as u32;
            }
            let s = svc(policy, 2, eps);
            for e in s.endpoints.iter().step_by(97).take(down) {
                e.state.set_healthy(false);
            }
            // Other tests on other threads bump the process-wide epoch too (on a busy machine,
            // often): query until 20 queries ran within one unchanged epoch, up to 5,000.
            let (mut held, mut last) = (0, None);
            for _ in 0..5000 {
                if held >= 20 {
                    break;
                }
                let (e0, r0) = (epoch(), reads());
                let p = pick(&s, "10.0.0.1");
                let (e1, r1) = (epoch(), reads());
                assert_eq!(p.len(), 2, "{policy:?}");
                if e0 == e1 && last == Some(e0) {
                    // Two draws, each reading the one endpoint it lands on, and a redraw or
                    // two when one lands on a down endpoint or on the first pick.
                    assert!(r1 - r0 <= 8, "{policy:?}, {down} down: {} reads", r1 - r0);
                    held += 1;
                }
                // The count a query stores is tagged with the epoch it read first: only a
                // query that ran wholly within one epoch leaves the next a count to read.
                last = (e0 == e1).then_some(e1);
            }
            assert!(held > 0, "{policy:?}: the epoch changed under every query");
        }
    }
}

/// A count cached for one epoch is not used after a change: a drain, an undrain and a
/// health change each show in the next answer.
#[test]
fn a_cached_up_count_follows_every_change() {
    let s = svc(PolicyKind::Weighted, 1, many(3));
    assert!(!select_v4(&s).degraded);
    s.endpoints[1].state.set_drained(true);
    let sel = select_v4(&s);
    assert!(sel.degraded && !sel.all_down);
    s.endpoints[0].state.set_healthy(false);
    s.endpoints[2].state.set_healthy(false);
    assert!(select_v4(&s).all_down);
    s.endpoints[1].state.set_drained(false);
    let sel = select_v4(&s);
    assert!(!sel.all_down && sel.picks.as_slice() == [1]);
    s.endpoints[0].state.set_healthy(true);
    s.endpoints[2].state.set_healthy(true);
    assert!(!select_v4(&s).degraded);
}

fn select_v4(s: &Service) -> Selection {
    let loc = Locator::default();
    let mut c = Client::new("10.0.0.1".parse().unwrap(), AddrSource::SourceIp, &loc);
    select(s, &[], Family::V4, &mut c, None)
}

/// A tiered service built by hand: tier 1 weighted over `.1`/`.2` (min_up 2), tier 2 over the
/// IPv4 `.3` and IPv6 `db8::3`, and `fallback` `.99` when `fallback`.
fn tiered(when_all_down: WhenAllDown, fallback: bool) -> Service {
    use super::tier::{Tier, Tiers};
    let t1 = vec![ep("192.0.2.1", None, 1.0, 1), ep("192.0.2.2", None, 1.0, 1)];
    let t2 = vec![
        ep("192.0.2.3", None, 1.0, 1),
        ep("2001:db8::3", None, 1.0, 1),
    ];
    let mut all: Vec<Endpoint> = t1.iter().chain(&t2).cloned().collect();
    if fallback {
        all.push(ep("192.0.2.99", None, 1.0, 1));
    }
    let mut s = svc(PolicyKind::Weighted, 4, all);
    s.when_all_down = when_all_down;
    s.ttl_degraded = 5;
    let tier = |eps: Vec<Endpoint>, map: Vec<usize>, min_up| Tier {
        svc: svc(PolicyKind::Weighted, 4, eps),
        map,
        min_up,
        pools: Vec::new(),
    };
    s.tiers = Some(Box::new(Tiers {
        list: vec![tier(t1, vec![0, 1], 2), tier(t2, vec![2, 3], 1)],
        fallback: if fallback { vec![4] } else { Vec::new() },
    }));
    s
}

fn addrs_of(s: &Service, sel: &Selection) -> Vec<String> {
    let mut v: Vec<String> = sel
        .picks
        .iter()
        .map(|&i| s.endpoints[i].addr.to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn tiers_answer_in_order_below_min_up_then_fallback_then_when_all_down() {
    let s = tiered(WhenAllDown::ServeAll, true);
    let sel = select_v4(&s);
    assert_eq!(addrs_of(&s, &sel), ["192.0.2.1", "192.0.2.2"]);
    assert!(!sel.degraded && s.answer_ttl(&sel) == 30);
    // One of tier 1 down: below min_up 2, tier 2 answers (the service's indices), degraded.
    s.endpoints[0].state.set_healthy(false);
    let sel = select_v4(&s);
    assert_eq!(addrs_of(&s, &sel), ["192.0.2.3"]);
    assert!(sel.degraded && s.answer_ttl(&sel) == 5 && !sel.all_down);
    // AAAA: tier 1 has no IPv6 endpoint, so it is skipped, not passed over: not degraded.
    let loc = Locator::default();
    let mut c = Client::new("10.0.0.1".parse().unwrap(), AddrSource::SourceIp, &loc);
    let sel = select(&s, &[], Family::V6, &mut c, None);
    assert_eq!(addrs_of(&s, &sel), ["2001:db8::3"]);
    // Tier 2's IPv4 endpoint down too: the fallback.
    s.endpoints[2].state.set_healthy(false);
    let sel = select_v4(&s);
    assert_eq!(addrs_of(&s, &sel), ["192.0.2.99"]);
    assert!(sel.degraded && !sel.all_down && sel.scope == 0);

    // Without a fallback: serve-all answers with the first tier as if all were up.
    let s = tiered(WhenAllDown::ServeAll, false);
    s.endpoints[0].state.set_healthy(false);
    s.endpoints[2].state.set_healthy(false);
    let sel = select_v4(&s);
    assert_eq!(addrs_of(&s, &sel), ["192.0.2.1", "192.0.2.2"]);
    assert!(sel.all_down && sel.degraded);
    // empty: NODATA; servfail: SERVFAIL.
    for (w, servfail) in [(WhenAllDown::Empty, false), (WhenAllDown::Servfail, true)] {
        let s = tiered(w, false);
        s.endpoints[0].state.set_healthy(false);
        s.endpoints[2].state.set_healthy(false);
        let sel = select_v4(&s);
        assert!(sel.picks.is_empty() && sel.all_down && sel.servfail == servfail);
    }
}

#[test]
fn explain_traces_every_tier_with_the_services_indices() {
    let s = tiered(WhenAllDown::ServeAll, true);
    let loc = Locator::default();
    let mut c = Client::new("10.0.0.1".parse().unwrap(), AddrSource::SourceIp, &loc);
    let mut t = Trace {
        down: Down {
            addrs: vec!["192.0.2.2".parse().unwrap()],
            regions: Vec::new(),
        },
        ..Trace::default()
    };
    let sel = select(&s, &[], Family::V4, &mut c, Some(&mut t));
    assert_eq!(addrs_of(&s, &sel), ["192.0.2.3"]);
    assert_eq!(t.tiers.len(), 2);
    assert!(!t.tiers[0].answered && t.tiers[0].up == 1 && t.tiers[0].min_up == 2);
    assert!(t.tiers[0].why.contains("passed over"), "{}", t.tiers[0].why);
    assert!(t.tiers[1].answered && !t.fallback);
    // --down rode in the trace only: the live state is untouched.
    assert!(s.endpoints[1].state.healthy());
}
