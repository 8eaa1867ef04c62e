//! The corpus of invalid runbooks in `tests/invalid/`: each file names the diagnostics
//! it must produce (`# expect: CODE LINE:COLUMN`, or a `.expect` file beside binary and
//! empty files), and nothing else; its rendered diagnostics are snapshot-tested.

use std::path::{Path, PathBuf};

use redis_move::runbook::diagnostic::{DiagnosticFormat, HumanStyle, render};
use redis_move::runbook::{Diagnostic, load};

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/invalid exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn expected(path: &Path) -> Vec<String> {
    let sidecar = path.with_extension("expect");
    let text = match std::fs::read_to_string(&sidecar) {
        Ok(text) => text,
        Err(_) => std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|l| format!("{l}\n"))
            .collect(),
    };
    let mut out: Vec<String> = text
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    out.sort();
    out
}

fn describe(d: &Diagnostic) -> String {
    format!("{} {}:{}", d.code, d.span.line, d.span.column)
}

#[test]
fn corpus_is_large_enough() {
    assert!(
        corpus().len() >= 30,
        "the issue asks for 30+ invalid runbooks"
    );
}

#[test]
fn every_invalid_runbook_is_rejected_with_exactly_its_diagnostics() {
    let mut failures = Vec::new();
    for path in corpus() {
        let relative = path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
            .to_path_buf();
        let loaded = load(&relative, &[]).expect("readable");
        let rendered = render(
            std::slice::from_ref(&loaded.diagnostics),
            DiagnosticFormat::Human,
            HumanStyle::PLAIN,
        );
        let mut actual: Vec<String> = loaded
            .diagnostics
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(describe)
            .collect();
        actual.sort();
        let want = expected(&path);
        if want.is_empty() {
            failures.push(format!("{}: no `# expect:` header", relative.display()));
        }
        if loaded.runbook.is_some() {
            failures.push(format!("{}: accepted as valid", relative.display()));
        }
        if actual != want {
            failures.push(format!(
                "{}:\n  expected {want:?}\n  actual   {actual:?}\n{rendered}",
                relative.display()
            ));
        }
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        insta::assert_snapshot!(name, rendered);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
