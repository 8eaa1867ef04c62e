//! Snapshot tests of rendered plans and diagrams: the exact text an operator reviews.

use redis_move::plan::{self, diagram};
use redis_move::runbook::load;

fn plan_of(path: &str) -> plan::Plan {
    let loaded = load(std::path::Path::new(path), &[]).expect("readable");
    assert_eq!(
        loaded.diagnostics.diagnostics,
        vec![],
        "{path} has diagnostics"
    );
    plan::build(&loaded.runbook.expect("valid"))
}

fn in_repo(path: &str) -> String {
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
    path.to_owned()
}

#[test]
fn every_action_plan_text() {
    let plan = plan_of(&in_repo("tests/fixtures/every-action.yaml"));
    insta::assert_snapshot!(plan::render_text(&plan));
}

#[test]
fn every_action_plan_json() {
    let plan = plan_of(&in_repo("tests/fixtures/every-action.yaml"));
    let json: serde_json::Value = serde_json::from_str(&plan::render_json(&plan)).unwrap();
    insta::assert_json_snapshot!(json);
}

#[test]
fn every_action_diagrams() {
    let path = in_repo("tests/fixtures/every-action.yaml");
    let runbook = load(std::path::Path::new(&path), &[])
        .unwrap()
        .runbook
        .unwrap();
    insta::assert_snapshot!(
        "mermaid",
        diagram::render(&runbook, diagram::DiagramFormat::Mermaid)
    );
    insta::assert_snapshot!(
        "dot",
        diagram::render(&runbook, diagram::DiagramFormat::Dot)
    );
}

#[test]
fn vps01_to_vps_plan_text() {
    let plan = plan_of(&in_repo("runbooks/vps01-to-vps.yaml"));
    insta::assert_snapshot!(plan::render_text(&plan));
}
