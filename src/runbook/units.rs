//! Quantities with units as runbooks write them: Redis-style sizes (`8gb`), durations
//! (`600ms`, `1h30m`), timestamps (`2026-01-09`), ratios (`10x`), percentages, and the
//! comparison operators of `expect`.
//!
//! Sizes follow Redis's own convention (see `redis.conf`): `1k` = 1000 bytes, `1kb` =
//! 1024, `1m` = 10^6, `1mb` = 2^20, `1g` = 10^9, `1gb` = 2^30, case-insensitive; `KiB`,
//! `MiB`, `GiB`, `TiB` are accepted too. Runbooks compare against Redis's own figures
//! (`used_memory`, `maxmemory 8gb`), so `< 8GB` means what Redis means by it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum CompareOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CompareOp {
    /// Splits a leading operator off `text`: `">= 14"` -> (`Ge`, `"14"`).
    pub fn split(text: &str) -> Option<(CompareOp, &str)> {
        let text = text.trim_start();
        for (symbol, op) in [
            ("==", CompareOp::Eq),
            ("!=", CompareOp::Ne),
            ("<=", CompareOp::Le),
            (">=", CompareOp::Ge),
            ("<", CompareOp::Lt),
            (">", CompareOp::Gt),
            ("=", CompareOp::Eq),
        ] {
            if let Some(rest) = text.strip_prefix(symbol) {
                return Some((op, rest.trim()));
            }
        }
        None
    }

    /// Whether the operator orders values (as opposed to testing equality).
    pub fn is_ordering(self) -> bool {
        !matches!(self, CompareOp::Eq | CompareOp::Ne)
    }

    /// Applies the operator to an ordering of `value` against the operand.
    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CompareOp::Eq => ordering == Equal,
            CompareOp::Ne => ordering != Equal,
            CompareOp::Lt => ordering == Less,
            CompareOp::Le => ordering != Greater,
            CompareOp::Gt => ordering == Greater,
            CompareOp::Ge => ordering != Less,
        }
    }

    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// A value to compare against, with its unit.
#[derive(Clone, Debug, PartialEq)]
pub enum Quantity {
    /// A plain number (`14`, `0.5`, `60%` = 0.6).
    Number(f64),
    /// A size in bytes (`8GB`).
    Size(f64),
    /// A duration (`600ms`).
    Duration(Duration),
    /// A point in time (`2026-01-09`, `2026-01-09T10:00:00Z`), UTC unless an offset is given.
    Timestamp(jiff::Timestamp),
    /// A multiple of a baseline (`10x`), for rate triggers.
    Ratio(f64),
    /// Anything else, compared as text (`PONG`).
    Text(String),
}

impl Quantity {
    /// What kind of quantity this is, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Quantity::Number(_) => "a number",
            Quantity::Size(_) => "a size",
            Quantity::Duration(_) => "a duration",
            Quantity::Timestamp(_) => "a timestamp",
            Quantity::Ratio(_) => "a ratio",
            Quantity::Text(_) => "text",
        }
    }

    /// Reads an operand. Text that looks like a number with a unit but whose unit is
    /// unknown or ambiguous is an error, not text: `< 8GiBs` must not silently compare
    /// strings.
    pub fn parse(text: &str) -> Result<Quantity, UnitError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Quantity::Text(String::new()));
        }
        if let Ok(n) = text.parse::<f64>()
            && n.is_finite()
        {
            return Ok(Quantity::Number(n));
        }
        if looks_like_date(text) {
            return parse_timestamp(text).map(Quantity::Timestamp);
        }
        let Some((number, unit)) = split_number(text) else {
            return Ok(Quantity::Text(text.to_owned()));
        };
        let unit_lower = unit.to_ascii_lowercase();
        match unit_lower.as_str() {
            "x" => return Ok(Quantity::Ratio(number)),
            "%" => return Ok(Quantity::Number(number / 100.0)),
            "m" => {
                return Err(UnitError::new(
                    text,
                    "`m` is ambiguous: write `min` for minutes or `mb`/`MB` for megabytes",
                ));
            }
            _ => {}
        }
        if let Some(multiplier) = size_multiplier(&unit_lower) {
            return Ok(Quantity::Size(number * multiplier));
        }
        if unit
            .chars()
            .all(|c| c.is_alphabetic() || c == ' ' || c.is_ascii_digit() || c == '.')
        {
            return parse_duration(text)
                .map(Quantity::Duration)
                .map_err(|_| UnitError::new(text, &format!("unknown unit `{unit}`; {UNIT_HELP}")));
        }
        Err(UnitError::new(
            text,
            &format!("unknown unit `{unit}`; {UNIT_HELP}"),
        ))
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quantity::Number(n) => write!(f, "{}", format_number(*n)),
            Quantity::Size(bytes) => f.write_str(&format_size(*bytes)),
            Quantity::Duration(d) => f.write_str(&format_duration(*d)),
            Quantity::Timestamp(t) => write!(f, "{t}"),
            Quantity::Ratio(r) => write!(f, "{}x", format_number(*r)),
            Quantity::Text(s) => f.write_str(s),
        }
    }
}

const UNIT_HELP: &str = "sizes: b, k, kb, mb, g, gb, KiB, MiB, GiB; durations: ms, s, min, h, d";

/// A unit or number that could not be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("`{text}`: {reason}")]
pub struct UnitError {
    /// The text as written.
    pub text: String,
    /// Why it could not be read.
    pub reason: String,
}

impl UnitError {
    fn new(text: &str, reason: &str) -> Self {
        UnitError {
            text: text.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

fn split_number(text: &str) -> Option<(f64, &str)> {
    let end = text
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*i == 0 && (*c == '-' || *c == '+'))))
        .map(|(i, _)| i)?;
    if end == 0 {
        return None;
    }
    let number = text[..end].parse::<f64>().ok()?;
    Some((number, text[end..].trim()))
}

fn size_multiplier(unit: &str) -> Option<f64> {
    const KIB: f64 = 1024.0;
    Some(match unit {
        "b" => 1.0,
        "k" => 1e3,
        "kb" | "kib" => KIB,
        "mb" | "mib" => KIB * KIB,
        "g" => 1e9,
        "gb" | "gib" => KIB * KIB * KIB,
        "t" => 1e12,
        "tb" | "tib" => KIB * KIB * KIB * KIB,
        _ => return None,
    })
}

/// Reads a size such as `8gb` into bytes (Redis convention, see the module docs).
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let trimmed = text.trim();
    if let Ok(bytes) = trimmed.parse::<u64>() {
        return Ok(bytes);
    }
    let (number, unit) = split_number(trimmed)
        .ok_or_else(|| UnitError::new(text, "expected a size such as `8gb` or `512mb`"))?;
    let unit = unit.to_ascii_lowercase();
    let multiplier = if unit == "m" {
        1e6
    } else {
        size_multiplier(&unit).ok_or_else(|| {
            UnitError::new(
                text,
                "unknown size unit; use b, k, kb, m, mb, g, gb, KiB, MiB, GiB",
            )
        })?
    };
    if number < 0.0 {
        return Err(UnitError::new(text, "a size cannot be negative"));
    }
    Ok((number * multiplier).round() as u64)
}

/// Reads a duration such as `600ms`, `30s`, `5min`, `1h30m` or `1h 30m`. In a duration,
/// `m` means minutes.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let original = text;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(UnitError::new(
            original,
            "expected a duration such as `30s`",
        ));
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let (number, after) = split_number(rest).ok_or_else(|| {
            UnitError::new(
                original,
                "expected a duration such as `30s`, `600ms` or `1h30m`",
            )
        })?;
        if number < 0.0 {
            return Err(UnitError::new(original, "a duration cannot be negative"));
        }
        let unit_len = after
            .find(|c: char| !c.is_alphabetic() && c != 'µ')
            .unwrap_or(after.len());
        let unit = &after[..unit_len];
        let seconds = match unit.to_ascii_lowercase().as_str() {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "" => {
                return Err(UnitError::new(
                    original,
                    "a duration needs a unit (`30s`, `600ms`, `5min`)",
                ));
            }
            other => {
                return Err(UnitError::new(
                    original,
                    &format!("unknown duration unit `{other}`; use ms, s, min, h or d"),
                ));
            }
        };
        total += number * seconds;
        rest = after[unit_len..].trim_start();
    }
    if !total.is_finite() || total > 1e12 {
        return Err(UnitError::new(original, "duration out of range"));
    }
    Ok(Duration::from_secs_f64(total))
}

fn looks_like_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
}

/// Reads `2026-01-09`, `2026-01-09T10:00:00`, `2026-01-09 10:00` (UTC) or RFC 3339 with
/// an offset.
pub fn parse_timestamp(text: &str) -> Result<jiff::Timestamp, UnitError> {
    let text = text.trim();
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Ok(ts);
    }
    if let Ok(dt) = text.parse::<jiff::civil::DateTime>() {
        return jiff::tz::TimeZone::UTC
            .to_timestamp(dt)
            .map_err(|e| UnitError::new(text, &e.to_string()));
    }
    if let Ok(date) = text.parse::<jiff::civil::Date>() {
        return jiff::tz::TimeZone::UTC
            .to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
            .map_err(|e| UnitError::new(text, &e.to_string()));
    }
    Err(UnitError::new(
        text,
        "expected a date (`2026-01-09`) or a time (`2026-01-09T10:00:00Z`)",
    ))
}

/// Formats a number without a trailing `.0`.
pub fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// Formats bytes the way Redis's `*_human` fields do (binary multiples).
pub fn format_size(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{} B", format_number(value))
    } else {
        format!("{:.2} {}", value, UNITS[unit]).replace(".00 ", " ")
    }
}

/// Formats a duration compactly: `600ms`, `30s`, `1h30m`.
pub fn format_duration(d: Duration) -> String {
    let total_ms = d.as_millis();
    if total_ms == 0 && !d.is_zero() {
        return format!("{}us", d.as_micros());
    }
    if total_ms < 1000 {
        return format!("{total_ms}ms");
    }
    if !total_ms.is_multiple_of(1000) && total_ms < 60_000 {
        return format!("{}s", format_number(d.as_secs_f64()));
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// How long something took, for people: milliseconds under a second, tenths of a
/// second under a minute, whole seconds above (`8.0s`, `1m20s`).
pub fn format_elapsed(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format_duration(Duration::from_millis(d.as_millis() as u64));
    }
    if d < Duration::from_secs(60) {
        return format!("{:.1}s", d.as_secs_f64());
    }
    format_duration(Duration::from_secs(d.as_secs()))
}

/// A duration field in a runbook (`every: 5s`), shown and serialized as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunbookDuration(pub Duration);

impl FromStr for RunbookDuration {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, UnitError> {
        parse_duration(s).map(RunbookDuration)
    }
}

impl fmt::Display for RunbookDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for RunbookDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::de::deserialize_parsed(d, "a duration such as `30s`", str::parse)
    }
}

impl Serialize for RunbookDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl schemars::JsonSchema for RunbookDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration: `600ms`, `30s`, `5min`, `1h30m`, `2d`.",
            "pattern": "^\\s*([0-9]+(\\.[0-9]+)?\\s*[a-zA-Zµ]+\\s*)+$"
        })
    }
}

/// A share written as a percentage (`2%`, `0.5%`), as a fraction from 0 to 1.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Percent(pub f64);

impl FromStr for Percent {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, UnitError> {
        let number = s
            .trim()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .filter(|n| n.is_finite() && (0.0..=100.0).contains(n))
            .ok_or_else(|| UnitError::new(s, "a percentage from 0% to 100%, such as `2%`"))?;
        Ok(Percent(number / 100.0))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0 * 100.0)
    }
}

impl Percent {
    /// How many of `total` this share allows (rounded up, so that 1% of 10 is 1).
    pub fn of(self, total: u64) -> u64 {
        (self.0 * total as f64).ceil() as u64
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::de::deserialize_parsed(d, "a percentage such as `2%`", str::parse)
    }
}

impl schemars::JsonSchema for Percent {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Percent".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A percentage from 0% to 100%: `2%`, `0.5%`.",
            "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*%\\s*$"
        })
    }
}

/// A size field in a runbook (`maxmemory: 8gb`), in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunbookSize(pub u64);

impl<'de> Deserialize<'de> for RunbookSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::de::deserialize_parsed(d, "a size such as `8gb`", |t| {
            parse_size(t).map(RunbookSize)
        })
    }
}

impl Serialize for RunbookSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl schemars::JsonSchema for RunbookSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["string", "integer"],
            "description": "A size, Redis convention: `1k`=1000, `1kb`=1024, `8gb`=8 GiB, or KiB/MiB/GiB."
        })
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn percentages() {
        assert_eq!("2%".parse::<Percent>().unwrap(), Percent(0.02));
        assert_eq!(" 0.5 % ".parse::<Percent>().unwrap().of(1000), 5);
        assert_eq!("1%".parse::<Percent>().unwrap().of(10), 1);
        assert_eq!("0%".parse::<Percent>().unwrap().of(10_000), 0);
        assert!("2".parse::<Percent>().is_err());
        assert!("101%".parse::<Percent>().is_err());
        assert!("-1%".parse::<Percent>().is_err());
    }
    use super::*;

    #[test]
    fn sizes_follow_redis() {
        assert_eq!(parse_size("1k").unwrap(), 1000);
        assert_eq!(parse_size("1kb").unwrap(), 1024);
        assert_eq!(parse_size("1m").unwrap(), 1_000_000);
        assert_eq!(parse_size("1mb").unwrap(), 1 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("8GB").unwrap(), 8 << 30);
        assert_eq!(parse_size("8gb").unwrap(), 8 << 30);
        assert_eq!(parse_size("7GiB").unwrap(), 7 << 30);
        assert_eq!(parse_size("1.5mb").unwrap(), 1_572_864);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("8 furlongs").is_err());
        assert!(parse_size("-1gb").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("600ms").unwrap(), Duration::from_millis(600));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5min").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("30").is_err(), "a unit is required");
        assert!(parse_duration("30 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn quantities() {
        assert_eq!(Quantity::parse("14").unwrap(), Quantity::Number(14.0));
        assert_eq!(
            Quantity::parse("8GB").unwrap(),
            Quantity::Size(8.0 * 1024.0 * 1024.0 * 1024.0)
        );
        assert_eq!(Quantity::parse("7g").unwrap(), Quantity::Size(7e9));
        assert_eq!(
            Quantity::parse("600ms").unwrap(),
            Quantity::Duration(Duration::from_millis(600))
        );
        assert_eq!(Quantity::parse("10x").unwrap(), Quantity::Ratio(10.0));
        assert_eq!(Quantity::parse("60%").unwrap(), Quantity::Number(0.6));
        assert_eq!(
            Quantity::parse("PONG").unwrap(),
            Quantity::Text("PONG".into())
        );
        assert_eq!(
            Quantity::parse("2026-01-09").unwrap(),
            Quantity::Timestamp("2026-01-09T00:00:00Z".parse().unwrap())
        );
        assert!(Quantity::parse("2026-13-45").is_err());
        assert!(Quantity::parse("5m").is_err(), "minutes or megabytes?");
        assert!(Quantity::parse("8 GiBs").is_err());
    }

    #[test]
    fn operators() {
        assert_eq!(CompareOp::split(">= 14"), Some((CompareOp::Ge, "14")));
        assert_eq!(CompareOp::split("<8GB"), Some((CompareOp::Lt, "8GB")));
        assert_eq!(CompareOp::split("== PONG"), Some((CompareOp::Eq, "PONG")));
        assert_eq!(CompareOp::split("PONG"), None);
        assert!(CompareOp::Ge.holds(std::cmp::Ordering::Equal));
        assert!(!CompareOp::Gt.holds(std::cmp::Ordering::Equal));
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(Duration::from_millis(600)), "600ms");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_size(8.0 * 1024.0 * 1024.0 * 1024.0), "8 GiB");
        assert_eq!(format_size(512.0), "512 B");
    }
}
