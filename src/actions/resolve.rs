//! Run-time values of templates: secrets read from the environment or files, the
//! environment, and values recorded by earlier steps.

use std::collections::HashMap;
use std::path::Path;

use indexmap::IndexMap;

use crate::redact::Redactor;
use crate::runbook::expect::OperandResolver;
use crate::runbook::spec::SecretSource;
use crate::runbook::template::{Reference, Segment, Template};
use crate::value::Value;

/// A template that cannot be resolved now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// A secret was not available.
    #[error("secret `{0}` is not available ({1})")]
    Secret(String, String),
    /// An environment variable is not set.
    #[error("environment variable `{0}` is not set")]
    Env(String),
    /// A step has not recorded a value (yet).
    #[error("step `{0}` has no value yet")]
    StepValue(String),
    /// The path inside a step's value does not exist.
    #[error("the value of step `{0}` has no `{1}`")]
    StepField(String, String),
    /// A var reference survived loading (a bug).
    #[error("`${{vars.{0}}}` was not substituted")]
    Var(String),
}

/// Secret values, loaded once.
#[derive(Clone, Default)]
pub struct Secrets {
    values: HashMap<String, String>,
    missing: HashMap<String, String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .field("missing", &self.missing)
            .finish()
    }
}

impl Secrets {
    /// Reads every declared secret; relative file paths are relative to `base_dir` (the
    /// runbook's directory). Unavailable secrets are remembered with the reason, and
    /// only fail the steps that use them.
    pub fn load(specs: &IndexMap<String, SecretSource>, base_dir: &Path) -> Secrets {
        let mut secrets = Secrets::default();
        for (name, source) in specs {
            let value = match source {
                SecretSource::Env(var) => std::env::var(var)
                    .map_err(|_| format!("environment variable `{var}` is not set")),
                SecretSource::File(path) => {
                    let full = base_dir.join(path);
                    std::fs::read_to_string(&full)
                        .map(|s| {
                            s.strip_suffix('\n')
                                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                                .unwrap_or(&s)
                                .to_owned()
                        })
                        .map_err(|e| format!("cannot read `{}`: {e}", full.display()))
                }
            };
            match value {
                Ok(v) if v.is_empty() => {
                    secrets.missing.insert(name.clone(), "it is empty".into());
                }
                Ok(v) => {
                    secrets.values.insert(name.clone(), v);
                }
                Err(reason) => {
                    secrets.missing.insert(name.clone(), reason);
                }
            }
        }
        secrets
    }

    /// Secrets that could not be read, with why.
    pub fn missing(&self) -> Vec<(String, String)> {
        let mut missing: Vec<_> = self
            .missing
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        missing.sort();
        missing
    }

    /// A redactor that masks every loaded secret.
    pub fn redactor(&self) -> Redactor {
        let mut redactor = Redactor::default();
        for value in self.values.values() {
            redactor.add(value);
        }
        redactor
    }

    /// [`Secrets::redactor`], plus the passwords written literally in `runbook`'s Redis
    /// targets (in their URLs, or as `password:`).
    pub fn redactor_for(&self, runbook: &crate::runbook::model::Runbook) -> Redactor {
        let mut redactor = self.redactor();
        for target in runbook.targets.values() {
            if let crate::runbook::spec::TargetSpec::Redis(spec) = &target.spec {
                redactor.add_url_passwords(&spec.url.value.source());
                if let Some(password) = spec.password.as_ref().and_then(Template::as_literal) {
                    redactor.add(password);
                }
            }
        }
        // A var holding a URL with a literal password: masked wherever a title, a
        // question or a value interpolates it, not only in the vars listing.
        for var in runbook.vars.values() {
            redactor.add_url_passwords(&var.value.source());
        }
        crate::redact::remember(&redactor);
        redactor
    }

    fn get(&self, name: &str) -> Result<&str, ResolveError> {
        match self.values.get(name) {
            Some(v) => Ok(v),
            None => Err(ResolveError::Secret(
                name.to_owned(),
                self.missing
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| "not declared".into()),
            )),
        }
    }
}

/// Where step values come from.
pub trait StepValues {
    /// The value step `id` recorded, if any.
    fn value(&self, id: &str) -> Option<Value>;
}

impl StepValues for HashMap<String, Value> {
    fn value(&self, id: &str) -> Option<Value> {
        self.get(id).cloned()
    }
}

/// Resolves templates at run time.
#[derive(Clone, Copy)]
pub struct Resolver<'a> {
    /// Loaded secrets.
    pub secrets: &'a Secrets,
    /// Values of steps that have run.
    pub steps: &'a (dyn StepValues + Sync),
}

impl Resolver<'_> {
    /// The text of `template` with every reference resolved.
    pub fn resolve(&self, template: &Template) -> Result<String, ResolveError> {
        let mut out = String::new();
        for segment in template.segments() {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Ref(Reference::Secret(name)) => out.push_str(self.secrets.get(name)?),
                Segment::Ref(Reference::Env(name)) => {
                    out.push_str(&std::env::var(name).map_err(|_| ResolveError::Env(name.clone()))?)
                }
                Segment::Ref(Reference::StepValue { step, path }) => {
                    let value = self
                        .steps
                        .value(step)
                        .ok_or_else(|| ResolveError::StepValue(step.clone()))?;
                    out.push_str(
                        &value_at(&value, path)
                            .ok_or_else(|| ResolveError::StepField(step.clone(), path.join(".")))?
                            .as_text(),
                    );
                }
                Segment::Ref(Reference::Var(name)) => return Err(ResolveError::Var(name.clone())),
            }
        }
        Ok(out)
    }

    /// Resolves an optional template.
    pub fn resolve_opt(&self, template: Option<&Template>) -> Result<Option<String>, ResolveError> {
        template.map(|t| self.resolve(t)).transpose()
    }

    /// Resolves every template of a list.
    pub fn resolve_all(&self, templates: &[Template]) -> Result<Vec<String>, ResolveError> {
        templates.iter().map(|t| self.resolve(t)).collect()
    }

    /// Resolves the values of a map.
    pub fn resolve_map(
        &self,
        map: &IndexMap<String, Template>,
    ) -> Result<Vec<(String, String)>, ResolveError> {
        map.iter()
            .map(|(k, v)| Ok((k.clone(), self.resolve(v)?)))
            .collect()
    }
}

impl OperandResolver for Resolver<'_> {
    fn resolve(&self, template: &Template) -> Result<String, String> {
        Resolver::resolve(self, template).map_err(|e| e.to_string())
    }
}

/// The part of `value` at `path` (fields of objects, indexes of lists).
pub fn value_at<'v>(value: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(value, |current, part| match current {
        Value::Object(fields) => fields.get(part),
        Value::List(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn resolves_secrets_env_and_step_values() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "t0ken\n").unwrap();
        let mut specs = IndexMap::new();
        specs.insert("token".to_owned(), SecretSource::File("token".into()));
        specs.insert(
            "missing".to_owned(),
            SecretSource::Env("REDIS_MOVE_TEST_SURELY_UNSET".into()),
        );
        let secrets = Secrets::load(&specs, dir.path());
        let mut steps = HashMap::new();
        let mut total = BTreeMap::new();
        total.insert("waiting".to_owned(), Value::Number(42.0));
        let mut queues = BTreeMap::new();
        queues.insert("total".to_owned(), Value::Object(total));
        steps.insert("depth".to_owned(), Value::Object(queues));
        let resolver = Resolver {
            secrets: &secrets,
            steps: &steps,
        };
        let t =
            Template::parse("Bearer ${secrets.token} ${steps.depth.value.total.waiting}").unwrap();
        assert_eq!(resolver.resolve(&t).unwrap(), "Bearer t0ken 42");
        let missing = Template::parse("${secrets.missing}").unwrap();
        assert!(matches!(
            resolver.resolve(&missing),
            Err(ResolveError::Secret(..))
        ));
        let field = Template::parse("${steps.depth.value.total.nope}").unwrap();
        assert!(matches!(
            resolver.resolve(&field),
            Err(ResolveError::StepField(..))
        ));
        assert_eq!(secrets.redactor().redact("x t0ken y"), "x **** y");
    }
}
