//! The values steps produce and checks look at: a Redis INFO field, a PING latency, the
//! list of containers matching a filter, a count of log lines.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runbook::units::{format_duration, format_number};

/// A value produced by a step or a trigger probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// Nothing (a missing field, a `nil` reply).
    Null,
    /// A boolean.
    Bool(bool),
    /// A number; sizes are numbers of bytes.
    Number(f64),
    /// Text.
    Text(String),
    /// A duration, such as a PING latency.
    Duration(Duration),
    /// A point in time, such as an image's creation time.
    Timestamp(jiff::Timestamp),
    /// A list, such as matching containers.
    List(Vec<Value>),
    /// Named fields, such as one container.
    Object(BTreeMap<String, Value>),
}

impl Value {
    /// The field `name` of an object.
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Object(fields) => fields.get(name),
            _ => None,
        }
    }

    /// What kind of value this is, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::Text(_) => "text",
            Value::Duration(_) => "a duration",
            Value::Timestamp(_) => "a timestamp",
            Value::List(_) => "a list",
            Value::Object(_) => "an object",
        }
    }

    /// The value as text for text tests (`contains`, `matches`, `== PONG`).
    pub fn as_text(&self) -> String {
        match self {
            Value::Text(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) => f.write_str(&format_number(*n)),
            Value::Text(s) => f.write_str(s),
            Value::Duration(d) => f.write_str(&format_duration(*d)),
            Value::Timestamp(t) => write!(f, "{t}"),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Value::Object(fields) => {
                f.write_str("{")?;
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}
