//! What the Debian package and the container image ship (docs/running.md): the packaged
//! configs pass `meridian check` in the layout they are installed in, the man pages cover
//! every subcommand, and the unit, the configs and the package metadata agree on paths.
//! .ci/run goes further: it builds the .deb, installs it, checks the installed config and runs
//! `systemd-analyze verify` on the installed unit.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn meridian(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .output()
        .expect("run meridian")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `config` laid out as installed: /etc/meridian/{meridian.toml,zones/} in a temp folder, the
/// GeoIP path of /usr/share/meridian/geoip pointed at the repo's geoip/ (the same files).
fn check_installed_layout(config: &str) -> Output {
    let geoip = format!("{}/", repo().join("geoip").display());
    let text = read(config).replace("/usr/share/meridian/geoip/", &geoip);
    assert!(
        text.contains(&geoip),
        "{config} does not use /usr/share/meridian/geoip/"
    );
    let (_dir, path) = common::config_dir(&[("example.com.zone", common::EXAMPLE_ZONE)], &text);
    let path = path.to_str().expect("utf-8 temp path").to_string();
    meridian(&["check", "--config", &path])
}

fn assert_clean_check(config: &str) {
    let out = check_installed_layout(config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{config}:\n{stderr}");
    assert!(stderr.trim().is_empty(), "{config} warns:\n{stderr}");
}

#[test]
fn the_debian_config_passes_check_where_it_is_installed() {
    assert_clean_check("packaging/meridian.toml");
}

#[test]
fn the_container_config_passes_check_where_it_is_installed() {
    assert_clean_check("packaging/container.toml");
}

/// The subcommands `meridian --help` lists (less clap's own `help`).
fn subcommands() -> Vec<String> {
    let out = meridian(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn man_pages_cover_every_subcommand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("man");
    let out = meridian(&["man", "--out", out_dir.to_str().expect("utf-8")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let subs = subcommands();
    assert!(subs.iter().any(|s| s == "serve"), "{subs:?}");
    let main = std::fs::read_to_string(out_dir.join("meridian.1")).expect("meridian.1");
    assert!(main.contains(".TH meridian 1"), "{main}");
    assert!(main.contains(".SH \"EXIT STATUS\""), "{main}");
    for s in &subs {
        let page = out_dir.join(format!("meridian-{s}.1"));
        assert!(page.exists(), "no man page for `{s}`: {}", page.display());
        assert!(
            main.contains(&format!("meridian\\-{s}")),
            "meridian.1 omits {s}"
        );
    }
    // Hidden on purpose: `man` is for packaging, not for operators.
    assert!(!out_dir.join("meridian-man.1").exists());
    assert!(!subs.iter().any(|s| s == "man"), "{subs:?}");
}

#[test]
fn man_without_out_prints_the_main_page() {
    let out = meridian(&["man"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH meridian 1"));
}

#[test]
fn man_into_an_unwritable_place_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").expect("write");
    let out = meridian(&["man", "--out", file.to_str().expect("utf-8")]);
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("meridian man: cannot write to"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn the_unit_the_configs_and_the_package_agree() {
    let unit = read("packaging/meridian.service");
    let cargo = read("Cargo.toml");
    assert_eq!(unit_values(&unit, "Type"), ["notify"]);
    assert_eq!(
        unit_values(&unit, "ExecStart"),
        ["/usr/bin/meridian serve --config /etc/meridian/meridian.toml"]
    );
    assert_eq!(
        unit_values(&unit, "ExecReload").last(),
        Some(&"/bin/kill -HUP $MAINPID")
    );
    assert!(!unit_values(&unit, "WatchdogSec").is_empty());
    assert_eq!(
        unit_values(&unit, "AmbientCapabilities"),
        ["CAP_NET_BIND_SERVICE"]
    );
    assert_eq!(unit_values(&unit, "User"), ["meridian"]);
    assert_eq!(unit_values(&unit, "StateDirectory"), ["meridian"]);
    assert_eq!(unit_values(&unit, "ProtectSystem"), ["strict"]);
    // Where the unit looks is where the package puts things.
    for asset in [
        r#"["target/release/meridian", "usr/bin/", "755"]"#,
        r#"["packaging/meridian.toml", "etc/meridian/meridian.toml", "644"]"#,
        r#"["zones/example.com.zone", "etc/meridian/zones/", "644"]"#,
        r#"["geoip/default.mmdb", "usr/share/meridian/geoip/", "644"]"#,
        r#"["target/man/*.1", "usr/share/man/man1/", "644"]"#,
    ] {
        assert!(cargo.contains(asset), "Cargo.toml assets lack {asset}");
    }
    // The user the unit runs as is the one postinst creates.
    let postinst = read("packaging/debian/postinst");
    assert!(postinst.contains("useradd --system"), "{postinst}");
    assert!(postinst.contains("#DEBHELPER#"), "{postinst}");
    // The container's config sits where its CMD looks.
    let containerfile = read("Containerfile");
    assert!(containerfile.contains("COPY packaging/container.toml /etc/meridian/meridian.toml"));
    assert!(containerfile.contains(r#""--config", "/etc/meridian/meridian.toml""#));
    assert!(Path::new(&repo().join("packaging/container.toml")).exists());
}
