//! Whatever bytes arrive, loading a runbook ends with a result or diagnostics: never a
//! panic, never a hang.

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use redis_move::runbook::{SourceFile, load, load_source, yaml};

const VALID: &str = include_str!("../runbooks/vps01-to-vps.yaml");

fn check_bytes(bytes: Vec<u8>) {
    let (source, problem) = yaml::source_from_bytes(Path::new("fuzz.yaml"), bytes);
    if problem.is_none() {
        let loaded = load_source(source, &[]);
        // Either a runbook or at least one error; never both nothing.
        assert!(loaded.runbook.is_some() || loaded.diagnostics.error_count() > 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_bytes(bytes);
    }

    #[test]
    fn arbitrary_text_does_not_panic(text in "[ -~\n\t]{0,1024}") {
        check_bytes(text.into_bytes());
    }

    /// Mutations of a real runbook reach deep into validation.
    #[test]
    fn mutated_runbooks_do_not_panic(
        cuts in proptest::collection::vec((0usize..VALID.len(), 0usize..40, "[ -~\n]{0,12}"), 1..6)
    ) {
        let mut text = VALID.to_owned();
        for (at, len, insert) in cuts {
            let mut at = at.min(text.len());
            while !text.is_char_boundary(at) { at -= 1; }
            let mut end = (at + len).min(text.len());
            while !text.is_char_boundary(end) { end -= 1; }
            text.replace_range(at..end, &insert);
        }
        check_bytes(text.into_bytes());
    }
}

fn assert_fast_error(name: &str, bytes: Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let start = Instant::now();
    let loaded = load(&path, &[]).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{name} took {:?}",
        start.elapsed()
    );
    assert!(loaded.runbook.is_none(), "{name} was accepted");
    assert!(loaded.diagnostics.error_count() > 0);
}

#[test]
fn huge_file_is_refused_before_parsing() {
    let mut text = String::from("version: 1\nname: huge\nphases:\n");
    while text.len() <= yaml::MAX_RUNBOOK_BYTES {
        text.push_str("  - id: p\n    steps: [{ id: s, wait: { duration: 1s } }]\n");
    }
    assert_fast_error("huge.yaml", text.into_bytes());
}

#[test]
fn deep_nesting_is_refused() {
    let text = format!(
        "version: 1\nname: deep\nphases: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_fast_error("deep.yaml", text.into_bytes());
    let mut block = String::from("version: 1\nname: deep\nphases:\n");
    for depth in 0..500 {
        block.push_str(&format!("{}- \n", "  ".repeat(depth + 1)));
    }
    assert_fast_error("deep-block.yaml", block.into_bytes());
}

#[test]
fn alias_bomb_is_refused() {
    let mut text = String::from(
        "version: 1\nname: bomb\nx0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..16 {
        text.push_str(&format!(
            "x{i}: &x{i} [{}]\n",
            vec![format!("*x{}", i - 1); 9].join(", ")
        ));
    }
    text.push_str("phases: [*x15]\n");
    assert_fast_error("bomb.yaml", text.into_bytes());
}

#[test]
fn binary_garbage_is_refused() {
    assert_fast_error("garbage.yaml", (0..=255u8).cycle().take(10_000).collect());
}

#[test]
fn many_documents_are_refused() {
    assert_fast_error("docs.yaml", "---\na: 1\n".repeat(10).into_bytes());
}

#[test]
fn a_plain_scalar_file_is_not_a_runbook() {
    let loaded = load_source(SourceFile::new("x.yaml", "just text"), &[]);
    assert_eq!(loaded.diagnostics.diagnostics[0].code, "not-a-runbook");
}
