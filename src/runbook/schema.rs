//! The JSON Schema of the runbook format, generated from the same types the parser
//! reads, in draft-07 (what yaml-language-server understands).

use schemars::generate::SchemaSettings;

use super::spec::RunbookSpec;

/// Where the published schema lives, for `# yaml-language-server: $schema=` lines.
pub const SCHEMA_FILE: &str = "docs/runbook.schema.json";

/// The schema as pretty JSON.
pub fn schema_json() -> String {
    let generator = SchemaSettings::draft07().for_deserialize().into_generator();
    let schema = generator.into_root_schema_for::<RunbookSpec>();
    let mut out = serde_json::to_string_pretty(&schema).unwrap_or_default();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_describes_steps_and_actions() {
        let schema: serde_json::Value = serde_json::from_str(&schema_json()).unwrap();
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
        let text = schema.to_string();
        for needle in [
            "docker.recreate",
            "redis.ping",
            "failing_for",
            "on_failure",
            "signoffs",
        ] {
            assert!(text.contains(needle), "schema lacks {needle}");
        }
    }

    #[test]
    fn committed_schema_is_current() {
        let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/runbook.schema.json"))
            .expect("docs/runbook.schema.json exists (regenerate: cargo run -- schema > docs/runbook.schema.json)");
        assert!(
            committed == schema_json(),
            "docs/runbook.schema.json is stale: run `cargo run -- schema > docs/runbook.schema.json`"
        );
    }
}
