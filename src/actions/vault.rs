//! Values a rollback must put back but no file redis-move shows may hold: a password a
//! step replaced (`CONFIG SET requirepass`, `masterauth`), a configuration value equal
//! to a secret. They are kept in `vault.json` in the run directory, readable by its
//! owner only; the journal holds a reference (`vault:<key>`), so that a rollback from a
//! fresh process restores the true value, and the journal never holds it in clear or as
//! `****`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::runner::ActionError;
use crate::redact::Redactor;

/// How a kept value is referred to.
pub const PREFIX: &str = "vault:";

/// The file, in a run directory.
pub const FILE: &str = "vault.json";

/// Writes are serialised within the process (steps may run in parallel).
static LOCK: Mutex<()> = Mutex::new(());

/// Whether a configuration parameter holds a credential, whatever its value.
pub fn sensitive_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "auth", "secret", "token", "key"]
        .iter()
        .any(|s| name.contains(s))
}

fn path_in(run_dir: &Path) -> PathBuf {
    run_dir.join(FILE)
}

fn read(run_dir: &Path) -> Result<BTreeMap<String, String>, ActionError> {
    match std::fs::read_to_string(path_in(run_dir)) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| ActionError::config(format!("{FILE} cannot be read: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(ActionError::config(format!("{FILE} cannot be read: {e}"))),
    }
}

/// Keeps `value` under `key` and returns the reference to journal instead of it. An
/// empty value is nothing to hide and comes back as it is.
pub fn keep(run_dir: &Path, key: &str, value: &str) -> Result<String, ActionError> {
    if value.is_empty() {
        return Ok(String::new());
    }
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut kept = read(run_dir)?;
    kept.insert(key.to_owned(), value.to_owned());
    let text = serde_json::to_string_pretty(&kept).unwrap_or_default();
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(run_dir)?;
        // A temporary file is created readable by its owner only (0600).
        let mut temp = tempfile::NamedTempFile::new_in(run_dir)?;
        temp.write_all(text.as_bytes())?;
        temp.as_file().sync_all()?;
        temp.persist(path_in(run_dir)).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|e| ActionError::config(format!("cannot write {FILE}: {e}")))?;
    Ok(format!("{PREFIX}{key}"))
}

/// Keeps `value` when it is a credential (`sensitive`) or holds a known secret;
/// otherwise returns it as it is.
pub fn keep_if_secret(
    run_dir: &Path,
    redactor: &Redactor,
    key: &str,
    value: &str,
    sensitive: bool,
) -> Result<String, ActionError> {
    if sensitive || redactor.redact(value) != value {
        keep(run_dir, key, value)
    } else {
        Ok(value.to_owned())
    }
}

/// The true value of `text`: what the vault keeps when it is a reference, else itself.
pub fn reveal(run_dir: &Path, text: &str) -> Result<String, ActionError> {
    let Some(key) = text.strip_prefix(PREFIX) else {
        return Ok(text.to_owned());
    };
    read(run_dir)?.remove(key).ok_or_else(|| {
        ActionError::config(format!(
            "the value kept as `{text}` is not in {} (was the run directory copied without it?)",
            path_in(run_dir).display()
        ))
    })
}

/// Settings (name, value) with every credential or secret-holding value kept.
pub fn keep_settings(
    run_dir: &Path,
    redactor: &Redactor,
    prefix: &str,
    settings: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, ActionError> {
    settings
        .into_iter()
        .map(|(name, value)| {
            let key = format!("{prefix}/{name}");
            let kept = keep_if_secret(run_dir, redactor, &key, &value, sensitive_parameter(&name))?;
            Ok((name, kept))
        })
        .collect()
}

/// Settings with every kept value revealed.
pub fn reveal_settings(
    run_dir: &Path,
    settings: &[(String, String)],
) -> Result<Vec<(String, String)>, ActionError> {
    settings
        .iter()
        .map(|(name, value)| Ok((name.clone(), reveal(run_dir, value)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_values_come_back_and_only_their_owner_can_read_them() {
        let dir = tempfile::tempdir().unwrap();
        let reference = keep(dir.path(), "promote/masterauth", "s3cret-pw").unwrap();
        assert_eq!(reference, "vault:promote/masterauth");
        assert_eq!(reveal(dir.path(), &reference).unwrap(), "s3cret-pw");
        assert_eq!(reveal(dir.path(), "plain").unwrap(), "plain");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut redactor = Redactor::default();
        redactor.add("declared-secret");
        let settings = keep_settings(
            dir.path(),
            &redactor,
            "replicate/target",
            vec![
                ("masterauth".into(), "s3cret-pw".into()),
                ("repl-diskless-load".into(), "disabled".into()),
                ("masteruser".into(), "declared-secret".into()),
            ],
        )
        .unwrap();
        assert_eq!(settings[0].1, "vault:replicate/target/masterauth");
        assert_eq!(settings[1].1, "disabled");
        assert_eq!(settings[2].1, "vault:replicate/target/masteruser");
        let revealed = reveal_settings(dir.path(), &settings).unwrap();
        assert_eq!(revealed[2].1, "declared-secret");
        assert!(reveal(dir.path(), "vault:nope").is_err());
    }
}
