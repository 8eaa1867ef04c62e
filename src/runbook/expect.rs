//! `expect:` — what a step's value must look like.
//!
//! Written as a string (`">= 14"`, `"< 8GB"`, `"== PONG"`, `empty`), a number, a list
//! (all must hold) or a map of tests and fields:
//! `{ count: ">= 14", each: { mounts: { not_contains: "/src:" } } }`.

use std::cmp::Ordering;
use std::fmt;

use regex::Regex;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::template::Template;
use super::units::{CompareOp, Quantity, parse_duration, parse_timestamp};
use crate::value::Value;

/// The right-hand side of a comparison: known when the runbook is loaded, or a template
/// resolved at run time (`<= ${steps.baseline.value}`).
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A literal quantity.
    Known(Quantity),
    /// Resolved and parsed at run time.
    Deferred(Template),
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Known(q) => write!(f, "{q}"),
            Operand::Deferred(t) => write!(f, "{t}"),
        }
    }
}

/// A text test on a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextTest {
    /// `contains`
    Contains,
    /// `starts_with`
    StartsWith,
    /// `ends_with`
    EndsWith,
}

impl TextTest {
    fn name(self) -> &'static str {
        match self {
            TextTest::Contains => "contains",
            TextTest::StartsWith => "starts with",
            TextTest::EndsWith => "ends with",
        }
    }

    fn holds(self, haystack: &str, needle: &str) -> bool {
        match self {
            TextTest::Contains => haystack.contains(needle),
            TextTest::StartsWith => haystack.starts_with(needle),
            TextTest::EndsWith => haystack.ends_with(needle),
        }
    }
}

/// An expectation on a value.
#[derive(Clone, Debug)]
pub enum Expect {
    /// `">= 14"`, `"< 8GB"`, `"== PONG"`, `14`.
    Compare {
        /// The operator.
        op: CompareOp,
        /// What to compare with.
        operand: Operand,
        /// The operand as the runbook wrote it (`1500us`), shown instead of a rounded
        /// rendering; empty when it was not written as text.
        written: String,
    },
    /// `empty` (true) or `not empty` (false).
    Empty(bool),
    /// `contains`, `starts_with`, `ends_with`, and their `not_` forms.
    Text {
        /// Which test.
        test: TextTest,
        /// The text to look for.
        needle: Template,
        /// The `not_` form.
        negate: bool,
    },
    /// `matches: REGEX` / `not_matches: REGEX`.
    Matches {
        /// The pattern.
        regex: Regex,
        /// The `not_` form.
        negate: bool,
    },
    /// `count: EXPECT` — the number of items of a list.
    Count(Box<Expect>),
    /// `distinct: { FIELD: EXPECT }` — the number of different values of a field among
    /// the items of a list (log lines of 14 containers, not 14 lines).
    Distinct {
        /// The field.
        field: String,
        /// The test on the number.
        expect: Box<Expect>,
    },
    /// `each: EXPECT` — every item (a non-empty list).
    Each(Box<Expect>),
    /// `any: EXPECT` — at least one item.
    Any(Box<Expect>),
    /// `none: EXPECT` — no item.
    NoneOf(Box<Expect>),
    /// `FIELD: EXPECT` — a field of an object.
    Field {
        /// The field name.
        name: String,
        /// The expectation on it.
        expect: Box<Expect>,
    },
    /// A list, or several keys in one map: all must hold.
    All(Vec<Expect>),
}

impl PartialEq for Expect {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

/// Keys of an expectation map that are tests, not field names.
pub const EXPECT_KEYWORDS: &[&str] = &[
    "count",
    "distinct",
    "each",
    "any",
    "none",
    "empty",
    "matches",
    "not_matches",
    "contains",
    "not_contains",
    "starts_with",
    "not_starts_with",
    "ends_with",
    "not_ends_with",
];

/// The result of checking a value.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckOutcome {
    /// Whether the expectation holds.
    pub passed: bool,
    /// Why, in a few words (`1.2 GiB < 8 GiB`, `item 3: ...`).
    pub detail: String,
}

impl CheckOutcome {
    fn new(passed: bool, detail: impl Into<String>) -> Self {
        CheckOutcome {
            passed,
            detail: detail.into(),
        }
    }
}

/// Resolves run-time operands (`${steps.x.value}`) into text.
pub trait OperandResolver {
    /// The text of the template, or why it cannot be resolved.
    fn resolve(&self, template: &Template) -> Result<String, String>;
}

/// A resolver for checks that have no run-time references.
pub struct NoResolver;

impl OperandResolver for NoResolver {
    fn resolve(&self, template: &Template) -> Result<String, String> {
        template
            .as_literal()
            .map(str::to_owned)
            .ok_or_else(|| format!("`{}` can only be resolved during a run", template.display()))
    }
}

impl Expect {
    /// Parses the string form: `empty`, `not empty`, `OP OPERAND`, or a bare value (`==`).
    pub fn parse_shorthand(text: &str) -> Result<Expect, String> {
        let trimmed = text.trim();
        match trimmed {
            "empty" => return Ok(Expect::Empty(true)),
            "not empty" | "not_empty" => return Ok(Expect::Empty(false)),
            "" => return Err("empty expectation; write e.g. `>= 1`, `== PONG` or `empty`".into()),
            _ => {}
        }
        match CompareOp::split(trimmed) {
            Some((op, rest)) => {
                if rest.is_empty() {
                    return Err(format!("`{trimmed}`: nothing to compare with after `{op}`"));
                }
                let operand = parse_operand(rest)?;
                if op.is_ordering()
                    && let Operand::Known(Quantity::Text(t)) = &operand
                {
                    return Err(format!(
                        "`{trimmed}`: `{op}` needs a number, size, duration or timestamp, not the text `{t}`"
                    ));
                }
                Ok(Expect::Compare {
                    op,
                    operand,
                    written: rest.trim().to_owned(),
                })
            }
            None => {
                let operand = match parse_operand(trimmed) {
                    Ok(operand) => operand,
                    Err(_) => Operand::Known(Quantity::Text(trimmed.to_owned())),
                };
                Ok(Expect::Compare {
                    op: CompareOp::Eq,
                    operand,
                    written: trimmed.to_owned(),
                })
            }
        }
    }

    /// Every run-time template inside (operands and needles).
    pub fn templates(&self) -> Vec<&Template> {
        let mut out = Vec::new();
        self.collect_templates(&mut out);
        out
    }

    fn collect_templates<'a>(&'a self, out: &mut Vec<&'a Template>) {
        match self {
            Expect::Compare {
                operand: Operand::Deferred(t),
                ..
            } => out.push(t),
            Expect::Text { needle, .. } => out.push(needle),
            Expect::Count(e) | Expect::Each(e) | Expect::Any(e) | Expect::NoneOf(e) => {
                e.collect_templates(out)
            }
            Expect::Distinct { expect, .. } => expect.collect_templates(out),
            Expect::Field { expect, .. } => expect.collect_templates(out),
            Expect::All(all) => all.iter().for_each(|e| e.collect_templates(out)),
            _ => {}
        }
    }

    /// Every literal quantity inside.
    pub fn quantities(&self) -> Vec<&Quantity> {
        let mut out = Vec::new();
        self.visit(&mut |e| {
            if let Expect::Compare {
                operand: Operand::Known(q),
                ..
            } = e
            {
                out.push(q);
            }
        });
        out
    }

    /// Calls `f` on this expectation and every one inside it.
    pub fn visit<'a>(&'a self, f: &mut impl FnMut(&'a Expect)) {
        f(self);
        match self {
            Expect::Count(e) | Expect::Each(e) | Expect::Any(e) | Expect::NoneOf(e) => e.visit(f),
            Expect::Distinct { expect, .. } => expect.visit(f),
            Expect::Field { expect, .. } => expect.visit(f),
            Expect::All(all) => all.iter().for_each(|e| e.visit(f)),
            _ => {}
        }
    }

    /// Checks `value`.
    pub fn check(&self, value: &Value, resolver: &dyn OperandResolver) -> CheckOutcome {
        match self {
            Expect::Compare { op, operand, .. } => check_compare(value, *op, operand, resolver),
            Expect::Empty(want_empty) => {
                let empty = match value {
                    Value::Null => true,
                    Value::Text(s) => s.trim().is_empty(),
                    Value::List(items) => items.is_empty(),
                    Value::Object(fields) => fields.is_empty(),
                    other => {
                        return CheckOutcome::new(
                            false,
                            format!(
                                "{} is never empty; compare it instead (`== 0`)",
                                other.kind_name()
                            ),
                        );
                    }
                };
                let shown = short(value);
                if empty == *want_empty {
                    CheckOutcome::new(
                        true,
                        if empty {
                            "empty".to_owned()
                        } else {
                            format!("not empty: {shown}")
                        },
                    )
                } else if empty {
                    CheckOutcome::new(false, "empty, expected something")
                } else {
                    CheckOutcome::new(false, format!("not empty: {shown}"))
                }
            }
            Expect::Text {
                test,
                needle,
                negate,
            } => {
                let needle = match resolver.resolve(needle) {
                    Ok(n) => n,
                    Err(e) => return CheckOutcome::new(false, e),
                };
                let hit = match value {
                    Value::List(items) => {
                        items.iter().position(|i| test.holds(&i.as_text(), &needle))
                    }
                    other => test.holds(&other.as_text(), &needle).then_some(0),
                };
                let verb = test.name();
                match (hit, negate) {
                    (None, false) => CheckOutcome::new(
                        false,
                        format!(
                            "does not {} `{needle}`",
                            verb.replace("s ", " ").trim_end_matches('s')
                        ),
                    ),
                    (None, true) => CheckOutcome::new(true, format!("no `{needle}`")),
                    (Some(i), false) => {
                        CheckOutcome::new(true, located(value, i, &format!("{verb} `{needle}`")))
                    }
                    (Some(i), true) => {
                        CheckOutcome::new(false, located(value, i, &format!("{verb} `{needle}`")))
                    }
                }
            }
            Expect::Matches { regex, negate } => {
                let hit = match value {
                    Value::List(items) => items.iter().position(|i| regex.is_match(&i.as_text())),
                    other => regex.is_match(&other.as_text()).then_some(0),
                };
                match (hit, negate) {
                    (None, false) => CheckOutcome::new(false, format!("does not match /{regex}/")),
                    (None, true) => CheckOutcome::new(true, format!("nothing matches /{regex}/")),
                    (Some(i), false) => {
                        CheckOutcome::new(true, located(value, i, &format!("matches /{regex}/")))
                    }
                    (Some(i), true) => {
                        CheckOutcome::new(false, located(value, i, &format!("matches /{regex}/")))
                    }
                }
            }
            Expect::Count(inner) => {
                let count = match value {
                    Value::List(items) => items.len(),
                    Value::Object(fields) => fields.len(),
                    Value::Null => 0,
                    other => {
                        return CheckOutcome::new(
                            false,
                            format!("`count` needs a list, found {}", other.kind_name()),
                        );
                    }
                };
                let outcome = inner.check(&Value::Number(count as f64), resolver);
                CheckOutcome::new(outcome.passed, format!("count {}", outcome.detail))
            }
            Expect::Distinct { field, expect } => {
                let items: &[Value] = match value {
                    Value::List(items) => items,
                    Value::Null => &[],
                    other => {
                        return CheckOutcome::new(
                            false,
                            format!("`distinct` needs a list, found {}", other.kind_name()),
                        );
                    }
                };
                let different: std::collections::BTreeSet<String> = items
                    .iter()
                    .filter_map(|item| item.field(field))
                    .filter(|v| !matches!(v, Value::Null))
                    .map(Value::as_text)
                    .collect();
                let outcome = expect.check(&Value::Number(different.len() as f64), resolver);
                CheckOutcome::new(
                    outcome.passed,
                    format!("distinct `{field}` values {}", outcome.detail),
                )
            }
            Expect::Each(inner) | Expect::Any(inner) | Expect::NoneOf(inner) => {
                let Value::List(items) = value else {
                    return CheckOutcome::new(
                        false,
                        format!(
                            "`{}` needs a list, found {}",
                            self.keyword(),
                            value.kind_name()
                        ),
                    );
                };
                let outcomes: Vec<_> = items.iter().map(|i| inner.check(i, resolver)).collect();
                let passing = outcomes.iter().filter(|o| o.passed).count();
                match self {
                    Expect::Each(_) => {
                        if items.is_empty() {
                            return CheckOutcome::new(
                                false,
                                "`each` over an empty list: nothing was checked",
                            );
                        }
                        match outcomes.iter().position(|o| !o.passed) {
                            None => {
                                CheckOutcome::new(true, format!("all {} items pass", items.len()))
                            }
                            Some(i) => CheckOutcome::new(
                                false,
                                format!(
                                    "{} of {} items fail; {}: {}",
                                    items.len() - passing,
                                    items.len(),
                                    item_name(&items[i], i),
                                    outcomes[i].detail
                                ),
                            ),
                        }
                    }
                    Expect::Any(_) => match outcomes.iter().position(|o| o.passed) {
                        Some(i) => CheckOutcome::new(
                            true,
                            format!("{}: {}", item_name(&items[i], i), outcomes[i].detail),
                        ),
                        None => {
                            CheckOutcome::new(false, format!("none of {} items pass", items.len()))
                        }
                    },
                    _ => match outcomes.iter().position(|o| o.passed) {
                        None => {
                            CheckOutcome::new(true, format!("none of {} items match", items.len()))
                        }
                        Some(i) => CheckOutcome::new(
                            false,
                            format!("{}: {}", item_name(&items[i], i), outcomes[i].detail),
                        ),
                    },
                }
            }
            Expect::Field { name, expect } => match value {
                Value::Object(fields) => {
                    let field = fields.get(name).unwrap_or(&Value::Null);
                    let outcome = expect.check(field, resolver);
                    CheckOutcome::new(outcome.passed, format!("{name}: {}", outcome.detail))
                }
                Value::List(_) => CheckOutcome::new(
                    false,
                    format!(
                        "`{name}` is a field, but the value is a list; use `each:` or `any:` first"
                    ),
                ),
                other => CheckOutcome::new(
                    false,
                    format!(
                        "`{name}` is a field, but the value is {}",
                        other.kind_name()
                    ),
                ),
            },
            Expect::All(all) => {
                let outcomes: Vec<_> = all.iter().map(|e| e.check(value, resolver)).collect();
                match outcomes.iter().find(|o| !o.passed) {
                    Some(failed) => failed.clone(),
                    None => CheckOutcome::new(
                        true,
                        outcomes
                            .iter()
                            .map(|o| o.detail.as_str())
                            .collect::<Vec<_>>()
                            .join("; "),
                    ),
                }
            }
        }
    }

    fn keyword(&self) -> &'static str {
        match self {
            Expect::Each(_) => "each",
            Expect::Any(_) => "any",
            Expect::NoneOf(_) => "none",
            Expect::Count(_) => "count",
            _ => "expect",
        }
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        format!("{}...", text.chars().take(77).collect::<String>())
    } else {
        text
    }
}

fn item_name(item: &Value, index: usize) -> String {
    match item.field("name") {
        Some(Value::Text(name)) => format!("`{name}`"),
        _ => format!("item {}", index + 1),
    }
}

fn located(value: &Value, index: usize, what: &str) -> String {
    match value {
        Value::List(items) => format!("{} {what}", item_name(&items[index], index)),
        _ => what.to_owned(),
    }
}

fn parse_operand(text: &str) -> Result<Operand, String> {
    if text.contains("${") {
        return Template::parse(text)
            .map(Operand::Deferred)
            .map_err(|e| e.message);
    }
    Quantity::parse(text)
        .map(Operand::Known)
        .map_err(|e| e.to_string())
}

/// A resolved operand written as arithmetic on numbers or sizes, such as
/// `${steps.before.value.total.depth} * 1.5 + 100` or `${steps.m.value} + 512mb` (spaces
/// around `+`, `-`, `*`; `*` first). `None` when the text is not such an expression.
fn arithmetic(text: &str) -> Option<Result<Quantity, String>> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    if tokens.len() < 3 || tokens.len().is_multiple_of(2) {
        return None;
    }
    let mut terms: Vec<(f64, bool)> = Vec::new(); // (value, is a size)
    let mut ops: Vec<char> = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if i % 2 == 1 {
            match *token {
                "+" | "-" | "*" => ops.push(token.chars().next()?),
                _ => return None,
            }
        } else {
            match Quantity::parse(token).ok()? {
                Quantity::Number(n) => terms.push((n, false)),
                Quantity::Size(n) => terms.push((n, true)),
                _ => return None,
            }
        }
    }
    // Products first, then sums left to right.
    let mut sums: Vec<(f64, bool)> = vec![terms[0]];
    let mut signs: Vec<char> = Vec::new();
    for (op, term) in ops.iter().zip(terms.into_iter().skip(1)) {
        if *op == '*' {
            let last = sums.last_mut()?;
            if last.1 && term.1 {
                return Some(Err(format!("`{text}` multiplies two sizes")));
            }
            *last = (last.0 * term.0, last.1 || term.1);
        } else {
            sums.push(term);
            signs.push(*op);
        }
    }
    // A plain number next to a size is a number of bytes (as step values of memory
    // fields are): `${steps.mem.value} + 512mb`.
    let (mut total, mut size) = sums[0];
    for (sign, term) in signs.iter().zip(sums.iter().skip(1)) {
        size |= term.1;
        total = if *sign == '+' {
            total + term.0
        } else {
            total - term.0
        };
    }
    if !total.is_finite() {
        return Some(Err(format!("`{text}` is not a finite number")));
    }
    Some(Ok(if size {
        Quantity::Size(total)
    } else {
        Quantity::Number(total)
    }))
}

fn check_compare(
    value: &Value,
    op: CompareOp,
    operand: &Operand,
    resolver: &dyn OperandResolver,
) -> CheckOutcome {
    let quantity = match operand {
        Operand::Known(q) => q.clone(),
        Operand::Deferred(template) => {
            match resolver
                .resolve(template)
                .and_then(|text| match arithmetic(&text) {
                    Some(result) => result,
                    None => Quantity::parse(&text).map_err(|e| e.to_string()),
                }) {
                Ok(q) => q,
                Err(e) => return CheckOutcome::new(false, e),
            }
        }
    };
    match compare(value, &quantity, op) {
        Ok(ordering) => {
            let passed = op.holds(ordering);
            CheckOutcome::new(
                passed,
                format!("{} {op} {quantity}", show_value_like(value, &quantity)),
            )
        }
        Err(e) => CheckOutcome::new(false, e),
    }
}

impl Expect {
    /// The measured value as the criterion reads it: a number of bytes in a size's
    /// unit (`917.2 KiB` beside `< 1 GiB`, not `939240`).
    /// Whole (the caller shortens it).
    pub fn measured(&self, value: &Value) -> String {
        match (self, value) {
            (
                Expect::Compare {
                    operand: Operand::Known(Quantity::Size(_)),
                    ..
                },
                Value::Number(n),
            ) => super::units::format_size(*n),
            _ => value.to_string(),
        }
    }
}

fn show_value_like(value: &Value, quantity: &Quantity) -> String {
    match (value, quantity) {
        (Value::Number(n), Quantity::Size(_)) => super::units::format_size(*n),
        _ => short(value),
    }
}

/// Orders `value` against `quantity`, or says why they cannot be compared.
pub fn compare(value: &Value, quantity: &Quantity, op: CompareOp) -> Result<Ordering, String> {
    let mismatch = || {
        format!(
            "cannot compare {} (`{}`) with {} (`{quantity}`)",
            value.kind_name(),
            short(value),
            quantity.kind_name()
        )
    };
    let numeric = |target: f64| -> Result<Ordering, String> {
        let n = match value {
            Value::Number(n) => *n,
            Value::Text(s) => s.trim().parse::<f64>().map_err(|_| mismatch())?,
            Value::Bool(_) | Value::Null => return Err(mismatch()),
            _ => return Err(mismatch()),
        };
        n.partial_cmp(&target).ok_or_else(mismatch)
    };
    match quantity {
        Quantity::Number(n) => numeric(*n),
        Quantity::Size(bytes) => match value {
            Value::Text(s) => match Quantity::parse(s) {
                Ok(Quantity::Size(v) | Quantity::Number(v)) => {
                    v.partial_cmp(bytes).ok_or_else(mismatch)
                }
                _ => Err(mismatch()),
            },
            _ => numeric(*bytes),
        },
        Quantity::Duration(d) => match value {
            Value::Duration(v) => Ok(v.cmp(d)),
            Value::Text(s) => parse_duration(s).map(|v| v.cmp(d)).map_err(|_| mismatch()),
            _ => Err(mismatch()),
        },
        Quantity::Timestamp(t) => match value {
            Value::Timestamp(v) => Ok(v.cmp(t)),
            Value::Text(s) => parse_timestamp(s).map(|v| v.cmp(t)).map_err(|_| mismatch()),
            _ => Err(mismatch()),
        },
        Quantity::Ratio(_) => Err(format!(
            "`{quantity}` is a ratio; ratios are for `rate:` triggers"
        )),
        Quantity::Text(text) => {
            if op.is_ordering() {
                return Err(mismatch());
            }
            match value {
                Value::List(_) | Value::Object(_) => Err(format!(
                    "{} cannot equal text; use `count:`, `each:`, `any:` or a field",
                    value.kind_name()
                )),
                other => Ok(other.as_text().trim().cmp(text.trim())),
            }
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Compare { op, written, .. } if !written.is_empty() => {
                write!(f, "{op} {written}")
            }
            Expect::Compare { op, operand, .. } => write!(f, "{op} {operand}"),
            Expect::Empty(true) => f.write_str("empty"),
            Expect::Empty(false) => f.write_str("not empty"),
            Expect::Text {
                test,
                needle,
                negate,
            } => {
                let not = if *negate { "not " } else { "" };
                write!(f, "{not}{} `{needle}`", test.name())
            }
            Expect::Matches { regex, negate } => {
                let not = if *negate { "not " } else { "" };
                write!(f, "{not}matches /{regex}/")
            }
            Expect::Count(e) => write!(f, "count {e}"),
            Expect::Distinct { field, expect } => write!(f, "distinct {field} {expect}"),
            Expect::Each(e) => write!(f, "each {e}"),
            Expect::Any(e) => write!(f, "any {e}"),
            Expect::NoneOf(e) => write!(f, "none {e}"),
            Expect::Field { name, expect } => write!(f, "{name} {expect}"),
            Expect::All(all) => {
                for (i, e) in all.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" and ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

struct RegexText(Regex);

impl<'de> Deserialize<'de> for RegexText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::de::deserialize_parsed(d, "a regex", |text| compile_regex(text).map(RegexText))
    }
}

/// Checks a regex's syntax without compiling it (compiling costs far more, and the
/// patterns of container names and log lines are compiled when the step runs).
/// Compiles it as the run will ([`compile_regex`], with its size limit), so that a
/// pattern that cannot compile at run time fails validation.
pub fn check_regex(text: &str) -> Result<(), String> {
    compile_regex(text).map(|_| ())
}

/// The compiled size a runbook regex may take (its NFA), so that a hostile pattern
/// cannot eat memory.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a runbook regex, with [`REGEX_SIZE_LIMIT`].
pub fn compile_regex(text: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(text)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid regex `{text}`: {}", first_line(&e.to_string())))
}

fn first_line(text: &str) -> String {
    text.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(text)
        .trim()
        .to_owned()
}

impl<'de> Deserialize<'de> for Expect {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ExpectVisitor)
    }
}

struct ExpectVisitor;

impl<'de> Visitor<'de> for ExpectVisitor {
    type Value = Expect;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an expectation (`>= 14`, `< 8GB`, `== PONG`, `empty`, or a map such as `{ count: \">= 1\" }`)")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Expect, E> {
        Expect::parse_shorthand(s).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Expect, E> {
        Ok(Expect::Compare {
            op: CompareOp::Eq,
            operand: Operand::Known(Quantity::Number(n as f64)),
            written: n.to_string(),
        })
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Expect, E> {
        self.visit_f64(n as f64)
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Expect, E> {
        Ok(Expect::Compare {
            op: CompareOp::Eq,
            operand: Operand::Known(Quantity::Number(n)),
            written: n.to_string(),
        })
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Expect, E> {
        Ok(Expect::Compare {
            op: CompareOp::Eq,
            operand: Operand::Known(Quantity::Text(b.to_string())),
            written: b.to_string(),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Expect, A::Error> {
        let mut all = Vec::new();
        while let Some(e) = seq.next_element::<Expect>()? {
            all.push(e);
        }
        if all.is_empty() {
            return Err(de::Error::custom(
                "an empty list of expectations checks nothing",
            ));
        }
        Ok(Expect::All(all))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Expect, A::Error> {
        let mut all = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let (negate, base) = match key.strip_prefix("not_") {
                Some(base) => (true, base),
                None => (false, key.as_str()),
            };
            let expect = match (negate, base) {
                (false, "count") => Expect::Count(Box::new(map.next_value()?)),
                (false, "distinct") => match map.next_value::<Expect>()? {
                    Expect::Field { name, expect } => Expect::Distinct {
                        field: name,
                        expect,
                    },
                    _ => {
                        return Err(de::Error::custom(
                            "`distinct` takes one field and a test: `distinct: { container: \">= 14\" }`",
                        ));
                    }
                },
                (false, "each") => Expect::Each(Box::new(map.next_value()?)),
                (false, "any") => Expect::Any(Box::new(map.next_value()?)),
                (false, "none") => Expect::NoneOf(Box::new(map.next_value()?)),
                (false, "empty") => Expect::Empty(map.next_value::<bool>()?),
                (_, "matches") => Expect::Matches {
                    regex: map.next_value::<RegexText>()?.0,
                    negate,
                },
                (_, "contains" | "starts_with" | "ends_with") => Expect::Text {
                    test: match base {
                        "contains" => TextTest::Contains,
                        "starts_with" => TextTest::StartsWith,
                        _ => TextTest::EndsWith,
                    },
                    needle: map.next_value()?,
                    negate,
                },
                _ => Expect::Field {
                    name: key.clone(),
                    expect: Box::new(map.next_value()?),
                },
            };
            all.push(expect);
        }
        match all.len() {
            0 => Err(de::Error::custom("an empty map checks nothing")),
            1 => Ok(all.pop().unwrap_or(Expect::All(Vec::new()))),
            _ => Ok(Expect::All(all)),
        }
    }
}

impl schemars::JsonSchema for Expect {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Expect".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let this = generator.subschema_for::<Expect>();
        schemars::json_schema!({
            "description": "What the value must look like: `>= 14`, `< 8GB`, `< 600ms`, `> 2026-01-09`, `== PONG`, `empty`, `not empty`; a list (all hold); or a map of tests (count, distinct, each, any, none, empty, matches, contains, starts_with, ends_with and their not_ forms) and field names.",
            "anyOf": [
                { "type": "string" },
                { "type": "number" },
                { "type": "boolean" },
                { "type": "array", "items": this, "minItems": 1 },
                {
                    "type": "object",
                    "minProperties": 1,
                    "properties": {
                        "count": this, "each": this, "any": this, "none": this,
                        "distinct": { "type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": this },
                        "empty": { "type": "boolean" },
                        "matches": { "type": "string", "format": "regex" },
                        "not_matches": { "type": "string", "format": "regex" },
                        "contains": { "type": "string" }, "not_contains": { "type": "string" },
                        "starts_with": { "type": "string" }, "not_starts_with": { "type": "string" },
                        "ends_with": { "type": "string" }, "not_ends_with": { "type": "string" }
                    },
                    "additionalProperties": this
                }
            ]
        })
    }
}

#[cfg(test)]
mod arithmetic_tests {
    use super::*;

    #[test]
    fn operands_resolve_to_simple_arithmetic() {
        let n = |t: &str| arithmetic(t).unwrap().unwrap();
        assert_eq!(n("120 * 1.5 + 100"), Quantity::Number(280.0));
        assert_eq!(n("100 + 120 * 1.5"), Quantity::Number(280.0));
        assert_eq!(n("10 - 2 - 3"), Quantity::Number(5.0));
        assert_eq!(
            n("1gb + 512mb"),
            Quantity::Size(1.5 * 1024.0 * 1024.0 * 1024.0)
        );
        assert_eq!(n("2 * 1kb"), Quantity::Size(2048.0));
        assert_eq!(n("1gb + 5"), Quantity::Size(1024.0 * 1024.0 * 1024.0 + 5.0));
        assert_eq!(
            n("2035328 + 512mb"),
            Quantity::Size(2035328.0 + 512.0 * 1024.0 * 1024.0)
        );
        assert!(arithmetic("1gb * 1gb").unwrap().is_err());
        // Not arithmetic: left to the usual parsing.
        assert!(arithmetic("PONG").is_none());
        assert!(arithmetic("a + b").is_none());
        assert!(arithmetic("12").is_none());
    }

    #[test]
    fn a_deferred_operand_may_be_arithmetic() {
        struct Before;
        impl OperandResolver for Before {
            fn resolve(&self, _: &Template) -> Result<String, String> {
                Ok("120 * 1.5 + 100".into())
            }
        }
        let e = Expect::parse_shorthand("<= ${steps.before.value} * 1.5 + 100").unwrap();
        assert!(e.check(&Value::Number(280.0), &Before).passed);
        assert!(!e.check(&Value::Number(281.0), &Before).passed);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::runbook::de::from_node;
    use crate::runbook::source::SourceFile;
    use crate::runbook::yaml;

    fn expect(yaml_text: &str) -> Expect {
        let node = yaml::parse(&SourceFile::new("t", yaml_text)).unwrap();
        let (e, errors) = from_node::<Expect>(&node);
        assert!(errors.is_empty(), "{errors:?}");
        e.unwrap()
    }

    fn passes(e: &Expect, v: &Value) -> bool {
        e.check(v, &NoResolver).passed
    }

    fn container(name: &str, mounts: &[&str]) -> Value {
        let mut fields = BTreeMap::new();
        fields.insert("name".into(), Value::Text(name.into()));
        fields.insert(
            "mounts".into(),
            Value::List(mounts.iter().map(|m| Value::Text(m.to_string())).collect()),
        );
        Value::Object(fields)
    }

    #[test]
    fn numbers_sizes_durations_timestamps() {
        assert!(passes(&expect("\">= 14\""), &Value::Number(14.0)));
        assert!(!passes(&expect("\">= 14\""), &Value::Number(13.0)));
        assert!(passes(
            &expect("\"< 8GB\""),
            &Value::Number(1_170_000_000.0)
        ));
        assert!(!passes(&expect("\"< 8GB\""), &Value::Number(9e9)));
        assert!(passes(
            &expect("< 600ms"),
            &Value::Duration(Duration::from_millis(12))
        ));
        assert!(!passes(
            &expect("< 600ms"),
            &Value::Duration(Duration::from_millis(900))
        ));
        let built: jiff::Timestamp = "2026-01-10T08:00:00Z".parse().unwrap();
        assert!(passes(
            &expect("\"> 2026-01-09\""),
            &Value::Timestamp(built)
        ));
        assert!(passes(&expect("0"), &Value::Number(0.0)));
        assert!(passes(&expect("\"0\""), &Value::Text("0".into())));
    }

    #[test]
    fn distinct_counts_different_values_of_a_field() {
        let line = |container: &str| {
            let mut fields = std::collections::BTreeMap::new();
            fields.insert("container".to_owned(), Value::Text(container.into()));
            fields.insert("line".to_owned(), Value::Text("Worker started".into()));
            Value::Object(fields)
        };
        // Three lines, from two containers: `count` says 3, `distinct` 2.
        let lines = Value::List(vec![line("w1"), line("w1"), line("w2")]);
        assert!(passes(&expect("{ count: 3 }"), &lines));
        assert!(passes(&expect("{ distinct: { container: 2 } }"), &lines));
        assert!(!passes(
            &expect("{ distinct: { container: \">= 3\" } }"),
            &lines
        ));
        assert!(passes(
            &expect("{ distinct: { container: 0 } }"),
            &Value::List(vec![])
        ));
        let node = yaml::parse(&SourceFile::new("t", "{ distinct: \">= 2\" }")).unwrap();
        let (_, errors) = from_node::<Expect>(&node);
        assert!(!errors.is_empty());
    }

    #[test]
    fn text_and_emptiness() {
        assert!(passes(&expect("== PONG"), &Value::Text("PONG".into())));
        assert!(passes(&expect("PONG"), &Value::Text("PONG".into())));
        assert!(!passes(&expect("== PONG"), &Value::Text("LOADING".into())));
        assert!(passes(&expect("empty"), &Value::List(vec![])));
        assert!(!passes(
            &expect("empty"),
            &Value::List(vec![Value::Text("ECONNREFUSED".into())])
        ));
        assert!(passes(&expect("not empty"), &Value::Text("x".into())));
        assert!(passes(
            &expect("{ matches: '^rediss?://' }"),
            &Value::Text("rediss://h".into())
        ));
        assert!(passes(
            &expect("{ starts_with: 'https://' }"),
            &Value::Text("https://x.upstash.io".into())
        ));
        assert!(!passes(
            &expect("{ starts_with: 'https://' }"),
            &Value::Text("http://x".into())
        ));
    }

    #[test]
    fn lists() {
        let ok = Value::List(vec![
            container("w1", &["/data:/data"]),
            container("w2", &[]),
        ]);
        let bad = Value::List(vec![
            container("w1", &[]),
            container("w2", &["/home/a/src:/app/src"]),
        ]);
        let e = expect("{ each: { mounts: { not_contains: '/src:' } } }");
        assert!(passes(&e, &ok));
        let outcome = e.check(&bad, &NoResolver);
        assert!(!outcome.passed);
        assert!(outcome.detail.contains("`w2`"), "{}", outcome.detail);
        assert!(
            !passes(&e, &Value::List(vec![])),
            "each over nothing is not a pass"
        );
        assert!(passes(&expect("{ count: '>= 2' }"), &ok));
        assert!(!passes(&expect("{ count: '>= 14' }"), &ok));
        assert!(passes(&expect("{ any: { name: w2 } }"), &ok));
        assert!(passes(&expect("{ none: { name: w3 } }"), &ok));
    }

    #[test]
    fn mismatched_units_fail_with_a_reason() {
        let outcome =
            expect("\"< 8GB\"").check(&Value::Duration(Duration::from_secs(1)), &NoResolver);
        assert!(!outcome.passed);
        assert!(
            outcome.detail.contains("cannot compare"),
            "{}",
            outcome.detail
        );
    }

    #[test]
    fn bad_expectations_are_rejected() {
        for bad in [
            "\">= \"",
            "\"< abc\"",
            "\"< 5m\"",
            "{ matches: '(' }",
            "[]",
            "{}",
            "\"< 8 furlongs\"",
        ] {
            let node = yaml::parse(&SourceFile::new("t", bad)).unwrap();
            let (_, errors) = from_node::<Expect>(&node);
            assert!(!errors.is_empty(), "{bad} should be rejected");
        }
    }

    #[test]
    fn deferred_operands_resolve_at_run_time() {
        struct Baseline;
        impl OperandResolver for Baseline {
            fn resolve(&self, _: &Template) -> Result<String, String> {
                Ok("100".into())
            }
        }
        let e = expect("\"<= ${steps.depth.value}\"");
        assert!(e.check(&Value::Number(90.0), &Baseline).passed);
        assert!(!e.check(&Value::Number(190.0), &Baseline).passed);
        assert_eq!(e.templates().len(), 1);
    }
}
