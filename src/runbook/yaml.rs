//! YAML text -> a tree of [`Node`]s that remember where they came from.
//!
//! serde-saphyr does the YAML parsing (with its limits against alias bombs and deep
//! nesting); this module keeps every node's position so that later stages can point at
//! the exact place of a problem, and so that all problems can be collected at once.

use std::path::Path;
use std::sync::Arc;

use serde_saphyr::granit_parser;

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

/// Most nodes a document may expand to, aliases included: bounds the work an alias bomb
/// can cause (a real runbook has a few thousand).
pub const MAX_NODES: usize = 1_000_000;

/// Parses YAML text into a [`Node`] tree, or returns the syntax error.
///
/// The tree is built straight from the events of serde-saphyr's parser (granit): going
/// through serde-saphyr's `Spanned` values costs three times the parse itself, and a
/// runbook needs every node's position. The limits serde-saphyr would apply are applied
/// here: nesting depth, node count including alias expansion, one document, no duplicate
/// keys.
pub fn parse(file: &SourceFile) -> Result<Node, Box<Diagnostic>> {
    let mut options = granit_parser::Options::default();
    options.flow_nesting_limit = MAX_DEPTH + 1;
    options.block_nesting_limit = MAX_DEPTH + 1;
    let parser = granit_parser::Parser::new_from_str_with_options(&file.text, options);
    let mut builder = TreeBuilder::new(file);
    for event in parser {
        let (event, span) = event.map_err(|e| Box::new(scan_error(file, &e)))?;
        builder.push(event, span)?;
    }
    Ok(builder.root.unwrap_or_else(|| Node {
        span: file.span_at(1, 1, 1),
        value: NodeValue::Null,
    }))
}

fn scan_error(file: &SourceFile, err: &granit_parser::ScanError) -> Diagnostic {
    let marker = err.marker();
    let span = file.span_at(marker.line() as u32, marker.col() as u32 + 1, 1);
    let info = err.info();
    let message = info.lines().next().unwrap_or("").trim();
    let is_limit = message.contains("nesting") || message.contains("limit");
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
        diagnostic = diagnostic.with_help(LIMIT_HELP);
    }
    diagnostic
}

const LIMIT_HELP: &str =
    "runbooks are small documents; deep nesting and mass alias expansion are refused";

enum Frame {
    Seq {
        span: Span,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        span: Span,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

struct TreeBuilder<'f> {
    file: &'f SourceFile,
    stack: Vec<Frame>,
    anchors: std::collections::HashMap<usize, (Node, usize)>,
    nodes: usize,
    documents: usize,
    root: Option<Node>,
}

impl<'f> TreeBuilder<'f> {
    fn new(file: &'f SourceFile) -> Self {
        TreeBuilder {
            file,
            stack: Vec::new(),
            anchors: std::collections::HashMap::new(),
            nodes: 0,
            documents: 0,
            root: None,
        }
    }

    fn span(&self, span: &granit_parser::Span, whole: bool) -> Span {
        let start = span.start;
        let line = start.line() as u32;
        let column = start.col() as u32 + 1;
        match (start.byte_offset(), span.end.byte_offset()) {
            (Some(from), Some(to)) => Span {
                line,
                column,
                offset: from,
                len: if whole {
                    to.saturating_sub(from)
                } else {
                    (to > from) as usize
                },
            },
            _ => self.file.span_at(line, column, 1),
        }
    }

    fn limit(&self, span: Span, message: String) -> Box<Diagnostic> {
        Box::new(Diagnostic::error("yaml-limit", span, message).with_help(LIMIT_HELP))
    }

    fn push(
        &mut self,
        event: granit_parser::Event<'_>,
        raw: granit_parser::Span,
    ) -> Result<(), Box<Diagnostic>> {
        use granit_parser::Event;
        match event {
            Event::DocumentStart(..) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(Diagnostic::error(
                        "yaml-syntax",
                        self.span(&raw, false),
                        "a runbook file holds one YAML document; this is a second one",
                    )
                    .with_help("remove the `---` line, or split the documents into files")
                    .into());
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let value = resolve_scalar(&text, style, tag.as_deref());
                let node = Node {
                    span: self.span(&raw, true),
                    value,
                };
                self.complete(node, 1, anchor)?;
            }
            Event::SequenceStart(_, anchor, _) | Event::MappingStart(_, anchor, _) => {
                let span = self.span(&raw, false);
                if self.stack.len() >= MAX_DEPTH {
                    return Err(self.limit(span, format!("nesting deeper than {MAX_DEPTH} levels")));
                }
                self.stack
                    .push(if matches!(event, Event::SequenceStart(..)) {
                        Frame::Seq {
                            span,
                            anchor,
                            items: Vec::new(),
                        }
                    } else {
                        Frame::Map {
                            span,
                            anchor,
                            entries: Vec::new(),
                            key: None,
                        }
                    });
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    span,
                    anchor,
                    items,
                }) => {
                    self.complete(
                        Node {
                            span,
                            value: NodeValue::Seq(items),
                        },
                        1,
                        anchor,
                    )?;
                }
                Some(Frame::Map {
                    span,
                    anchor,
                    entries,
                    ..
                }) => {
                    let entries = merge_keys(entries)?;
                    self.complete(
                        Node {
                            span,
                            value: NodeValue::Map(entries),
                        },
                        1,
                        anchor,
                    )?;
                }
                None => {}
            },
            Event::Alias(id) => {
                let span = self.span(&raw, true);
                let Some((node, size)) = self.anchors.get(&id) else {
                    return Err(Diagnostic::error(
                        "yaml-syntax",
                        span,
                        "alias to an unknown anchor",
                    )
                    .into());
                };
                if self.nodes + size > MAX_NODES {
                    return Err(self.limit(
                        span,
                        format!("aliases expand to more than {MAX_NODES} nodes"),
                    ));
                }
                let mut node = node.clone();
                node.span = span;
                let size = *size;
                self.complete(node, size, 0)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Attaches a finished node to its parent (or makes it the root).
    fn complete(&mut self, node: Node, size: usize, anchor: usize) -> Result<(), Box<Diagnostic>> {
        self.nodes += size;
        if self.nodes > MAX_NODES {
            return Err(self.limit(node.span, format!("more than {MAX_NODES} YAML nodes")));
        }
        if anchor != 0 {
            let mut count = 0;
            node.walk(&mut |_| count += 1);
            self.anchors.insert(anchor, (node.clone(), count));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    let Some(text) = node.scalar_text() else {
                        return Err(Diagnostic::error(
                            "yaml-syntax",
                            node.span,
                            "a map key must be a plain value, not a list or a map",
                        )
                        .into());
                    };
                    if let Some((first, _)) = entries
                        .iter()
                        .find(|(k, _)| k.scalar_text().as_deref() == Some(text.as_str()))
                    {
                        return Err(Diagnostic::error(
                            "yaml-syntax",
                            node.span,
                            format!("duplicate key `{text}`"),
                        )
                        .with_related(first.span, "first given here")
                        .with_help("a key may appear once in a map; remove one of them")
                        .into());
                    }
                    *key = Some(node);
                }
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }
}

/// Applies YAML merge keys (`<<: *defaults`): entries of the merged maps fill in keys the
/// map does not set itself.
fn merge_keys(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, Box<Diagnostic>> {
    if !entries.iter().any(|(k, _)| k.as_str() == Some("<<")) {
        return Ok(entries);
    }
    let (merges, mut own): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|(k, _)| k.as_str() == Some("<<"));
    for (key, value) in merges {
        let sources: Vec<Node> = match value.value {
            NodeValue::Map(_) => vec![value],
            NodeValue::Seq(items) if items.iter().all(|i| i.as_map().is_some()) => items,
            _ => {
                return Err(Diagnostic::error(
                    "yaml-syntax",
                    key.span,
                    "`<<` merges a map or a list of maps",
                )
                .into());
            }
        };
        for source in sources {
            if let NodeValue::Map(source_entries) = source.value {
                for (k, v) in source_entries {
                    if !own
                        .iter()
                        .any(|(existing, _)| existing.scalar_text() == k.scalar_text())
                    {
                        own.push((k, v));
                    }
                }
            }
        }
    }
    Ok(own)
}

/// YAML 1.2 core schema for plain scalars; quoted and block scalars are strings.
fn resolve_scalar(
    text: &str,
    style: granit_parser::ScalarStyle,
    tag: Option<&granit_parser::Tag>,
) -> NodeValue {
    if let Some(tag) = tag
        && tag.handle() == "tag:yaml.org,2002:"
        && tag.suffix() == "str"
    {
        return NodeValue::Str(text.to_owned());
    }
    if style != granit_parser::ScalarStyle::Plain {
        return NodeValue::Str(text.to_owned());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return NodeValue::Null,
        "true" | "True" | "TRUE" => return NodeValue::Bool(true),
        "false" | "False" | "FALSE" => return NodeValue::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return NodeValue::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return NodeValue::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return NodeValue::Float(f64::NAN),
        _ => {}
    }
    let bytes = text.as_bytes();
    let first = bytes[0];
    if !(first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.') {
        return NodeValue::Str(text.to_owned());
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return NodeValue::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return NodeValue::Int(i);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<i64>() {
            Ok(i) => NodeValue::Int(i),
            Err(_) => text
                .parse::<f64>()
                .map_or_else(|_| NodeValue::Str(text.to_owned()), NodeValue::Float),
        };
    }
    let is_float = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.bytes().any(|b| b.is_ascii_digit());
    if is_float && let Ok(f) = text.parse::<f64>() {
        return NodeValue::Float(f);
    }
    NodeValue::Str(text.to_owned())
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
    fn plain_scalars_follow_the_yaml_1_2_core_schema() {
        let node = parse_str("a: 14\nb: -3\nc: 1.5\nd: 1e3\ne: 0x1F\nf: ~\ng: \"14\"\nh: 5s\ni: 2026-01-09\nj: !!str 7\n").unwrap();
        let get = |k: &str| node.get(k).unwrap().value.clone();
        assert_eq!(get("a"), NodeValue::Int(14));
        assert_eq!(get("b"), NodeValue::Int(-3));
        assert_eq!(get("c"), NodeValue::Float(1.5));
        assert_eq!(get("d"), NodeValue::Float(1000.0));
        assert_eq!(get("e"), NodeValue::Int(31));
        assert_eq!(get("f"), NodeValue::Null);
        assert_eq!(get("g"), NodeValue::Str("14".into()));
        assert_eq!(get("h"), NodeValue::Str("5s".into()));
        assert_eq!(get("i"), NodeValue::Str("2026-01-09".into()));
        assert_eq!(get("j"), NodeValue::Str("7".into()));
    }

    #[test]
    fn merge_keys_fill_in_what_the_map_does_not_set() {
        let node = parse_str(
            "base: &base { target: cache, timeout: 5s }\nstep:\n  <<: *base\n  timeout: 9s\n",
        )
        .unwrap();
        let step = node.get("step").unwrap();
        assert_eq!(step.get("target").unwrap().as_str(), Some("cache"));
        assert_eq!(step.get("timeout").unwrap().as_str(), Some("9s"));
        assert!(step.get("<<").is_none());
    }

    #[test]
    fn one_document_per_file() {
        let err = parse_str("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(err.message.contains("second"), "{}", err.message);
    }

    #[test]
    fn binary_garbage_is_refused() {
        let (_, diagnostic) = source_from_bytes(Path::new("x"), vec![0xff, 0xfe, 0, 1]);
        assert_eq!(diagnostic.unwrap().code, "not-text");
        let (_, diagnostic) = source_from_bytes(Path::new("x"), b"a: \0".to_vec());
        assert_eq!(diagnostic.unwrap().code, "not-text");
    }
}
