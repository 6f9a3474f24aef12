//! The floors (docs/architecture.md, "Floors"): each top-level module of `src/` sits on a floor
//! and may import (name `crate::X`) only modules on its own floor or below. This test reads the
//! sources the way `../shared/tools/modgraph.py` does and fails when a module imports a higher
//! floor, when a module has no floor, or when an edge on the allowlist of today's upward imports
//! no longer exists (so the list can only shrink: whoever removes an upward import deletes its
//! line here). Issue 19 removes the allowlist entry by entry.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Floor of every top-level module; a new module must be placed here before the test passes.
const FLOORS: &[(&str, u8)] = &[
    // 0 base: helpers that import nothing of the crate
    ("base", 0),
    // 1 config: schema, load, checks
    ("config", 1),
    // 2 model: what a snapshot is made of
    ("zone", 2),
    ("geo", 2),
    ("policy", 2),
    ("health", 2),
    ("prober", 5),
    ("snapshot", 2),
    ("dnssec", 2),
    // 3 answer: query bytes -> response bytes
    ("answer", 3),
    ("dns", 3),
    ("fast", 3),
    ("ecs", 3),
    ("edns", 3),
    ("cookie", 3),
    ("rrl", 3),
    // 4 server: transports
    ("server", 4),
    // 5 control: loops and subsystems around the server
    ("fleet", 5),
    ("anycast", 5),
    ("secondary", 5),
    ("reload", 5),
    ("history", 5),
    ("systemd", 5),
    ("querylog", 5),
    // 6 faces: what people and other programs see
    ("admin", 6),
    ("metrics", 6),
    ("status", 6),
    ("status_page", 6),
    ("explain", 6),
    ("ctl", 6),
    ("cli", 6),
    ("simulate", 6),
    ("manpage", 6),
];

/// Today's upward imports (from -> to). Each is a debt, not a permission.
const ALLOWED_UPWARD: &[(&str, &str, &str)] = &[];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).expect("read src dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level modules: `src/NAME.rs` or `src/NAME/`, without lib.rs and main.rs (they only
/// declare modules), each with its files.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut mods: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for e in fs::read_dir(src).expect("read src").flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            let mut files = Vec::new();
            rs_files(&p, &mut files);
            mods.entry(name).or_default().extend(files);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            if stem != "lib" && stem != "main" {
                mods.entry(stem.to_string()).or_default().push(p);
            }
        }
    }
    mods
}

/// The text without block comments and without everything after `//` on a line (doc and line
/// comments mention modules without importing them).
fn strip_comments(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("/*") {
        s.push_str(&rest[..i]);
        rest = rest[i..].find("*/").map_or("", |j| &rest[i + j + 2..]);
    }
    s.push_str(rest);
    s.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The top-level modules a text names: `crate::x...` and each first segment of a
/// `crate::{a, b::c, d::{e, f}}` group.
fn refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("crate::") {
        let at = from + i;
        from = at + "crate::".len();
        if text[..at].chars().next_back().is_some_and(is_ident) {
            continue; // e.g. `mycrate::`
        }
        let rest = &text[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item, mut items) = (0i32, String::new(), Vec::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            items.push(item);
            for it in items {
                let seg = it
                    .trim()
                    .split("::")
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                if !seg.is_empty() {
                    out.insert(seg);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Edges between top-level modules, from -> {to}.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(src);
    let mut edges = BTreeMap::new();
    for (m, files) in &mods {
        let mut to = BTreeSet::new();
        for f in files {
            let text = fs::read_to_string(f).expect("read source file");
            for r in refs(&strip_comments(&text)) {
                if &r != m && mods.contains_key(&r) {
                    to.insert(r);
                }
            }
        }
        edges.insert(m.clone(), to);
    }
    edges
}

#[test]
fn modules_import_only_their_floor_or_below() {
    let floors: BTreeMap<&str, u8> = FLOORS.iter().copied().collect();
    let allowed: BTreeSet<(&str, &str)> = ALLOWED_UPWARD.iter().map(|&(a, b, _)| (a, b)).collect();
    assert_eq!(
        allowed.len(),
        ALLOWED_UPWARD.len(),
        "an allowlist entry is listed twice"
    );
    let edges = graph(&src_dir());
    let mut errors = Vec::new();

    for m in edges.keys() {
        if !floors.contains_key(m.as_str()) {
            errors.push(format!(
                "module `{m}` has no floor: add it to FLOORS in tests/layering.rs"
            ));
        }
    }
    for (name, _) in FLOORS {
        if !edges.contains_key(*name) {
            errors.push(format!(
                "FLOORS names `{name}`, which is not a module of src/ any more"
            ));
        }
    }
    let mut upward = BTreeSet::new();
    for (from, tos) in &edges {
        let Some(&f) = floors.get(from.as_str()) else {
            continue;
        };
        for to in tos {
            let Some(&t) = floors.get(to.as_str()) else {
                continue;
            };
            if t > f {
                upward.insert((from.as_str(), to.as_str()));
                if !allowed.contains(&(from.as_str(), to.as_str())) {
                    errors.push(format!(
                        "`{from}` (floor {f}) imports `{to}` (floor {t}): a module may import only \
                         its own floor or below (docs/architecture.md, \"Floors\")"
                    ));
                }
            }
        }
    }
    for &(from, to, why) in ALLOWED_UPWARD {
        if !upward.contains(&(from, to)) {
            errors.push(format!(
                "allowlisted upward import `{from}` -> `{to}` ({why}) no longer exists (or is no \
                 longer upward): delete it from ALLOWED_UPWARD so the list only shrinks"
            ));
        }
    }
    assert!(errors.is_empty(), "layering:\n  {}", errors.join("\n  "));
}

#[test]
fn the_reader_sees_groups_paths_and_not_comments() {
    let text =
        "use crate::{a, b::c, d::{e, f}};\n// crate::g\n/* crate::h */ let x = crate::i::j(); \
                /// [`crate::k`]\nmycrate::l";
    let got = refs(&strip_comments(text));
    let want: BTreeSet<String> = ["a", "b", "d", "i"].iter().map(|s| s.to_string()).collect();
    assert_eq!(got, want);
}

/// The circles of a graph: its strongly connected components of more than one module
/// (Tarjan's algorithm), each sorted, in name order.
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(st: &mut State<'a>, v: &'a str) {
        let i = st.index.len();
        st.index.insert(v, i);
        st.low.insert(v, i);
        st.stack.push(v);
        st.on_stack.insert(v);
        if let Some(tos) = st.edges.get(v) {
            for w in tos {
                let w = w.as_str();
                if !st.index.contains_key(w) {
                    visit(st, w);
                    let lw = st.low[w];
                    let lv = st.low[v];
                    st.low.insert(v, lv.min(lw));
                } else if st.on_stack.contains(w) {
                    let iw = st.index[w];
                    let lv = st.low[v];
                    st.low.insert(v, lv.min(iw));
                }
            }
        }
        if st.low[v] == st.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on_stack.remove(w);
                scc.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                st.out.push(scc);
            }
        }
    }
    let mut st = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !st.index.contains_key(v.as_str()) {
            visit(&mut st, v.as_str());
        }
    }
    st.out.sort();
    st.out
}

/// Floors stop a module importing upward; this stops two modules of one floor importing each
/// other, directly or round a longer circle (`python3 ../shared/tools/modgraph.py src` draws
/// the same graph).
#[test]
fn no_module_imports_itself_round_a_circle() {
    let found = circles(&graph(&src_dir()));
    assert!(
        found.is_empty(),
        "modules that import each other round a circle: {found:?}; move what both need down a \
         floor, or split the module whose parts sit on different floors"
    );
}

/// The circle finder itself: it finds a circle of three and one of two, and none in a chain.
#[test]
fn the_circle_finder_finds_circles() {
    let g = |pairs: &[(&str, &str)]| {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for &(a, b) in pairs {
            m.entry(a.to_string()).or_default().insert(b.to_string());
            m.entry(b.to_string()).or_default();
        }
        m
    };
    let three = g(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]);
    assert_eq!(circles(&three), vec![vec!["a", "b", "c"]]);
    let two = g(&[("x", "y"), ("y", "x"), ("a", "x")]);
    assert_eq!(circles(&two), vec![vec!["x", "y"]]);
    let chain = g(&[("a", "b"), ("b", "c"), ("a", "c")]);
    assert!(circles(&chain).is_empty());
}
