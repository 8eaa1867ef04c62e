//! Typed deserialization out of a [`Node`] tree, keeping positions and collecting every
//! error instead of stopping at the first.
//!
//! [`NodeDeserializer`] is a serde `Deserializer` over a node. Each error is located at
//! the innermost node where it happened and recorded in a shared sink. A [`Lenient<T>`]
//! field swallows its item's error (already recorded) and lets the parent carry on, so
//! one bad step does not hide the problems of the next. [`Spanned<T>`] captures a value's
//! position for semantic checks after deserialization.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

use super::diagnostic::Diagnostic;
use super::source::Span;
use super::yaml::{Node, NodeValue};

const SPANNED_MARKER: &str = "$redis_move::Spanned";
const LENIENT_MARKER: &str = "$redis_move::Lenient";

/// A deserialization error: what went wrong and where.
#[derive(Clone, Debug, PartialEq)]
pub struct DeError {
    /// The node the error is about, once known.
    pub span: Option<Span>,
    /// Kind of problem (a diagnostic code).
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
    recorded: bool,
}

impl DeError {
    /// An error of kind `code`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        DeError {
            span: None,
            code,
            message: message.into(),
            help: None,
            recorded: false,
        }
    }

    /// Points the error at `span` (instead of the node being read when it happened).
    pub fn at(mut self, span: Span) -> Self {
        self.span = Some(span);
        self
    }

    /// Adds a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The error as a diagnostic.
    pub fn into_diagnostic(self) -> Diagnostic {
        let mut diagnostic =
            Diagnostic::error(self.code, self.span.unwrap_or(Span::UNKNOWN), self.message);
        diagnostic.help = self.help;
        diagnostic
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new("invalid-value", msg.to_string())
    }

    fn invalid_type(unexpected: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        DeError::new(
            "wrong-type",
            format!("expected {expected}, found {}", describe(&unexpected)),
        )
    }

    fn invalid_value(unexpected: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        let expected = expected.to_string();
        let range = match expected.as_str() {
            "u8" => Some(u64::from(u8::MAX)),
            "u16" => Some(u64::from(u16::MAX)),
            "u32" => Some(u64::from(u32::MAX)),
            "u64" | "usize" => Some(u64::MAX),
            _ => None,
        };
        let message = match range {
            Some(max) => format!(
                "{} is out of range: expected a whole number from 0 to {max}",
                describe(&unexpected)
            ),
            None => format!(
                "invalid value {}: expected {expected}",
                describe(&unexpected)
            ),
        };
        DeError::new("invalid-value", message)
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let error = DeError::new("unknown-field", format!("unknown field `{field}`"));
        with_suggestion(error, field, expected)
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let error = DeError::new("unknown-variant", format!("unknown value `{variant}`"));
        with_suggestion(error, variant, expected)
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::new("missing-field", format!("missing field `{field}`"))
    }

    fn duplicate_field(field: &'static str) -> Self {
        DeError::new("duplicate-field", format!("field `{field}` is given twice"))
    }
}

fn describe(unexpected: &de::Unexpected<'_>) -> String {
    match unexpected {
        de::Unexpected::Map => "a map".into(),
        de::Unexpected::Seq => "a list".into(),
        de::Unexpected::Unit | de::Unexpected::Option => "null".into(),
        de::Unexpected::Str(s) => format!("the string `{s}`"),
        other => other.to_string(),
    }
}

/// Adds "did you mean" (or the list of accepted names) to an unknown-name error.
pub fn with_suggestion(error: DeError, given: &str, expected: &[&str]) -> DeError {
    match did_you_mean(given, expected.iter().copied()) {
        Some(best) => error.with_help(format!("did you mean `{best}`?")),
        None if expected.is_empty() => error,
        None => error.with_help(format!("expected one of {}", backticked(expected))),
    }
}

/// The closest candidate to `given`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(given: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::jaro_winkler(given, c), c))
        .filter(|(score, _)| *score > 0.82)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// `a`, `b`, `c`
pub fn backticked(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Deserializes a value written as text and parsed (`30s`, `8gb`, a template), so that a
/// parse error points at the text itself rather than at the map around it.
pub fn deserialize_parsed<'de, D, T, E>(
    deserializer: D,
    expecting: &'static str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: fmt::Display,
{
    struct ParseVisitor<F> {
        expecting: &'static str,
        parse: F,
    }

    impl<T, E: fmt::Display, F: FnOnce(&str) -> Result<T, E>> Visitor<'_> for ParseVisitor<F> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<Er: de::Error>(self, text: &str) -> Result<T, Er> {
            (self.parse)(text).map_err(Er::custom)
        }
    }

    deserializer.deserialize_str(ParseVisitor { expecting, parse })
}

/// Errors recorded while deserializing one document.
#[derive(Default, Debug)]
pub struct ErrorSink(RefCell<Vec<DeError>>);

impl ErrorSink {
    /// Records an error that already has a position.
    pub fn push(&self, error: DeError) {
        self.0.borrow_mut().push(error);
    }

    /// All errors recorded so far.
    pub fn into_errors(self) -> Vec<DeError> {
        self.0.into_inner()
    }
}

/// Deserializes `T` from `node`, returning the value (if it could be built) and every
/// error found.
pub fn from_node<T: de::DeserializeOwned>(node: &Node) -> (Option<T>, Vec<DeError>) {
    let sink = ErrorSink::default();
    let value = T::deserialize(NodeDeserializer::new(node, &sink)).ok();
    let errors = sink.into_errors();
    (if errors.is_empty() { value } else { None }, errors)
}

/// A serde `Deserializer` reading one [`Node`].
#[derive(Clone, Copy)]
pub struct NodeDeserializer<'a> {
    node: &'a Node,
    sink: &'a ErrorSink,
}

impl<'a> NodeDeserializer<'a> {
    /// A deserializer for `node` that records errors in `sink`.
    pub fn new(node: &'a Node, sink: &'a ErrorSink) -> Self {
        NodeDeserializer { node, sink }
    }

    /// The node being read.
    pub fn node(&self) -> &'a Node {
        self.node
    }

    /// Gives an error this node's position (if it has none yet) and records it.
    pub fn locate(&self, mut error: DeError) -> DeError {
        if !error.recorded {
            error.span.get_or_insert(self.node.span);
            error.recorded = true;
            self.sink.push(error.clone());
        }
        error
    }

    fn child(&self, node: &'a Node) -> NodeDeserializer<'a> {
        NodeDeserializer {
            node,
            sink: self.sink,
        }
    }

    fn any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            NodeValue::Null => visitor.visit_unit(),
            NodeValue::Bool(b) => visitor.visit_bool(*b),
            NodeValue::Int(i) => visitor.visit_i64(*i),
            NodeValue::Float(f) => visitor.visit_f64(*f),
            NodeValue::Str(s) => visitor.visit_borrowed_str(s),
            NodeValue::Seq(items) => visitor.visit_seq(NodeSeq {
                items: items.iter(),
                de: self,
            }),
            NodeValue::Map(entries) => visitor.visit_map(NodeMap {
                entries: entries.iter(),
                value: None,
                de: self,
            }),
        }
    }
}

macro_rules! coerce_int {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
            let result = match &self.node.value {
                NodeValue::Str(s) => match s.trim().parse::<i64>() {
                    Ok(i) => visitor.visit_i64(i),
                    Err(_) => visitor.visit_borrowed_str(s),
                },
                _ => self.any(visitor),
            };
            result.map_err(|e| self.locate(e))
        }
    )*};
}

impl<'a> Deserializer<'a> for NodeDeserializer<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.any(visitor).map_err(|e| self.locate(e))
    }

    coerce_int!(
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64
    );

    fn deserialize_f64<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            NodeValue::Str(s) => match s.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => visitor.visit_f64(f),
                _ => visitor.visit_borrowed_str(s),
            },
            _ => self.any(visitor),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_f32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            NodeValue::Str(s) if s == "true" => visitor.visit_bool(true),
            NodeValue::Str(s) if s == "false" => visitor.visit_bool(false),
            _ => self.any(visitor),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            NodeValue::Bool(_) | NodeValue::Int(_) | NodeValue::Float(_) => {
                visitor.visit_string(self.node.scalar_text().unwrap_or_default())
            }
            _ => self.any(visitor),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match self.node.value {
            NodeValue::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_unit<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.any(visitor).map_err(|e| self.locate(e))
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let result = if name == SPANNED_MARKER {
            visitor.visit_seq(SpannedAccess { de: self, state: 0 })
        } else {
            visitor.visit_newtype_struct(self)
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            NodeValue::Str(_) => visitor.visit_enum(NodeEnum {
                tag: self,
                value: None,
            }),
            NodeValue::Map(entries) if entries.len() == 1 => visitor.visit_enum(NodeEnum {
                tag: self.child(&entries[0].0),
                value: Some(self.child(&entries[0].1)),
            }),
            _ => Err(DeError::new(
                "wrong-type",
                format!(
                    "expected a name or a map with exactly one key, found {}",
                    self.node.kind_name()
                ),
            )),
        };
        result.map_err(|e| self.locate(e))
    }

    /// Structs report every unknown key (with "did you mean"), then read the known
    /// ones; the derived visitor skips the unknown keys. This is what lets one
    /// `validate` list all the typos of a file instead of the first.
    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if let NodeValue::Map(entries) = &self.node.value {
            for (key, _) in entries {
                let name = key.scalar_text().unwrap_or_default();
                if !fields.contains(&name.as_str()) {
                    let error = <DeError as de::Error>::unknown_field(&name, fields);
                    self.child(key).locate(error);
                }
            }
        }
        self.any(visitor).map_err(|e| self.locate(e))
    }

    serde::forward_to_deserialize_any! {
        <W: Visitor<'a>>
        char bytes byte_buf unit_struct seq tuple tuple_struct map ignored_any
        i128 u128
    }
}

struct NodeSeq<'a> {
    items: std::slice::Iter<'a, Node>,
    de: NodeDeserializer<'a>,
}

impl<'a> SeqAccess<'a> for NodeSeq<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(node) => seed.deserialize(self.de.child(node)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct NodeMap<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a Node>,
    de: NodeDeserializer<'a>,
}

impl<'a> MapAccess<'a> for NodeMap<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(self.de.child(key)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let node = self
            .value
            .take()
            .ok_or_else(|| DeError::new("internal", "map value requested before its key"))?;
        seed.deserialize(self.de.child(node))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct NodeEnum<'a> {
    tag: NodeDeserializer<'a>,
    value: Option<NodeDeserializer<'a>>,
}

impl<'a> EnumAccess<'a> for NodeEnum<'a> {
    type Error = DeError;
    type Variant = NodeVariant<'a>;

    fn variant_seed<V: DeserializeSeed<'a>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), DeError> {
        let tag = seed.deserialize(self.tag)?;
        Ok((
            tag,
            NodeVariant {
                tag: self.tag,
                value: self.value,
            },
        ))
    }
}

struct NodeVariant<'a> {
    tag: NodeDeserializer<'a>,
    value: Option<NodeDeserializer<'a>>,
}

impl<'a> VariantAccess<'a> for NodeVariant<'a> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.value {
            None => Ok(()),
            Some(value) if value.node.value == NodeValue::Null => Ok(()),
            Some(value) => Err(value.locate(DeError::new(
                "wrong-type",
                format!(
                    "`{}` takes no value",
                    self.tag.node.scalar_text().unwrap_or_default()
                ),
            ))),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'a>>(self, seed: T) -> Result<T::Value, DeError> {
        match self.value {
            Some(value) => seed.deserialize(value),
            None => Err(self.tag.locate(DeError::new(
                "wrong-type",
                format!(
                    "`{}` needs a value (write it as a map: `{}: ...`)",
                    self.tag.node.scalar_text().unwrap_or_default(),
                    self.tag.node.scalar_text().unwrap_or_default()
                ),
            ))),
        }
    }

    fn tuple_variant<V: Visitor<'a>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Some(value) => value.deserialize_seq(visitor),
            None => Err(self
                .tag
                .locate(DeError::new("wrong-type", "expected a list"))),
        }
    }

    fn struct_variant<V: Visitor<'a>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.value {
            Some(value) => value.deserialize_map(visitor),
            None => Err(self
                .tag
                .locate(DeError::new("wrong-type", "expected a map"))),
        }
    }
}

struct SpannedAccess<'a> {
    de: NodeDeserializer<'a>,
    state: u8,
}

impl<'a> SeqAccess<'a> for SpannedAccess<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        self.state += 1;
        match self.state {
            1 => {
                let span = self.de.node.span;
                let parts = [
                    span.line as u64,
                    span.column as u64,
                    span.offset as u64,
                    span.len as u64,
                ];
                let parts: de::value::SeqDeserializer<_, DeError> =
                    de::value::SeqDeserializer::new(parts.into_iter());
                seed.deserialize(parts).map(Some)
            }
            2 => seed.deserialize(self.de).map(Some),
            _ => Ok(None),
        }
    }
}

/// A value with the position it was read from.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned<T> {
    /// Where the value is in the file.
    pub span: Span,
    /// The value.
    pub value: T,
}

impl<T> Spanned<T> {
    /// Wraps a value that did not come from a file.
    pub fn unspanned(value: T) -> Self {
        Spanned {
            span: Span::UNKNOWN,
            value,
        }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpannedVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for SpannedVisitor<T> {
            type Value = Spanned<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Spanned<T>, A::Error> {
                let (line, column, offset, len): (u64, u64, u64, u64) = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("missing span"))?;
                let value = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("missing value"))?;
                Ok(Spanned {
                    span: Span {
                        line: line as u32,
                        column: column as u32,
                        offset: offset as usize,
                        len: len as usize,
                    },
                    value,
                })
            }

            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Spanned<T>, D::Error> {
                T::deserialize(d).map(Spanned::unspanned)
            }
        }

        deserializer
            .deserialize_newtype_struct(SPANNED_MARKER, SpannedVisitor(std::marker::PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for Spanned<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// Deserializes with a seed and captures the position, like [`Spanned`] does for types.
pub struct SpannedSeed<S>(pub S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for SpannedSeed<S> {
    type Value = Spanned<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        struct SeedVisitor<S>(S);

        impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for SeedVisitor<S> {
            type Value = Spanned<S::Value>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let (line, column, offset, len): (u64, u64, u64, u64) = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("missing span"))?;
                let value = seq
                    .next_element_seed(self.0)?
                    .ok_or_else(|| de::Error::custom("missing value"))?;
                Ok(Spanned {
                    span: Span {
                        line: line as u32,
                        column: column as u32,
                        offset: offset as usize,
                        len: len as usize,
                    },
                    value,
                })
            }

            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Self::Value, D::Error> {
                self.0.deserialize(d).map(Spanned::unspanned)
            }
        }

        deserializer.deserialize_newtype_struct(SPANNED_MARKER, SeedVisitor(self.0))
    }
}

/// An item that may fail to deserialize without failing its parent: its error is in the
/// sink, and the parent keeps checking the items after it.
#[derive(Clone, Debug, PartialEq)]
pub struct Lenient<T>(pub Option<T>);

impl<T> Lenient<T> {
    /// The value, if it deserialized.
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LenientVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for LenientVisitor<T> {
            type Value = Lenient<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }

            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Lenient<T>, D::Error> {
                // The error was recorded where it happened; keep going.
                Ok(Lenient(T::deserialize(d).ok()))
            }
        }

        deserializer
            .deserialize_newtype_struct(LENIENT_MARKER, LenientVisitor(std::marker::PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for Lenient<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::source::SourceFile;
    use crate::runbook::yaml;

    #[derive(Debug, Deserialize)]

    struct Item {
        id: Spanned<String>,
        #[serde(default)]
        count: u32,
    }

    #[derive(Debug, Deserialize)]

    struct Doc {
        items: Vec<Lenient<Item>>,
    }

    fn node(text: &str) -> Node {
        yaml::parse(&SourceFile::new("t.yaml", text)).unwrap()
    }

    #[test]
    fn spans_are_captured() {
        let n = node("items:\n  - id: a\n  - id: b\n    count: \"3\"\n");
        let (doc, errors) = from_node::<Doc>(&n);
        assert!(errors.is_empty(), "{errors:?}");
        let doc = doc.unwrap();
        let second = doc.items[1].get().unwrap();
        assert_eq!(second.id.value, "b");
        assert_eq!((second.id.span.line, second.id.span.column), (3, 9));
        assert_eq!(second.count, 3, "numeric strings are read as numbers");
    }

    #[test]
    fn every_bad_item_is_reported() {
        let n = node("items:\n  - id: a\n    cuont: 1\n  - {}\n  - id: c\n    count: many\n");
        let (doc, errors) = from_node::<Doc>(&n);
        assert!(doc.is_none());
        let found: Vec<_> = errors
            .iter()
            .map(|e| (e.code, e.span.unwrap().line, e.help.clone()))
            .collect();
        assert_eq!(
            found,
            vec![
                (
                    "unknown-field",
                    3,
                    Some("did you mean `count`?".to_string())
                ),
                ("missing-field", 4, None),
                ("wrong-type", 6, None),
            ]
        );
    }
}
