//! Keeping secrets out of everything redis-move writes.
//!
//! Two layers: secret *values* known at run time are replaced wherever they appear
//! ([`Redactor`]), and passwords written into URLs (`redis://:pw@host`) are masked even
//! when they were not declared as secrets ([`mask_url_passwords`]).

use std::io::Write;
use std::sync::{LazyLock, RwLock};

use regex::Regex;

/// What a secret is replaced with.
pub const MASK: &str = "****";

// The password runs to the last `@` before the host: a literal password may hold `@`.
static URL_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<password>[^\s/]+)@")
        .expect("valid regex")
});

// A password passed as a query parameter of a URL (`?password=...`, `&pass=...`).
static QUERY_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?P<head>[?&](?:password|passwd|pass|pwd|auth|token|secret)=)(?P<password>[^&\s#]+)",
    )
    .expect("valid regex")
});

/// Secrets shorter than this are masked only where they stand alone (not inside a
/// word): masking a one-letter password everywhere would garble every line.
const SHORT_SECRET: usize = 4;

/// Replaces the password of every `scheme://user:password@host` in `text` with `****`.
/// A reference (`${secrets.pw}`) is not a password and stays: it is how the journal
/// keeps a var that needs a secret, so that a resume gets it from the environment.
pub fn mask_url_passwords(text: &str) -> String {
    if !text.contains("://") {
        return text.to_owned();
    }
    let text = &QUERY_PASSWORD
        .replace_all(text, |caps: &regex::Captures<'_>| {
            if caps["password"].starts_with("${") {
                caps[0].to_owned()
            } else {
                format!("{}{MASK}", &caps["head"])
            }
        })
        .into_owned();
    URL_PASSWORD
        .replace_all(text, |caps: &regex::Captures<'_>| {
            if caps["password"].starts_with("${") {
                caps[0].to_owned()
            } else {
                format!("{}{MASK}@", &caps["head"])
            }
        })
        .into_owned()
}

/// `text` with `secret` masked where it is not part of a longer word.
fn replace_standalone(text: &str, secret: &str) -> String {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(secret) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + secret.len()..].chars().next();
        out.push_str(&rest[..at]);
        if before.is_some_and(word) || after.is_some_and(word) {
            out.push_str(secret);
        } else {
            out.push_str(MASK);
        }
        rest = &rest[at + secret.len()..];
    }
    out.push_str(rest);
    out
}

/// `%XX` sequences decoded (invalid ones kept as they are).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Replaces known secret values in text.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Remembers a secret value; empty values are ignored (they would match everywhere).
    pub fn add(&mut self, secret: &str) {
        if !secret.is_empty() && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_owned());
            // Longest first, so that a secret containing another is masked whole.
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// Remembers the passwords written literally in the URLs of `text` (and their
    /// percent-decoded form): redis-move hands them to servers (`masterauth`), which
    /// may show them back outside a URL. References (`${secrets.x}`) are left to the
    /// secrets they name.
    pub fn add_url_passwords(&mut self, text: &str) {
        let found: Vec<String> = URL_PASSWORD
            .captures_iter(text)
            .chain(QUERY_PASSWORD.captures_iter(text))
            .map(|caps| caps["password"].to_owned())
            .filter(|p| !p.contains("${"))
            .collect();
        for password in found {
            let decoded = percent_decode(&password);
            self.add(&password);
            self.add(&decoded);
        }
    }

    /// `text` with every known secret and every URL password masked.
    pub fn redact(&self, text: &str) -> String {
        let mut out = mask_url_passwords(text);
        for secret in &self.secrets {
            if !out.contains(secret.as_str()) {
                continue;
            }
            out = if secret.chars().count() < SHORT_SECRET {
                replace_standalone(&out, secret)
            } else {
                out.replace(secret.as_str(), MASK)
            };
        }
        out
    }

    /// A JSON document with every string value (never a key, a number or a literal)
    /// redacted: masking the text would rename fields whose names contain a secret
    /// and break the document.
    pub fn redact_json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value as J;
        match value {
            J::String(s) => J::String(self.redact(s)),
            J::Array(items) => J::Array(items.iter().map(|v| self.redact_json(v)).collect()),
            J::Object(fields) => J::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), self.redact_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// Every secret this process has learnt of, for the sinks that write output
/// (stdout, stderr, logs of every crate, reports, plan files).
static SINK: LazyLock<RwLock<Redactor>> = LazyLock::new(|| RwLock::new(Redactor::default()));

/// Teaches the output sinks `redactor`'s secrets (they keep those they knew).
pub fn remember(redactor: &Redactor) {
    let mut sink = SINK.write().unwrap_or_else(|p| p.into_inner());
    for secret in &redactor.secrets {
        sink.add(secret);
    }
}

/// `text` with every secret the process knows, and every URL password, masked: what
/// every byte redis-move writes passes through.
pub fn at_sink(text: &str) -> String {
    SINK.read().unwrap_or_else(|p| p.into_inner()).redact(text)
}

/// [`at_sink`] for a JSON value: string values only, the structure kept.
pub fn at_sink_value(value: &serde_json::Value) -> serde_json::Value {
    SINK.read()
        .unwrap_or_else(|p| p.into_inner())
        .redact_json(value)
}

/// [`at_sink`] for a JSON document: string values only, the structure kept.
pub fn at_sink_json(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => {
            let redacted = SINK
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .redact_json(&value);
            if redacted == value {
                return text.to_owned();
            }
            let mut out = serde_json::to_string_pretty(&redacted).unwrap_or_default();
            if text.ends_with('\n') {
                out.push('\n');
            }
            out
        }
        Err(_) => at_sink(text),
    }
}

/// A writer for log records (ours and third-party crates'): each record is redacted
/// as a whole, then written to stderr.
#[derive(Default)]
pub struct RedactingStderr {
    buffer: Vec<u8>,
}

impl Write for RedactingStderr {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let text = at_sink(&String::from_utf8_lossy(&self.buffer));
        self.buffer.clear();
        let mut stderr = std::io::stderr().lock();
        stderr.write_all(text.as_bytes())?;
        stderr.flush()
    }
}

impl Drop for RedactingStderr {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sink_masks_what_any_redactor_of_the_process_learnt() {
        let mut learnt = super::Redactor::default();
        learnt.add("Sink-Canary-9191");
        super::remember(&learnt);
        assert_eq!(
            super::at_sink("token Sink-Canary-9191 and redis://:pw@h:1"),
            "token **** and redis://:****@h:1"
        );
    }

    #[test]
    fn a_password_in_a_query_parameter_is_masked() {
        assert_eq!(
            super::mask_url_passwords("redis://127.0.0.1:7804/?password=Qp-77&db=1"),
            "redis://127.0.0.1:7804/?password=****&db=1"
        );
        let mut redactor = super::Redactor::default();
        redactor.add_url_passwords("rediss://h:1/?password=Qp-77");
        assert_eq!(redactor.redact("AUTH Qp-77"), "AUTH ****");
    }

    #[test]
    fn a_password_with_an_at_sign_is_masked_whole_and_short_ones_only_alone() {
        assert_eq!(
            super::mask_url_passwords("redis://:p@ss@127.0.0.1:7803/0"),
            "redis://:****@127.0.0.1:7803/0"
        );
        let mut redactor = super::Redactor::default();
        redactor.add_url_passwords("redis://:p@ss@127.0.0.1:7803");
        assert_eq!(redactor.redact("expect p@ss here"), "expect **** here");
        let mut short = super::Redactor::default();
        short.add("p");
        short.add("true");
        assert_eq!(
            short.redact("expect http://x p and p."),
            "expect http://x **** and ****."
        );
        // A JSON document keeps its keys and literals.
        let json: serde_json::Value =
            serde_json::from_str(r#"{"path": "p", "ok": true, "note": "is true"}"#).unwrap();
        assert_eq!(
            short.redact_json(&json).to_string(),
            r#"{"path":"****","ok":true,"note":"is ****"}"#
        );
    }

    #[test]
    fn literal_url_passwords_are_masked_anywhere_once_known() {
        let mut redactor = super::Redactor::default();
        redactor.add_url_passwords(
            "redis://:p%40ss%25w0rd%3ASECRET@h:1 and redis://:${secrets.pw}@h:2",
        );
        assert_eq!(
            redactor.redact("masterauth p@ss%w0rd:SECRET and p%40ss%25w0rd%3ASECRET"),
            "masterauth **** and ****"
        );
        assert_eq!(redactor.redact("${secrets.pw}"), "${secrets.pw}");
    }

    use super::*;

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            mask_url_passwords("REDIS_URL=redis://:s3cret@10.0.0.1:6379/0"),
            "REDIS_URL=redis://:****@10.0.0.1:6379/0"
        );
        assert_eq!(
            mask_url_passwords("rediss://default:abc123xyz@host:6379 and redis://host:6379"),
            "rediss://default:****@host:6379 and redis://host:6379"
        );
        assert_eq!(
            mask_url_passwords("http://host:8080/path"),
            "http://host:8080/path"
        );
    }

    #[test]
    fn known_secrets_are_masked_everywhere() {
        let mut redactor = Redactor::default();
        redactor.add("hunter2");
        redactor.add("");
        assert_eq!(
            redactor.redact("AUTH hunter2\nrequirepass hunter2"),
            "AUTH ****\nrequirepass ****"
        );
    }
}
