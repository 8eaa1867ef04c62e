//! YAML text -> a tree of [`Node`]s that remember where they came from.
//!
//! serde-saphyr does the YAML parsing (with its limits against alias bombs and deep
//! nesting); this module keeps every node's position so that later stages can point at
//! the exact place of a problem, and so that all problems can be collected at once.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::diagnostic::Diagnostic;
use super::source::{SourceFile, Span};

/// Runbooks larger than this are refused before parsing (a runbook is a few KiB; this
/// bound keeps a stray multi-gigabyte file from exhausting memory).
pub const MAX_RUNBOOK_BYTES: usize = 8 * 1024 * 1024;

/// Deepest nesting of maps and lists accepted.
pub const MAX_DEPTH: usize = 48;

/// A YAML value with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where the value starts (for maps and lists: their first character).
    pub span: Span,
    /// The value.
    pub value: NodeValue,
}

/// The value of a [`Node`].
#[derive(Clone, Debug, PartialEq)]
pub enum NodeValue {
    /// `~`, `null` or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string (plain or quoted).
    Str(String),
    /// A list.
    Seq(Vec<Node>),
    /// A map, in source order.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A node that came from outside any file (a `--var` value, say).
    pub fn synthetic(value: NodeValue) -> Node {
        Node {
            span: Span::UNKNOWN,
            value,
        }
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The entries, if this is a map.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            NodeValue::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The items, if this is a list.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            NodeValue::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// The key node and value node of `key`, if this is a map that has it.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.scalar_text().as_deref() == Some(key))
            .map(|(k, v)| (k, v))
    }

    /// The value of `key`, if this is a map that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The text of a scalar as written (numbers and booleans formatted back), `None` for
    /// maps and lists.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            NodeValue::Null => Some(String::new()),
            NodeValue::Bool(b) => Some(b.to_string()),
            NodeValue::Int(i) => Some(i.to_string()),
            NodeValue::Float(f) => Some(f.to_string()),
            NodeValue::Str(s) => Some(s.clone()),
            NodeValue::Seq(_) | NodeValue::Map(_) => None,
        }
    }

    /// What kind of value this is, for messages ("a map", "a string", ...).
    pub fn kind_name(&self) -> &'static str {
        match self.value {
            NodeValue::Null => "null",
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Int(_) => "an integer",
            NodeValue::Float(_) => "a number",
            NodeValue::Str(_) => "a string",
            NodeValue::Seq(_) => "a list",
            NodeValue::Map(_) => "a map",
        }
    }

    /// Calls `f` on this node and every node below it, keys included.
    pub fn walk(&self, f: &mut impl FnMut(&Node)) {
        f(self);
        match &self.value {
            NodeValue::Seq(items) => items.iter().for_each(|n| n.walk(f)),
            NodeValue::Map(entries) => entries.iter().for_each(|(k, v)| {
                k.walk(f);
                v.walk(f);
            }),
            _ => {}
        }
    }

    fn fix_spans(&mut self, file: &SourceFile) {
        let raw = self.span;
        self.span = file.span_at(raw.line, raw.column, raw.len.max(1));
        match &mut self.value {
            NodeValue::Seq(items) => items.iter_mut().for_each(|n| n.fix_spans(file)),
            NodeValue::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                k.fix_spans(file);
                v.fix_spans(file);
            }),
            _ => {}
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<NodeValue>::deserialize(deserializer)?;
        let location = spanned.referenced;
        // Lengths are in characters here; `fix_spans` turns them into byte ranges.
        let span = Span {
            line: location.line() as u32,
            column: location.column() as u32,
            offset: 0,
            len: location.span().len() as usize,
        };
        Ok(Node {
            span,
            value: spanned.value,
        })
    }
}

impl<'de> Deserialize<'de> for NodeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeValueVisitor)
    }
}

struct NodeValueVisitor;

impl<'de> Visitor<'de> for NodeValueVisitor {
    type Value = NodeValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }

    fn visit_none<E>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeValue, D::Error> {
        NodeValue::deserialize(d)
    }

    fn visit_bool<E>(self, b: bool) -> Result<NodeValue, E> {
        Ok(NodeValue::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<NodeValue, E> {
        Ok(NodeValue::Int(i))
    }

    fn visit_u64<E>(self, u: u64) -> Result<NodeValue, E> {
        Ok(i64::try_from(u).map_or(NodeValue::Float(u as f64), NodeValue::Int))
    }

    fn visit_i128<E>(self, i: i128) -> Result<NodeValue, E> {
        Ok(i64::try_from(i).map_or(NodeValue::Float(i as f64), NodeValue::Int))
    }

    fn visit_u128<E>(self, u: u128) -> Result<NodeValue, E> {
        Ok(i64::try_from(u).map_or(NodeValue::Float(u as f64), NodeValue::Int))
    }

    fn visit_f64<E>(self, f: f64) -> Result<NodeValue, E> {
        Ok(NodeValue::Float(f))
    }

    fn visit_str<E>(self, s: &str) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(s))
    }

    fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<NodeValue, E> {
        String::from_utf8(b.to_vec())
            .map(NodeValue::Str)
            .map_err(|_| E::custom("binary values are not supported"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(NodeValue::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(NodeValue::Map(entries))
    }
}

/// Reads a runbook file, refusing what cannot be a runbook (too large, not UTF-8 text).
///
/// I/O errors (missing file, permission) are returned as `Err`; content problems come
/// back as a [`Diagnostic`] on a [`SourceFile`] so that they render like any other.
pub fn read_source(path: &Path) -> std::io::Result<(Arc<SourceFile>, Option<Diagnostic>)> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_RUNBOOK_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_RUNBOOK_BYTES {
        let source = SourceFile::new(path, "");
        let diagnostic = Diagnostic::error(
            "file-too-large",
            Span::UNKNOWN,
            format!(
                "file is larger than {} MiB; runbooks are small YAML files",
                MAX_RUNBOOK_BYTES / (1024 * 1024)
            ),
        );
        return Ok((source, Some(diagnostic)));
    }
    Ok(source_from_bytes(path, bytes))
}

/// Wraps bytes as a source file, with a diagnostic if they are not UTF-8 text.
pub fn source_from_bytes(path: &Path, bytes: Vec<u8>) -> (Arc<SourceFile>, Option<Diagnostic>) {
    match String::from_utf8(bytes) {
        Ok(text) if text.contains('\0') => {
            let offset = text.find('\0').unwrap_or(0);
            let source = SourceFile::new(path, text.replace('\0', " "));
            let span = source.span_of_bytes(offset, 1);
            let diagnostic = Diagnostic::error("not-text", span, "file contains a NUL byte")
                .with_help("a runbook is a YAML text file; is this a binary file?");
            (source, Some(diagnostic))
        }
        Ok(text) => (SourceFile::new(path, text), None),
        Err(err) => {
            let offset = err.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(err.as_bytes()).into_owned();
            let source = SourceFile::new(path, text);
            let span = source.span_of_bytes(offset, 1);
            let diagnostic = Diagnostic::error("not-text", span, "file is not valid UTF-8")
                .with_help("a runbook is a YAML text file; is this a binary file?");
            (source, Some(diagnostic))
        }
    }
}

/// Parses YAML text into a [`Node`] tree, or returns the syntax error.
pub fn parse(file: &SourceFile) -> Result<Node, Box<Diagnostic>> {
    let mut options = serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
    };
    if let Some(budget) = options.budget.as_mut() {
        budget.max_depth = MAX_DEPTH;
        budget.max_documents = 1;
    }
    match serde_saphyr::from_str_with_options::<Node>(&file.text, options) {
        Ok(mut node) => {
            node.fix_spans(file);
            Ok(node)
        }
        Err(err) => Err(Box::new(syntax_diagnostic(file, &err))),
    }
}

fn syntax_diagnostic(file: &SourceFile, err: &serde_saphyr::Error) -> Diagnostic {
    let span = err
        .location()
        .map(|l| file.span_at(l.line() as u32, l.column() as u32, 1))
        .unwrap_or(Span::UNKNOWN);
    let text = err.without_snippet().to_string();
    let message = strip_location_prefix(&text);
    let is_limit = message.contains("budget") || message.contains("limit");
    let mut diagnostic = Diagnostic::error(
        if is_limit {
            "yaml-limit"
        } else {
            "yaml-syntax"
        },
        span,
        format!("invalid YAML: {message}"),
    );
    if is_limit {
        diagnostic = diagnostic.with_help(
            "runbooks are small documents; deep nesting and mass alias expansion are refused",
        );
    }
    diagnostic
}

/// serde-saphyr prefixes messages with `error: line L column C: `; we show the position
/// ourselves.
fn strip_location_prefix(text: &str) -> String {
    let text = text.trim().strip_prefix("error: ").unwrap_or(text.trim());
    let text = match text.strip_prefix("line ") {
        Some(rest) => rest.split_once(": ").map(|(_, msg)| msg).unwrap_or(rest),
        None => text,
    };
    text.lines().next().unwrap_or("").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Node, Box<Diagnostic>> {
        parse(&SourceFile::new("t.yaml", text))
    }

    #[test]
    fn nodes_know_their_position() {
        let node = parse_str("version: 1\nname: \"héllo\"\nlist: [a, b]\n").unwrap();
        let name = node.get("name").unwrap();
        assert_eq!(name.as_str(), Some("héllo"));
        assert_eq!((name.span.line, name.span.column), (2, 7));
        let list = node.get("list").unwrap().as_seq().unwrap();
        assert_eq!((list[1].span.line, list[1].span.column), (3, 11));
        let (key, _) = node.entry("list").unwrap();
        assert_eq!((key.span.line, key.span.column), (3, 1));
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        let node = parse_str("on: yes\n").unwrap();
        let (key, value) = &node.as_map().unwrap()[0];
        assert_eq!(key.as_str(), Some("on"));
        assert_eq!(value.as_str(), Some("yes"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse_str("a: [1\nb: 2\n").unwrap_err();
        assert_eq!(err.code, "yaml-syntax");
        assert!(err.span.is_known());
        assert!(!err.message.contains("line 1 column"), "{}", err.message);
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse_str("a: 1\na: 2\n").unwrap_err();
        assert!(err.message.contains("duplicate"), "{}", err.message);
        assert_eq!(err.span.line, 2);
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                [prev.as_str(); 10].join(", ")
            ));
        }
        let err = parse_str(&text).unwrap_err();
        assert!(err.code.starts_with("yaml"), "{err:?}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
        assert!(parse_str(&text).is_err());
    }

    #[test]
    fn binary_garbage_is_refused() {
        let (_, diagnostic) = source_from_bytes(Path::new("x"), vec![0xff, 0xfe, 0, 1]);
        assert_eq!(diagnostic.unwrap().code, "not-text");
        let (_, diagnostic) = source_from_bytes(Path::new("x"), b"a: \0".to_vec());
        assert_eq!(diagnostic.unwrap().code, "not-text");
    }
}
