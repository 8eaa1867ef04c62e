//! Runbooks: reading a YAML file into a validated [`Runbook`], or into diagnostics that
//! say exactly what is wrong and where.
//!
//! The stages: text ([`source`]) -> YAML tree with positions ([`yaml`]) -> vars
//! substituted ([`vars`]) -> serde types ([`spec`], via [`de`]) -> semantic checks
//! ([`validate`]) -> the typed [`Runbook`] ([`model`]).

pub mod action;
pub mod de;
pub mod diagnostic;
pub mod expect;
pub mod model;
pub mod schema;
pub mod source;
pub mod spec;
pub mod template;
pub mod units;
pub mod validate;
pub mod vars;
pub mod yaml;

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use diagnostic::{Diagnostic, FileDiagnostics};
pub use model::Runbook;
pub use source::SourceFile;
pub use vars::{VarOrigin, VarOverride};

/// The result of loading one runbook file.
#[derive(Debug)]
pub struct Loaded {
    /// The runbook, when it has no errors (it may have warnings).
    pub runbook: Option<Runbook>,
    /// Every problem found in the runbook.
    pub diagnostics: FileDiagnostics,
    /// Problems found in other files it was loaded with (a vars file naming a var the
    /// runbook does not declare), pointing into those files.
    pub elsewhere: Vec<FileDiagnostics>,
}

impl Loaded {
    /// Every file's problems: the runbook's first.
    pub fn all_diagnostics(&self) -> Vec<FileDiagnostics> {
        std::iter::once(self.diagnostics.clone())
            .chain(self.elsewhere.iter().cloned())
            .collect()
    }

    /// Errors in every file.
    pub fn error_count(&self) -> usize {
        self.diagnostics.error_count()
            + self
                .elsewhere
                .iter()
                .map(FileDiagnostics::error_count)
                .sum::<usize>()
    }
}

/// Reads and validates the runbook at `path` with the given var overrides.
///
/// `Err` only for I/O problems (missing file, permission); everything about the
/// content comes back as diagnostics.
pub fn load(path: &Path, overrides: &[VarOverride]) -> std::io::Result<Loaded> {
    let (source, problem) = yaml::read_source(path)?;
    if let Some(problem) = problem {
        return Ok(Loaded {
            runbook: None,
            diagnostics: FileDiagnostics::new(source, vec![problem]),
            elsewhere: Vec::new(),
        });
    }
    Ok(load_source(source, overrides))
}

/// Validates a runbook already in memory.
pub fn load_source(source: Arc<SourceFile>, overrides: &[VarOverride]) -> Loaded {
    let mut elsewhere: Vec<vars::Elsewhere> = Vec::new();
    let (runbook, diagnostics) = check(&source, overrides, &mut elsewhere);
    // One group per other file, in the order first seen.
    let mut groups: Vec<(Arc<SourceFile>, Vec<Diagnostic>)> = Vec::new();
    for (file, d) in elsewhere {
        match groups.iter_mut().find(|(f, _)| Arc::ptr_eq(f, &file)) {
            Some((_, list)) => list.push(d),
            None => groups.push((file, vec![d])),
        }
    }
    let elsewhere: Vec<FileDiagnostics> = groups
        .into_iter()
        .map(|(file, list)| FileDiagnostics::new(file, list))
        .collect();
    let has_errors = elsewhere.iter().any(|f| f.error_count() > 0);
    Loaded {
        runbook: runbook.filter(|_| !has_errors),
        diagnostics: FileDiagnostics::new(source, diagnostics),
        elsewhere,
    }
}

fn check(
    source: &Arc<SourceFile>,
    overrides: &[VarOverride],
    elsewhere: &mut Vec<vars::Elsewhere>,
) -> (Option<Runbook>, Vec<Diagnostic>) {
    let mut root = match yaml::parse(source) {
        Ok(root) => root,
        Err(d) => return (None, vec![*d]),
    };
    if root.value == yaml::NodeValue::Null {
        let d = Diagnostic::error("empty-file", source.span_at(1, 1, 1), "the file is empty")
            .with_help("a runbook starts with `version: 1`, a `name:` and `phases:`; `redis-move schema` prints the format");
        return (None, vec![d]);
    }
    if root.as_map().is_none() {
        let d = Diagnostic::error(
            "not-a-runbook",
            root.span,
            format!(
                "expected a map with `version`, `name` and `phases`, found {}",
                root.kind_name()
            ),
        );
        return (None, vec![d]);
    }
    let (vars, mut diagnostics, misplaced) = vars::apply(&mut root, overrides);
    elsewhere.extend(misplaced);
    let (spec, errors) = de::from_node::<spec::RunbookSpec>(&root);
    diagnostics.extend(errors.into_iter().map(de::DeError::into_diagnostic));
    let Some(spec) = spec.or_else(|| partial_spec(&root)) else {
        return (None, diagnostics);
    };
    let sha256 = hex_sha256(source.text.as_bytes());
    let (runbook, more) = validate::validate(source.clone(), sha256, &spec, &root, vars);
    diagnostics.extend(more);
    let runbook = runbook.filter(|_| !diagnostics.iter().any(Diagnostic::is_error));
    (runbook, diagnostics)
}

/// When some items failed to deserialize, the rest of the document still gets its
/// semantic checks (so that one bad step does not hide a duplicate id elsewhere).
fn partial_spec(root: &yaml::Node) -> Option<spec::RunbookSpec> {
    let sink = de::ErrorSink::default();
    serde::Deserialize::deserialize(de::NodeDeserializer::new(root, &sink)).ok()
}

/// Hex SHA-256 of `bytes`.
pub fn hex_sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
