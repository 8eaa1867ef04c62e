//! Interpolation: `${vars.x}`, `${secrets.x}`, `${env.X}`, `${steps.ID.value}`.
//!
//! Vars are substituted when the runbook is loaded (see `vars`), so that a var can hold
//! a duration or a count. What is left for run time (secrets, environment, values
//! recorded by earlier steps) stays a [`Template`]. A template never shows a secret: its
//! display form puts `****` in the secret's place.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One reference inside `${...}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    /// `${vars.NAME}`
    Var(String),
    /// `${secrets.NAME}`
    Secret(String),
    /// `${env.NAME}`
    Env(String),
    /// `${steps.ID.value}` or `${steps.ID.value.FIELD...}`: the value an earlier step
    /// recorded, or a field of it.
    StepValue {
        /// The step id.
        step: String,
        /// Fields (or list indexes) below the value.
        path: Vec<String>,
    },
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Var(name) => write!(f, "${{vars.{name}}}"),
            Reference::Secret(name) => write!(f, "${{secrets.{name}}}"),
            Reference::Env(name) => write!(f, "${{env.{name}}}"),
            Reference::StepValue { step, path } => {
                write!(f, "${{steps.{step}.value")?;
                for part in path {
                    write!(f, ".{part}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// A piece of a template.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Text as written.
    Literal(String),
    /// A reference resolved later.
    Ref(Reference),
}

/// A string with references in it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Template {
    segments: Vec<Segment>,
}

/// Text with a `${` that is not a valid reference.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// What is wrong.
    pub message: String,
    /// Byte offset of the `${` in the text.
    pub offset: usize,
}

impl Template {
    /// A template without references.
    pub fn literal(text: impl Into<String>) -> Template {
        Template {
            segments: vec![Segment::Literal(text.into())],
        }
    }

    /// Parses `text`. `$${` is a literal `${`.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let mut consumed = 0;
        while let Some(pos) = rest.find("${") {
            if pos > 0 && rest.as_bytes()[pos - 1] == b'$' {
                literal.push_str(&rest[..pos - 1]);
                literal.push_str("${");
                rest = &rest[pos + 2..];
                consumed += pos + 2;
                continue;
            }
            literal.push_str(&rest[..pos]);
            let after = &rest[pos + 2..];
            let end = after.find('}').ok_or_else(|| TemplateError {
                message: "unterminated `${`: a reference ends with `}`".into(),
                offset: consumed + pos,
            })?;
            let reference = parse_reference(&after[..end]).map_err(|message| TemplateError {
                message,
                offset: consumed + pos,
            })?;
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal)));
            }
            segments.push(Segment::Ref(reference));
            rest = &after[end + 1..];
            consumed += pos + 2 + end + 1;
        }
        literal.push_str(rest);
        if !literal.is_empty() || segments.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template { segments })
    }

    /// The pieces.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Every reference in order.
    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Ref(r) => Some(r),
            Segment::Literal(_) => None,
        })
    }

    /// The text, if the template has no references.
    pub fn as_literal(&self) -> Option<&str> {
        match self.segments.as_slice() {
            [Segment::Literal(text)] => Some(text),
            _ => None,
        }
    }

    /// Whether any part comes from a secret.
    pub fn has_secret(&self) -> bool {
        self.references().any(|r| matches!(r, Reference::Secret(_)))
    }

    /// The form shown to people: literals as they are, secrets as `****`, other
    /// references as written.
    pub fn display(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Ref(Reference::Secret(_)) => out.push_str("****"),
                Segment::Ref(reference) => out.push_str(&reference.to_string()),
            }
        }
        crate::redact::mask_url_passwords(&out)
    }

    /// The source form, references as written (never secret values).
    pub fn source(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(&text.replace("${", "$${")),
                Segment::Ref(reference) => out.push_str(&reference.to_string()),
            }
        }
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn parse_reference(inner: &str) -> Result<Reference, String> {
    let inner = inner.trim();
    let (namespace, rest) = inner.split_once('.').unwrap_or((inner, ""));
    let check_name = |name: &str| {
        if is_name(name) {
            Ok(name.to_owned())
        } else {
            Err(format!("`${{{inner}}}`: `{name}` is not a valid name"))
        }
    };
    match namespace {
        "vars" => check_name(rest).map(Reference::Var),
        "secrets" => check_name(rest).map(Reference::Secret),
        "env" => check_name(rest).map(Reference::Env),
        "steps" => {
            let mut parts = rest.split('.');
            let step = check_name(parts.next().unwrap_or(""))?;
            match parts.next() {
                Some("value") => {}
                Some(other) => {
                    return Err(format!(
                        "`${{{inner}}}`: a step exposes `value`, not `{other}` (write `${{steps.{step}.value}}`)"
                    ));
                }
                None => {
                    return Err(format!(
                        "`${{{inner}}}`: write `${{steps.{step}.value}}` for the value step `{step}` recorded"
                    ));
                }
            }
            let path: Vec<String> = parts.map(str::to_owned).collect();
            if path.iter().any(|p| p.is_empty()) {
                return Err(format!("`${{{inner}}}`: empty field name"));
            }
            Ok(Reference::StepValue { step, path })
        }
        _ => Err(format!(
            "`${{{inner}}}`: unknown namespace `{namespace}`; references start with `vars.`, `secrets.`, `env.` or `steps.` (write `$${{` for a literal `${{`)"
        )),
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::de::deserialize_parsed(d, "text", Template::parse)
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.display())
    }
}

impl schemars::JsonSchema for Template {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Text".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["string", "number", "boolean"],
            "description": "Text; may contain ${vars.NAME}, ${secrets.NAME}, ${env.NAME}, ${steps.ID.value}."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let t = Template::parse("redis://:${secrets.pw}@${env.HOST}:6379/${steps.db.value.index}")
            .unwrap();
        let refs: Vec<_> = t.references().cloned().collect();
        assert_eq!(
            refs,
            vec![
                Reference::Secret("pw".into()),
                Reference::Env("HOST".into()),
                Reference::StepValue {
                    step: "db".into(),
                    path: vec!["index".into()]
                },
            ]
        );
        assert_eq!(
            t.display(),
            "redis://:****@${env.HOST}:6379/${steps.db.value.index}"
        );
        assert!(t.has_secret());
    }

    #[test]
    fn escapes_and_literals() {
        let t = Template::parse("cost: $${HOME} and $5").unwrap();
        assert_eq!(t.as_literal(), Some("cost: ${HOME} and $5"));
        assert_eq!(t.source(), "cost: $${HOME} and $5");
        assert_eq!(Template::parse("").unwrap().as_literal(), Some(""));
    }

    #[test]
    fn errors() {
        assert!(
            Template::parse("${vars.x")
                .unwrap_err()
                .message
                .contains("unterminated")
        );
        assert!(
            Template::parse("${HOME}")
                .unwrap_err()
                .message
                .contains("unknown namespace")
        );
        assert!(
            Template::parse("${steps.a}")
                .unwrap_err()
                .message
                .contains("steps.a.value")
        );
        assert!(Template::parse("${vars.}").is_err());
        assert_eq!(Template::parse("ab ${nope.x}").unwrap_err().offset, 3);
    }
}
