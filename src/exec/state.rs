//! Where runs keep their state: `<runbook dir>/.redis-move/<runbook name>/` (or
//! `--state-dir`), with `runs/<run id>/journal.json`, the reports, gate approvals, and
//! the lock that keeps two runs of one runbook apart.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::journal::{hostname, operator};
use crate::runbook::Runbook;

/// The state directory of one runbook.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state directory of `runbook`: `dir` when given, else `.redis-move/<name>`
    /// beside the runbook.
    pub fn for_runbook(runbook: &Runbook, dir: Option<&Path>) -> StateDir {
        let root = match dir {
            Some(dir) => dir.to_path_buf(),
            None => runbook
                .source
                .path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join(".redis-move")
                .join(&runbook.name),
        };
        StateDir { root }
    }

    /// A state directory at `root`.
    pub fn at(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    /// Its root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of run `id`.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.root.join("runs").join(id)
    }

    /// The journal of run `id`.
    pub fn journal(&self, id: &str) -> PathBuf {
        self.run_dir(id).join("journal.json")
    }

    /// Where approvals for gates of run `id` are dropped by `redis-move approve`.
    pub fn approvals(&self, id: &str) -> PathBuf {
        self.run_dir(id).join("approvals")
    }

    /// The lock file.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// Run ids, oldest first (ids start with their UTC start time).
    pub fn runs(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.root.join("runs"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().join("journal.json").is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// The newest run, if any.
    pub fn latest(&self) -> Option<String> {
        self.runs().pop()
    }

    /// A new run id: `YYYYMMDDTHHMMSSZ-xxxx`.
    pub fn new_run_id(&self) -> String {
        let now = jiff::Timestamp::now();
        let stamp = now.strftime("%Y%m%dT%H%M%SZ").to_string();
        let suffix = (now.subsec_nanosecond() as u32 ^ std::process::id().rotate_left(16)) & 0xffff;
        format!("{stamp}-{suffix:04x}")
    }
}

/// Who holds a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// `user@host`.
    pub operator: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// The run.
    pub run_id: String,
    /// Since when.
    pub since: jiff::Timestamp,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} by {} (pid {} on {}) since {}",
            self.run_id, self.operator, self.pid, self.host, self.since
        )
    }
}

/// The state of a lock file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockState {
    /// Nobody holds it.
    Free,
    /// A live process holds it.
    Held(LockHolder),
    /// A process that held it is gone (killed): the lock can be taken.
    Stale(LockHolder),
}

/// Lock problems.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another run holds it.
    #[error("another run of this runbook is in progress: {0}")]
    Held(LockHolder),
    /// I/O.
    #[error("lock `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A held lock; released when dropped (and by the OS when the process dies).
#[derive(Debug)]
pub struct RunLock {
    file: File,
    /// A holder that died without releasing it, if there was one.
    pub stale: Option<LockHolder>,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

fn read_holder(file: &mut File) -> Option<LockHolder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

fn open(path: &Path) -> Result<File, LockError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Takes the lock for `run_id`, or says who holds it.
pub fn acquire(path: &Path, run_id: &str) -> Result<RunLock, LockError> {
    let mut file = open(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = read_holder(&mut file).unwrap_or_else(|| LockHolder {
                operator: "unknown".into(),
                host: "unknown".into(),
                pid: 0,
                run_id: "unknown".into(),
                since: jiff::Timestamp::now(),
            });
            return Err(LockError::Held(holder));
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(LockError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    let stale = read_holder(&mut file);
    let holder = LockHolder {
        operator: operator(),
        host: hostname(),
        pid: std::process::id(),
        run_id: run_id.to_owned(),
        since: jiff::Timestamp::now(),
    };
    let io = |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    };
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    file.write_all(
        serde_json::to_string(&holder)
            .unwrap_or_default()
            .as_bytes(),
    )
    .map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(RunLock { file, stale })
}

/// Who holds the lock at `path`, without taking it.
pub fn status(path: &Path) -> Result<LockState, LockError> {
    if !path.exists() {
        return Ok(LockState::Free);
    }
    let mut file = open(path)?;
    match file.try_lock() {
        Ok(()) => {
            let holder = read_holder(&mut file);
            let _ = file.unlock();
            Ok(holder.map_or(LockState::Free, LockState::Stale))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            Ok(read_holder(&mut file).map_or(LockState::Free, LockState::Held))
        }
        Err(std::fs::TryLockError::Error(source)) => Err(LockError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Clears a stale lock. A lock held by a live process is not broken: that process is
/// still running the runbook.
pub fn break_stale(path: &Path) -> Result<LockState, LockError> {
    let state = status(path)?;
    if let LockState::Stale(_) = &state {
        let file = open(path)?;
        file.try_lock().ok();
        file.set_len(0).map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let _ = file.unlock();
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = acquire(&path, "run-1").unwrap();
        assert!(first.stale.is_none());
        match acquire(&path, "run-2") {
            Err(LockError::Held(holder)) => {
                assert_eq!(holder.run_id, "run-1");
                assert_eq!(holder.pid, std::process::id());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(status(&path).unwrap(), LockState::Held(_)));
        drop(first);
        assert_eq!(status(&path).unwrap(), LockState::Free);
        assert!(acquire(&path, "run-3").is_ok());
    }

    #[test]
    fn a_lock_left_by_a_dead_process_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let holder = LockHolder {
            operator: "ops@old".into(),
            host: "old".into(),
            pid: 999_999,
            run_id: "run-0".into(),
            since: jiff::Timestamp::now(),
        };
        std::fs::write(&path, serde_json::to_string(&holder).unwrap()).unwrap();
        assert_eq!(status(&path).unwrap(), LockState::Stale(holder.clone()));
        let lock = acquire(&path, "run-1").unwrap();
        assert_eq!(lock.stale, Some(holder));
    }

    #[test]
    fn run_ids_sort_by_time() {
        let dir = StateDir::at("/tmp/x");
        let id = dir.new_run_id();
        assert_eq!(id.len(), "20261123T141500Z-abcd".len());
        assert!(id.starts_with("20"));
    }
}
