//! Problems found in a runbook, and how they are shown: rustc-style snippets for people,
//! JSON for machines, `::error` annotations for GitHub Actions.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents,
    SourceCode, SourceSpan, SpanContents,
};
use serde::Serialize;

use super::source::{SourceFile, Span};

/// How serious a problem is: errors make a runbook invalid, warnings do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The runbook cannot be run.
    Error,
    /// The runbook runs, but probably not as its author meant.
    Warning,
}

/// One problem at one place in a runbook.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// A stable, kebab-case identifier of the kind of problem (e.g. `unknown-field`).
    pub code: &'static str,
    /// What is wrong, as a lowercase sentence fragment with names in backticks.
    pub message: String,
    /// Where it is wrong.
    pub span: Span,
    /// A short text shown under the caret.
    pub label: Option<String>,
    /// How to fix it.
    pub help: Option<String>,
    /// Other places that explain the problem (e.g. the first definition of a duplicate).
    pub related: Vec<(Span, String)>,
}

impl Diagnostic {
    /// An error of kind `code` at `span`.
    pub fn error(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span,
            label: None,
            help: None,
            related: Vec::new(),
        }
    }

    /// A warning of kind `code` at `span`.
    pub fn warning(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, span, message)
        }
    }

    /// Adds the text shown under the caret.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Adds a hint on how to fix the problem.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a second place that explains the problem.
    pub fn with_related(mut self, span: Span, label: impl Into<String>) -> Self {
        if span.is_known() {
            self.related.push((span, label.into()));
        }
        self
    }

    /// Whether this diagnostic makes the runbook invalid.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// The diagnostics found in one file.
#[derive(Clone, Debug)]
pub struct FileDiagnostics {
    /// The file they point into.
    pub file: Arc<SourceFile>,
    /// Sorted by position.
    pub diagnostics: Vec<Diagnostic>,
}

impl FileDiagnostics {
    /// Groups diagnostics for `file`, sorted by position then severity, duplicates removed.
    pub fn new(file: Arc<SourceFile>, mut diagnostics: Vec<Diagnostic>) -> Self {
        diagnostics.sort_by(|a, b| {
            (a.span.line, a.span.column, a.severity).cmp(&(b.span.line, b.span.column, b.severity))
        });
        diagnostics.dedup_by(|a, b| a.span == b.span && a.message == b.message);
        FileDiagnostics { file, diagnostics }
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// Number of warnings.
    pub fn warning_count(&self) -> usize {
        self.diagnostics.len() - self.error_count()
    }
}

/// The output formats of diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiagnosticFormat {
    /// Snippets with carets and hints, for people.
    Human,
    /// One JSON array of objects, for tools.
    Json,
    /// `::error file=..,line=..,col=..::` workflow commands for GitHub Actions.
    Github,
}

/// Options for human rendering.
#[derive(Clone, Copy, Debug)]
pub struct HumanStyle {
    /// Use ANSI colours.
    pub color: bool,
    /// Use Unicode box drawing (ASCII otherwise).
    pub unicode: bool,
    /// Wrap width.
    pub width: usize,
}

impl HumanStyle {
    /// Plain ASCII without colour: stable output for tests and logs.
    pub const PLAIN: HumanStyle = HumanStyle {
        color: false,
        unicode: false,
        width: 100,
    };
}

/// Renders the diagnostics of several files in `format`.
pub fn render(files: &[FileDiagnostics], format: DiagnosticFormat, style: HumanStyle) -> String {
    match format {
        DiagnosticFormat::Human => render_human(files, style),
        DiagnosticFormat::Json => render_json(files),
        DiagnosticFormat::Github => render_github(files),
    }
}

fn render_human(files: &[FileDiagnostics], style: HumanStyle) -> String {
    let theme = match (style.unicode, style.color) {
        (true, true) => GraphicalTheme::unicode(),
        (true, false) => GraphicalTheme::unicode_nocolor(),
        (false, _) if style.color => GraphicalTheme::ascii(),
        (false, _) => GraphicalTheme::none(),
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(style.width)
        .with_context_lines(1);
    let mut out = String::new();
    for file in files {
        for diagnostic in &file.diagnostics {
            let view = MietteView {
                diagnostic,
                source: FileSource(file.file.clone()),
            };
            if !diagnostic.span.is_known() {
                let _ = writeln!(out, "{}:", file.file.name());
            }
            if handler.render_report(&mut out, &view).is_err() {
                let _ = writeln!(out, "{}", diagnostic.message);
            }
        }
    }
    out
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    file: String,
    line: u32,
    column: u32,
    severity: Severity,
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    help: Option<&'a str>,
}

fn render_json(files: &[FileDiagnostics]) -> String {
    let all: Vec<JsonDiagnostic<'_>> = files
        .iter()
        .flat_map(|file| {
            file.diagnostics.iter().map(|d| JsonDiagnostic {
                file: file.file.name(),
                line: d.span.line,
                column: d.span.column,
                severity: d.severity,
                code: d.code,
                message: &d.message,
                label: d.label.as_deref(),
                help: d.help.as_deref(),
            })
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&all).unwrap_or_else(|_| "[]".into());
    out.push('\n');
    out
}

fn render_github(files: &[FileDiagnostics]) -> String {
    let mut out = String::new();
    for file in files {
        for d in &file.diagnostics {
            let command = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let mut message = d.message.clone();
            if let Some(help) = &d.help {
                message.push_str("\nhelp: ");
                message.push_str(help);
            }
            let _ = write!(
                out,
                "::{command} file={},",
                github_property(&file.file.name())
            );
            if d.span.is_known() {
                let _ = write!(out, "line={},col={},", d.span.line, d.span.column);
            }
            let _ = writeln!(
                out,
                "title={}::{}",
                github_property(d.code),
                github_data(&message)
            );
        }
    }
    out
}

fn github_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn github_property(text: &str) -> String {
    github_data(text).replace(':', "%3A").replace(',', "%2C")
}

struct FileSource(Arc<SourceFile>);

impl SourceCode for FileSource {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        // miette reads a `[u8]` from its start to find the lines: on the lines around
        // the span only, so that a runbook with thousands of warnings renders them in
        // linear time.
        let (window, first_line) = self.0.lines_around(
            span.offset(),
            span.len(),
            context_lines_before,
            context_lines_after,
        );
        let local = SourceSpan::new((span.offset() - window.start).into(), span.len());
        let text = &self.0.text.as_bytes()[window.clone()];
        let contents = text.read_span(&local, context_lines_before, context_lines_after)?;
        let found = contents.span();
        Ok(Box::new(MietteSpanContents::new_named(
            self.0.name(),
            contents.data(),
            SourceSpan::new((found.offset() + window.start).into(), found.len()),
            contents.line() + first_line,
            contents.column(),
            // Counted by miette from the start of what it read: the window.
            contents.line_count() + first_line,
        )))
    }
}

struct MietteView<'a> {
    diagnostic: &'a Diagnostic,
    source: FileSource,
}

impl fmt::Debug for MietteView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.diagnostic, f)
    }
}

impl fmt::Display for MietteView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}

impl std::error::Error for MietteView<'_> {}

impl miette::Diagnostic for MietteView<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.diagnostic.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diagnostic.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diagnostic
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.diagnostic.span.is_known().then_some(&self.source as _)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if !self.diagnostic.span.is_known() {
            return None;
        }
        let primary = LabeledSpan::new_primary_with_span(
            self.diagnostic.label.clone(),
            to_source_span(self.diagnostic.span),
        );
        let related = self.diagnostic.related.iter().map(|(span, label)| {
            LabeledSpan::new_with_span(Some(label.clone()), to_source_span(*span))
        });
        Some(Box::new(std::iter::once(primary).chain(related)))
    }
}

fn to_source_span(span: Span) -> SourceSpan {
    SourceSpan::new(span.offset.into(), span.len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<FileDiagnostics> {
        let file = SourceFile::new("runbooks/x.yaml", "version: 1\nnmae: x\n");
        let span = file.span_at(2, 1, 4);
        vec![FileDiagnostics::new(
            file,
            vec![
                Diagnostic::error("unknown-field", span, "unknown field `nmae`")
                    .with_label("not a runbook field")
                    .with_help("did you mean `name`?"),
            ],
        )]
    }

    #[test]
    fn github_format_escapes_and_locates() {
        let out = render(&sample(), DiagnosticFormat::Github, HumanStyle::PLAIN);
        assert_eq!(
            out,
            "::error file=runbooks/x.yaml,line=2,col=1,title=unknown-field::unknown field `nmae`%0Ahelp%3A did you mean `name`?\n"
                .replace("help%3A", "help:")
        );
    }

    #[test]
    fn json_format_has_position() {
        let out = render(&sample(), DiagnosticFormat::Json, HumanStyle::PLAIN);
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value[0]["line"], 2);
        assert_eq!(value[0]["column"], 1);
        assert_eq!(value[0]["code"], "unknown-field");
    }

    #[test]
    fn human_format_shows_file_line_column_and_snippet() {
        let out = render(&sample(), DiagnosticFormat::Human, HumanStyle::PLAIN);
        assert!(out.contains("runbooks/x.yaml:2:1"), "{out}");
        assert!(out.contains("nmae: x"), "{out}");
        assert!(out.contains("did you mean `name`?"), "{out}");
    }
}
