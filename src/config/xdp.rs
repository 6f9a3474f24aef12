//! `[server] xdp`: the interface names' check (a problem: `check` fails) and what `check` warns
//! about (the build has no `xdp` feature, or no such interface here), which `serve` would
//! otherwise only log as it falls back to sockets (SPEC "Answers at the NIC").

use std::ops::Range;

use serde_spanned::Spanned;

/// Linux's rule for interface names (`dev_valid_name`): 1 to 15 bytes, not `.` or `..`, no `/`,
/// `:` or white space; and each name once.
pub fn problems(list: &[Spanned<String>]) -> Vec<(Range<usize>, String)> {
    let mut out = Vec::new();
    for (i, name) in list.iter().enumerate() {
        let n = name.get_ref();
        let bad = n.is_empty()
            || n.len() > 15
            || n == "."
            || n == ".."
            || n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
        if bad {
            out.push((
                name.span(),
                format!("server.xdp: `{n}` is not an interface name (1 to 15 bytes, no `/`, `:` or spaces)"),
            ));
        } else if list[..i].iter().any(|m| m.get_ref() == n) {
            out.push((name.span(), format!("server.xdp: `{n}` is listed twice")));
        }
    }
    out
}

/// What will keep `serve` from answering over AF_XDP on these interfaces, seen from here.
pub fn warnings(list: &[Spanned<String>]) -> Vec<(Range<usize>, String)> {
    let mut out = Vec::new();
    if list.is_empty() {
        return out;
    }
    if !cfg!(feature = "xdp") {
        out.push((
            list[0].span(),
            "warning: server.xdp: this build has no `xdp` feature (cargo build --features xdp), \
             so the UDP sockets answer every query"
                .to_string(),
        ));
        return out;
    }
    for name in list {
        let n = name.get_ref();
        if !std::path::Path::new("/sys/class/net").join(n).exists() {
            out.push((
                name.span(),
                format!(
                    "warning: server.xdp: no interface `{n}` on this machine; `serve` would \
                     answer its queries with the UDP sockets"
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<Spanned<String>> {
        v.iter()
            .map(|s| Spanned::new(0..1, s.to_string()))
            .collect()
    }

    #[test]
    fn interface_names_follow_linux_rules() {
        assert!(problems(&names(&["eth0", "veth-s", "enp3s0f1np1"])).is_empty());
        for bad in [
            "",
            "a/b",
            "eth0:1",
            "has space",
            "sixteen-bytes-xx",
            ".",
            "..",
        ] {
            assert_eq!(problems(&names(&[bad])).len(), 1, "{bad:?}");
        }
        let twice = problems(&names(&["eth0", "eth1", "eth0"]));
        assert_eq!(twice.len(), 1);
        assert!(twice[0].1.contains("twice"));
    }

    #[test]
    fn check_warns_about_what_serve_cannot_do() {
        assert!(warnings(&[]).is_empty());
        let w = warnings(&names(&["no-such-if0"]));
        assert_eq!(w.len(), 1);
        if cfg!(feature = "xdp") {
            assert!(w[0].1.contains("no interface `no-such-if0`"), "{}", w[0].1);
        } else {
            assert!(w[0].1.contains("no `xdp` feature"), "{}", w[0].1);
        }
    }
}
