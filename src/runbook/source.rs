//! Runbook source text and positions inside it.
//!
//! Every diagnostic points at a [`Span`] of a [`SourceFile`], so that an operator sees
//! `file:line:column` and a snippet for anything wrong with a runbook.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A position in a source file: 1-based line and column (in characters) and the byte
/// range it covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// 1-based line; 0 when the position is unknown.
    pub line: u32,
    /// 1-based column in characters; 0 when unknown.
    pub column: u32,
    /// Byte offset of the first byte.
    pub offset: usize,
    /// Length in bytes (may be 0 for a point).
    pub len: usize,
}

impl Span {
    /// A span that points nowhere (used for values that did not come from a file, such
    /// as `--var` overrides).
    pub const UNKNOWN: Span = Span {
        line: 0,
        column: 0,
        offset: 0,
        len: 0,
    };

    /// Whether this span points at a real place in a file.
    pub fn is_known(&self) -> bool {
        self.line > 0
    }
}

/// One runbook (or vars) file: its display name and its text.
#[derive(Debug)]
pub struct SourceFile {
    /// The path as the user gave it (shown in diagnostics).
    pub path: PathBuf,
    /// The full text.
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// Wraps a text read from `path`.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Arc<Self> {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Arc::new(SourceFile {
            path: path.into(),
            text,
            line_starts,
        })
    }

    /// The path for display.
    pub fn name(&self) -> String {
        display_path(&self.path)
    }

    /// The span of the character at `line`:`column` (1-based), `len` characters long,
    /// clamped to the text.
    pub fn span_at(&self, line: u32, column: u32, len_chars: usize) -> Span {
        if line == 0 {
            return Span::UNKNOWN;
        }
        let Some(&start) = self.line_starts.get(line as usize - 1) else {
            return Span {
                line,
                column,
                offset: self.text.len(),
                len: 0,
            };
        };
        let line_text = &self.text[start..];
        let mut chars = line_text.char_indices();
        let col_offset = chars
            .nth(column.saturating_sub(1) as usize)
            .map(|(i, _)| i)
            .unwrap_or(line_text.len());
        let offset = start + col_offset;
        let rest = &self.text[offset..];
        let len = rest
            .char_indices()
            .take_while(|(_, c)| *c != '\n')
            .take(len_chars)
            .map(|(i, c)| i + c.len_utf8())
            .last()
            .unwrap_or(0);
        Span {
            line,
            column,
            offset,
            len,
        }
    }

    /// The span of the byte range `offset..offset+len`.
    pub fn span_of_bytes(&self, offset: usize, len: usize) -> Span {
        let offset = offset.min(self.text.len());
        let line_index = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line_index];
        let column = self.text[start..offset].chars().count() as u32 + 1;
        Span {
            line: line_index as u32 + 1,
            column,
            offset,
            len: len.min(self.text.len() - offset),
        }
    }

    /// The byte range of the lines around `offset..offset+len`: `before` lines before
    /// the first, `after` after the last, whole lines. Returns the range and the 0-based
    /// number of its first line.
    pub fn lines_around(
        &self,
        offset: usize,
        len: usize,
        before: usize,
        after: usize,
    ) -> (std::ops::Range<usize>, usize) {
        let line_of = |offset: usize| match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let offset = offset.min(self.text.len());
        let end = (offset + len).min(self.text.len());
        let first = line_of(offset).saturating_sub(before);
        let last = line_of(end.saturating_sub(usize::from(len > 0)).max(offset)) + after + 1;
        let start = self.line_starts[first];
        let stop = self
            .line_starts
            .get(last)
            .copied()
            .unwrap_or(self.text.len());
        (start..stop, first)
    }

    /// The text of the span.
    pub fn slice(&self, span: Span) -> &str {
        self.text
            .get(span.offset..span.offset + span.len)
            .unwrap_or("")
    }
}

/// Renders a path the way the user typed it, relative paths without a `./` prefix.
pub fn display_path(path: &Path) -> String {
    let shown = path.display().to_string();
    shown.strip_prefix("./").map(str::to_owned).unwrap_or(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_at_counts_characters_not_bytes() {
        let file = SourceFile::new("x.yaml", "a: 1\nhé: bad\n");
        let span = file.span_at(2, 5, 3);
        assert_eq!(file.slice(span), "bad");
        assert_eq!(span.offset, 10);
    }

    #[test]
    fn span_of_bytes_finds_line_and_column() {
        let file = SourceFile::new("x.yaml", "a: 1\nbé: bad\n");
        let span = file.span_of_bytes(10, 3);
        assert_eq!((span.line, span.column), (2, 5));
        assert_eq!(file.slice(span), "bad");
    }

    #[test]
    fn positions_past_the_end_are_clamped() {
        let file = SourceFile::new("x.yaml", "a: 1");
        let span = file.span_at(9, 1, 4);
        assert_eq!(span.offset, 4);
        assert_eq!(file.slice(span), "");
    }
}
