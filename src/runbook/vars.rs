//! Vars: declared in the runbook, overridden on the command line, substituted into the
//! document before it is read into types — so that one runbook targets the sandbox or
//! production, and a var can hold a duration or a count as well as text.
//!
//! A var may reference other vars, secrets and the environment. Secrets and environment
//! references are kept as references (resolved at run time, secrets never shown); only
//! `${vars.x}` is replaced here. Shell script text is left as written: scripts get
//! values through `env:`, never by splicing.

use indexmap::IndexMap;

use super::de::did_you_mean;
use super::diagnostic::Diagnostic;
use super::source::Span;
use super::template::{Reference, Segment, Template};
use super::yaml::{Node, NodeValue};

/// Where a var's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VarOrigin {
    /// The runbook's `vars:`.
    Runbook,
    /// A `--vars-file`.
    VarsFile(String),
    /// A `--var NAME=VALUE`.
    CommandLine,
}

/// A var override from the command line or a vars file.
#[derive(Clone, Debug)]
pub struct VarOverride {
    /// The var's name.
    pub name: String,
    /// Its value (may contain references).
    pub value: String,
    /// Where it came from.
    pub origin: VarOrigin,
    /// Where it is written, for a vars file: problems with it point there.
    pub at: Option<(std::sync::Arc<super::SourceFile>, Span)>,
}

impl VarOverride {
    /// Overrides as `--var NAME=VALUE` gives them, from `(name, value)` pairs (a
    /// journal's, init's answers).
    pub fn from_pairs(pairs: &[(String, String)]) -> Vec<VarOverride> {
        pairs
            .iter()
            .map(|(name, value)| VarOverride {
                name: name.clone(),
                value: value.clone(),
                origin: VarOrigin::CommandLine,
                at: None,
            })
            .collect()
    }
}

/// A problem found in another file than the runbook (a vars file).
pub type Elsewhere = (std::sync::Arc<super::SourceFile>, Diagnostic);

/// A var after resolution: its text with other vars substituted.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedVar {
    /// The text (secrets and env still as references).
    pub value: Template,
    /// Where it came from.
    pub origin: VarOrigin,
    /// Where it is declared in the runbook.
    pub span: Span,
}

/// Resolves the runbook's vars (with overrides applied) and substitutes `${vars.x}` in
/// every string of the document. Returns the vars and the problems found.
pub fn apply(
    root: &mut Node,
    overrides: &[VarOverride],
) -> (
    IndexMap<String, ResolvedVar>,
    Vec<Diagnostic>,
    Vec<Elsewhere>,
) {
    let mut diagnostics = Vec::new();
    let mut elsewhere = Vec::new();
    let mut raw: IndexMap<String, (String, VarOrigin, Span)> = IndexMap::new();
    if let Some(vars) = root.get("vars").and_then(Node::as_map) {
        for (key, value) in vars {
            let (Some(name), Some(text)) = (key.as_str(), value.scalar_text()) else {
                continue; // wrong types are reported when the document is read
            };
            if value.as_map().is_none() && value.as_seq().is_none() {
                raw.insert(name.to_owned(), (text, VarOrigin::Runbook, value.span));
            }
        }
    }
    for o in overrides {
        match raw.get_mut(&o.name) {
            Some(entry) => {
                entry.0 = o.value.clone();
                entry.1 = o.origin.clone();
            }
            None => {
                let source = match &o.origin {
                    VarOrigin::CommandLine => "--var".to_owned(),
                    VarOrigin::VarsFile(path) => format!("vars file `{path}`"),
                    VarOrigin::Runbook => "the runbook".to_owned(),
                };
                let mut d = Diagnostic::error(
                    "unknown-var",
                    o.at.as_ref().map_or(Span::UNKNOWN, |(_, span)| *span),
                    format!(
                        "{source} sets `{}`, but the runbook declares no such var",
                        o.name
                    ),
                );
                d = match did_you_mean(&o.name, raw.keys().map(String::as_str)) {
                    Some(best) => d.with_help(format!("did you mean `{best}`?")),
                    None => d.with_help("an override must name a var declared under `vars:`; a typo here would silently leave the runbook's value in place"),
                };
                match &o.at {
                    Some((file, _)) => elsewhere.push((file.clone(), d)),
                    None => diagnostics.push(d),
                }
            }
        }
    }

    let mut resolution = Resolution::default();
    let names: Vec<String> = raw.keys().cloned().collect();
    for name in &names {
        resolution.resolve(name, &raw, &mut diagnostics);
    }
    let resolved = resolution.done;

    if let NodeValue::Map(entries) = &mut root.value {
        for (key, value) in entries.iter_mut() {
            // The `vars:` section holds the definitions themselves.
            if key.as_str() != Some("vars") {
                substitute(value, &resolved, &mut diagnostics, false);
            }
        }
    }
    (resolved, diagnostics, elsewhere)
}

/// Vars resolved so far, those that cannot be (reported once), and the chain being
/// resolved (to spot cycles).
#[derive(Default)]
struct Resolution {
    done: IndexMap<String, ResolvedVar>,
    failed: Vec<String>,
    stack: Vec<String>,
}

impl Resolution {
    fn resolve(
        &mut self,
        name: &str,
        raw: &IndexMap<String, (String, VarOrigin, Span)>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Template> {
        if let Some(done) = self.done.get(name) {
            return Some(done.value.clone());
        }
        if self.failed.iter().any(|f| f == name) {
            return None;
        }
        let (text, origin, span) = raw.get(name)?;
        if let Some(pos) = self.stack.iter().position(|n| n == name) {
            let mut cycle: Vec<String> = self.stack[pos..].to_vec();
            self.failed.extend(cycle.iter().cloned());
            cycle.push(name.to_owned());
            diagnostics.push(
                Diagnostic::error(
                    "var-cycle",
                    *span,
                    format!(
                        "vars reference each other in a cycle: {}",
                        cycle.join(" -> ")
                    ),
                )
                .with_help("break the cycle: one of these vars must hold a value"),
            );
            return None;
        }
        let template = match Template::parse(text) {
            Ok(t) => t,
            Err(e) => {
                diagnostics.push(Diagnostic::error("bad-reference", *span, e.message));
                self.failed.push(name.to_owned());
                return None;
            }
        };
        self.stack.push(name.to_owned());
        let mut out = Vec::new();
        let mut ok = true;
        for segment in template.segments() {
            match segment {
                Segment::Ref(Reference::Var(other)) => {
                    if !raw.contains_key(other) {
                        diagnostics.push(undefined_var(
                            other,
                            *span,
                            raw.keys().map(String::as_str),
                        ));
                        ok = false;
                        continue;
                    }
                    match self.resolve(other, raw, diagnostics) {
                        Some(t) => out.push(t.source()),
                        None => ok = false,
                    }
                }
                Segment::Ref(other) => out.push(other.to_string()),
                Segment::Literal(text) => out.push(text.replace("${", "$${")),
            }
        }
        self.stack.pop();
        if !ok {
            self.failed.push(name.to_owned());
            return None;
        }
        let value = Template::parse(&out.concat()).ok()?;
        self.done.insert(
            name.to_owned(),
            ResolvedVar {
                value: value.clone(),
                origin: origin.clone(),
                span: *span,
            },
        );
        Some(value)
    }
}

fn undefined_var<'a>(name: &str, span: Span, known: impl Iterator<Item = &'a str>) -> Diagnostic {
    let d = Diagnostic::error(
        "undefined-var",
        span,
        format!("`${{vars.{name}}}` is not defined"),
    );
    match did_you_mean(name, known) {
        Some(best) => d.with_help(format!("did you mean `{best}`?")),
        None => d.with_help(format!(
            "declare it under `vars:` (e.g. `{name}: ...`) or pass `--var {name}=...`"
        )),
    }
}

/// Replaces `${vars.x}` in every string under `node` except the `vars:` section itself
/// and shell script text.
fn substitute(
    node: &mut Node,
    vars: &IndexMap<String, ResolvedVar>,
    diagnostics: &mut Vec<Diagnostic>,
    in_shell: bool,
) {
    match &mut node.value {
        NodeValue::Str(text) if text.contains("${") => {
            let template = match Template::parse(text) {
                Ok(t) => t,
                Err(e) => {
                    diagnostics.push(
                        Diagnostic::error("bad-reference", node.span, e.message)
                            .with_label("in this text"),
                    );
                    return;
                }
            };
            if !template
                .references()
                .any(|r| matches!(r, Reference::Var(_)))
            {
                return;
            }
            let mut out = String::new();
            for segment in template.segments() {
                match segment {
                    Segment::Ref(Reference::Var(name)) => match vars.get(name) {
                        Some(var) => out.push_str(&var.value.source()),
                        None => {
                            diagnostics.push(undefined_var(
                                name,
                                node.span,
                                vars.keys().map(String::as_str),
                            ));
                            out.push_str(&Reference::Var(name.clone()).to_string());
                        }
                    },
                    Segment::Ref(other) => out.push_str(&other.to_string()),
                    Segment::Literal(text) => out.push_str(&text.replace("${", "$${")),
                }
            }
            *text = out;
        }
        NodeValue::Seq(items) => items
            .iter_mut()
            .for_each(|n| substitute(n, vars, diagnostics, in_shell)),
        NodeValue::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                let key_text = key.as_str().unwrap_or("");
                if in_shell && key_text == "script" {
                    if let Some(script) = value.as_str()
                        && let Some(found) = spliced_reference(script)
                    {
                        diagnostics.push(
                            Diagnostic::error(
                                "script-interpolation",
                                value.span,
                                format!("`{found}` in a shell script is not substituted: script text is run as written"),
                            )
                            .with_help("pass the value through `env:` (e.g. `env: { WORKERS: \"${vars.workers}\" }`) and use \"$WORKERS\" in the script"),
                        );
                    }
                    continue;
                }
                substitute(value, vars, diagnostics, key_text == "shell");
            }
        }
        _ => {}
    }
}

fn spliced_reference(script: &str) -> Option<String> {
    ["${vars.", "${secrets.", "${env.", "${steps."]
        .iter()
        .find_map(|prefix| {
            let start = script.find(prefix)?;
            let end = script[start..]
                .find('}')
                .map(|e| start + e + 1)
                .unwrap_or(script.len());
            Some(script[start..end].to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::source::SourceFile;
    use crate::runbook::yaml;

    fn run(
        text: &str,
        overrides: &[VarOverride],
    ) -> (Node, IndexMap<String, ResolvedVar>, Vec<Diagnostic>) {
        let mut node = yaml::parse(&SourceFile::new("t.yaml", text)).unwrap();
        let (vars, diagnostics, _) = apply(&mut node, overrides);
        (node, vars, diagnostics)
    }

    #[test]
    fn vars_reference_vars_and_keep_secrets() {
        let (node, vars, d) = run(
            "vars:\n  host: 10.0.0.1\n  url: \"redis://:${secrets.pw}@${vars.host}:6379\"\nsteps:\n  - x: \"${vars.url}\"\n",
            &[],
        );
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(
            vars["url"].value.source(),
            "redis://:${secrets.pw}@10.0.0.1:6379"
        );
        let step = &node.get("steps").unwrap().as_seq().unwrap()[0];
        assert_eq!(
            step.get("x").unwrap().as_str(),
            Some("redis://:${secrets.pw}@10.0.0.1:6379")
        );
    }

    #[test]
    fn overrides_win_and_typos_are_errors() {
        let overrides = [
            VarOverride {
                name: "watch".into(),
                value: "5s".into(),
                origin: VarOrigin::CommandLine,
                at: None,
            },
            VarOverride {
                name: "wacth".into(),
                value: "1s".into(),
                origin: VarOrigin::CommandLine,
                at: None,
            },
        ];
        let (node, _, d) = run("vars:\n  watch: 30min\nw: ${vars.watch}\n", &overrides);
        assert_eq!(node.get("w").unwrap().as_str(), Some("5s"));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].help.as_deref(), Some("did you mean `watch`?"));
    }

    #[test]
    fn undefined_and_cyclic_vars() {
        let (_, _, d) = run(
            "vars:\n  a: ${vars.b}\n  b: ${vars.a}\nx: ${vars.workres}\n",
            &[],
        );
        let codes: Vec<_> = d.iter().map(|d| d.code).collect();
        assert!(codes.contains(&"var-cycle"), "{codes:?}");
        assert!(codes.contains(&"undefined-var"), "{codes:?}");
    }

    #[test]
    fn scripts_are_not_spliced() {
        let (node, _, d) = run(
            "vars:\n  w: x\nstep:\n  shell:\n    script: echo ${vars.w}\n    env: { W: \"${vars.w}\" }\n",
            &[],
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].code, "script-interpolation");
        let shell = node.get("step").unwrap().get("shell").unwrap();
        assert_eq!(
            shell.get("script").unwrap().as_str(),
            Some("echo ${vars.w}")
        );
        assert_eq!(
            shell.get("env").unwrap().get("W").unwrap().as_str(),
            Some("x")
        );
    }
}
