//! Every recipe under examples/configs/ passes `meridian check` (the real binary), so none can
//! rot as the schema moves. The recipes are found by walking the folder: a new one is checked
//! without being listed here. examples/pending/ (sections not in the schema yet) is left out
//! on purpose; see its README.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.toml` below `dir`, at any depth, sorted.
fn configs_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|x| x == "toml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn recipes() -> Vec<PathBuf> {
    configs_under(&repo().join("examples/configs"))
}

#[test]
fn every_example_config_passes_check() {
    let recipes = recipes();
    assert!(!recipes.is_empty(), "no recipes found");
    let mut failed = Vec::new();
    for path in &recipes {
        let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["check", "--config"])
            .arg(path)
            .output()
            .expect("run meridian check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // A warning is a recipe teaching something questionable: it fails as well.
        if out.status.code() != Some(0) || !stderr.trim().is_empty() {
            failed.push(format!(
                "{} (exit {:?}):\n{stderr}",
                path.display(),
                out.status.code()
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn there_is_a_recipe_for_every_policy() {
    let texts: Vec<String> = recipes()
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read recipe"))
        .collect();
    for policy in meridian::config::POLICIES {
        let line = format!("policy = \"{policy}\"");
        assert!(
            texts
                .iter()
                .any(|t| t.lines().any(|l| l.trim_start().starts_with(&line))),
            "no recipe in examples/configs/ uses {line}"
        );
    }
}

#[test]
fn every_recipe_explains_itself() {
    // Recipes are for copying: each opens with a comment saying what it is for.
    for path in recipes() {
        let text = std::fs::read_to_string(&path).expect("read recipe");
        assert!(
            text.starts_with("# Recipe: "),
            "{} does not open with `# Recipe: ...`",
            path.display()
        );
    }
}
