//! The ledger of one `redis.copy` step: an append-only binary file in the run directory
//! that records, before each batch is written, which keys it is about to create
//! (intent), then which it did create, every key it overwrote with the value it had
//! (so a rollback puts it back), the temporary keys of chunked copies, and checkpoints
//! of the SCAN cursor with the counters. A killed copy resumes from the last
//! checkpoint; a rollback deletes exactly the keys the copy created.
//!
//! Records are `tag: u8, length: u32 LE, payload`; a torn last record (the process
//! was killed mid-write) is ignored and cut off before appending.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::backend::BackendError;

const INTENT: u8 = b'I';
const CREATED: u8 = b'C';
const REPLACED: u8 = b'R';
const MERGED: u8 = b'M';
const TEMPORARY: u8 = b'T';
const CHECKPOINT: u8 = b'K';
const FINISHED: u8 = b'E';
const MAGIC: &[u8; 8] = b"RMCOPY01";

/// A key on the target and the source key it comes from.
type KeyPair = (Vec<u8>, Vec<u8>);

/// What a copy counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Keys written to the target.
    pub copied: u64,
    /// Keys that already existed on the target and were left alone.
    pub skipped: u64,
    /// Keys that existed on the target and were overwritten (their value is kept here).
    pub replaced: u64,
    /// Keys that vanished or expired between SCAN and the write.
    pub vanished: u64,
    /// Keys above the chunk threshold, copied in chunks.
    pub chunked: u64,
    /// Bytes of values moved.
    pub bytes: u64,
    /// Keys that existed on the target and had the source's content merged in (their
    /// value before is kept here).
    pub merged: u64,
}

impl Counters {
    /// Adds `other` to these counters.
    pub fn add(&mut self, other: &Counters) {
        self.copied += other.copied;
        self.skipped += other.skipped;
        self.replaced += other.replaced;
        self.vanished += other.vanished;
        self.chunked += other.chunked;
        self.bytes += other.bytes;
        self.merged += other.merged;
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for n in [
            self.copied,
            self.skipped,
            self.replaced,
            self.vanished,
            self.chunked,
            self.bytes,
            self.merged,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
    }

    fn decode(input: &mut &[u8]) -> Option<Counters> {
        Some(Counters {
            copied: take_u64(input)?,
            skipped: take_u64(input)?,
            replaced: take_u64(input)?,
            vanished: take_u64(input)?,
            chunked: take_u64(input)?,
            bytes: take_u64(input)?,
            merged: take_u64(input)?,
        })
    }
}

/// The last checkpoint: every batch up to `seq` is done, the scan continues at `cursor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last batch done, with all batches before it.
    pub seq: u64,
    /// The SCAN cursor after that batch (0: the scan is complete).
    pub cursor: u64,
    /// Counters up to that batch.
    pub counters: Counters,
}

/// A key the copy overwrote, with what it held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replaced {
    /// The key on the target.
    pub key: Vec<u8>,
    /// Its DUMP before the copy.
    pub payload: Vec<u8>,
    /// Its TTL in milliseconds then (0: none).
    pub ttl_ms: u64,
}

/// One change to undo, in the order they were made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The copy created this key.
    Created(Vec<u8>),
    /// The copy may have created this key (the process stopped before the reply
    /// came), from this source key.
    Unconfirmed {
        /// The key on the target.
        key: Vec<u8>,
        /// The key it was copied from.
        source_key: Vec<u8>,
    },
    /// The copy overwrote this key.
    Replaced(Replaced),
    /// The copy merged this source key into an existing key (its value before kept).
    Merged {
        /// The target key as it was.
        before: Replaced,
        /// The source key merged in.
        source_key: Vec<u8>,
    },
    /// A temporary key of a chunked copy.
    Temporary(Vec<u8>),
}

/// What a ledger holds, read back.
#[derive(Debug, Default)]
pub struct LedgerState {
    /// The last checkpoint.
    pub checkpoint: Option<Checkpoint>,
    /// Final counters, once the copy completed.
    pub finished: Option<Counters>,
    /// Changes, oldest first.
    pub changes: Vec<Change>,
    /// Keys that batches after the checkpoint created or may have created: a resumed
    /// copy finds them on the target and must count them as its own.
    pub created_after_checkpoint: HashSet<Vec<u8>>,
    /// Of those, the ones whose creation was not confirmed.
    pub unconfirmed_after_checkpoint: HashSet<Vec<u8>>,
    /// Bytes of complete records (a torn tail is cut there).
    valid_length: u64,
}

impl LedgerState {
    /// Reads the ledger at `path` (an absent file is an empty ledger).
    pub fn read(path: &Path) -> Result<LedgerState, BackendError> {
        let mut data = Vec::new();
        match File::open(path) {
            Ok(mut file) => {
                file.read_to_end(&mut data).map_err(|e| local(path, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LedgerState::default()),
            Err(e) => return Err(local(path, e)),
        }
        if data.is_empty() {
            return Ok(LedgerState::default());
        }
        if !data.starts_with(MAGIC) {
            return Err(BackendError::Local(format!(
                "{} is not a redis-move copy ledger",
                path.display()
            )));
        }
        let mut state = LedgerState {
            valid_length: MAGIC.len() as u64,
            ..LedgerState::default()
        };
        let mut intents: BTreeMap<u64, Vec<KeyPair>> = BTreeMap::new();
        let mut confirmed: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
        let mut rest = &data[MAGIC.len()..];
        while rest.len() >= 5 {
            let tag = rest[0];
            let len = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            if rest.len() < 5 + len {
                break; // torn tail
            }
            let mut payload = &rest[5..5 + len];
            let malformed = || {
                BackendError::Local(format!(
                    "{}: malformed record at byte {}",
                    path.display(),
                    state.valid_length
                ))
            };
            match tag {
                INTENT => {
                    let seq = take_u64(&mut payload).ok_or_else(malformed)?;
                    let keys = take_keys(&mut payload).ok_or_else(malformed)?;
                    intents.insert(seq, keys);
                }
                CREATED => {
                    let seq = take_u64(&mut payload).ok_or_else(malformed)?;
                    let flags = take_bytes(&mut payload).ok_or_else(malformed)?;
                    let keys = intents.get(&seq).ok_or_else(malformed)?;
                    let created: Vec<Vec<u8>> = keys
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| flags.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
                        .map(|(_, (k, _))| k.clone())
                        .collect();
                    state
                        .changes
                        .extend(created.iter().cloned().map(Change::Created));
                    confirmed.entry(seq).or_default().extend(created);
                }
                REPLACED => {
                    let key = take_bytes(&mut payload).ok_or_else(malformed)?;
                    let ttl_ms = take_u64(&mut payload).ok_or_else(malformed)?;
                    let old = take_bytes(&mut payload).ok_or_else(malformed)?;
                    state.changes.push(Change::Replaced(Replaced {
                        key,
                        payload: old,
                        ttl_ms,
                    }));
                }
                MERGED => {
                    let key = take_bytes(&mut payload).ok_or_else(malformed)?;
                    let ttl_ms = take_u64(&mut payload).ok_or_else(malformed)?;
                    let old = take_bytes(&mut payload).ok_or_else(malformed)?;
                    let source_key = take_bytes(&mut payload).ok_or_else(malformed)?;
                    state.changes.push(Change::Merged {
                        before: Replaced {
                            key,
                            payload: old,
                            ttl_ms,
                        },
                        source_key,
                    });
                }
                TEMPORARY => {
                    let key = take_bytes(&mut payload).ok_or_else(malformed)?;
                    state.changes.push(Change::Temporary(key));
                }
                CHECKPOINT => {
                    let seq = take_u64(&mut payload).ok_or_else(malformed)?;
                    let cursor = take_u64(&mut payload).ok_or_else(malformed)?;
                    let counters = Counters::decode(&mut payload).ok_or_else(malformed)?;
                    state.checkpoint = Some(Checkpoint {
                        seq,
                        cursor,
                        counters,
                    });
                }
                FINISHED => {
                    state.finished = Some(Counters::decode(&mut payload).ok_or_else(malformed)?);
                }
                _ => return Err(malformed()),
            }
            rest = &rest[5 + len..];
            state.valid_length += 5 + len as u64;
        }
        let done = state.checkpoint.map(|c| c.seq).unwrap_or(0);
        for (seq, keys) in intents.range(done + 1..) {
            match confirmed.get(seq) {
                Some(created) => state
                    .created_after_checkpoint
                    .extend(created.iter().cloned()),
                None => {
                    for (key, _) in keys {
                        state.created_after_checkpoint.insert(key.clone());
                        state.unconfirmed_after_checkpoint.insert(key.clone());
                    }
                }
            }
        }
        // Intents never confirmed, whatever their place: possible creations to undo.
        for (seq, keys) in &intents {
            if !confirmed.contains_key(seq) {
                state
                    .changes
                    .extend(keys.iter().map(|(key, source_key)| Change::Unconfirmed {
                        key: key.clone(),
                        source_key: source_key.clone(),
                    }));
            }
        }
        Ok(state)
    }
}

/// Appends records to a ledger.
pub struct LedgerWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl LedgerWriter {
    /// Opens the ledger at `path` for appending, cutting off a torn tail `state` found.
    pub fn open(path: &Path, state: &LedgerState) -> Result<LedgerWriter, BackendError> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| local(path, e))?;
        if state.valid_length == 0 {
            file.set_len(0).map_err(|e| local(path, e))?;
            file.write_all(MAGIC).map_err(|e| local(path, e))?;
        } else {
            file.set_len(state.valid_length)
                .map_err(|e| local(path, e))?;
            file.seek(SeekFrom::End(0)).map_err(|e| local(path, e))?;
        }
        Ok(LedgerWriter {
            path: path.to_owned(),
            file: BufWriter::with_capacity(256 * 1024, file),
        })
    }

    fn record(&mut self, tag: u8, payload: &[u8]) -> Result<(), BackendError> {
        let len = u32::try_from(payload.len())
            .map_err(|_| BackendError::Local("a ledger record over 4 GiB".into()))?;
        let path = &self.path;
        self.file
            .write_all(&[tag])
            .and_then(|()| self.file.write_all(&len.to_le_bytes()))
            .and_then(|()| self.file.write_all(payload))
            .map_err(|e| local(path, e))
    }

    /// Hands what was written to the operating system, so that it survives the
    /// process being killed.
    pub fn flush(&mut self) -> Result<(), BackendError> {
        self.file.flush().map_err(|e| local(&self.path, e))
    }

    /// Flushes and syncs to disk, so that it survives the machine going down.
    pub fn sync(&mut self) -> Result<(), BackendError> {
        self.flush()?;
        self.file
            .get_ref()
            .sync_data()
            .map_err(|e| local(&self.path, e))
    }

    /// Batch `seq` is about to create these (target key, source key) pairs (flushed
    /// before the batch is sent).
    pub fn intent(&mut self, seq: u64, keys: &[(&[u8], &[u8])]) -> Result<(), BackendError> {
        let mut payload =
            Vec::with_capacity(16 + keys.iter().map(|(k, _)| k.len() + 8).sum::<usize>());
        payload.extend_from_slice(&seq.to_le_bytes());
        put_u32(&mut payload, keys.len());
        for (key, source_key) in keys {
            put_bytes(&mut payload, key);
            // The source key only when the copy renamed it.
            put_bytes(
                &mut payload,
                if source_key == key { b"" } else { source_key },
            );
        }
        self.record(INTENT, &payload)?;
        self.flush()
    }

    /// Of the keys of batch `seq`'s intent, those with `created[i]` were created.
    pub fn created(&mut self, seq: u64, created: &[bool]) -> Result<(), BackendError> {
        let mut flags = vec![0u8; created.len().div_ceil(8)];
        for (i, _) in created.iter().enumerate().filter(|(_, c)| **c) {
            flags[i / 8] |= 1 << (i % 8);
        }
        let mut payload = Vec::with_capacity(12 + flags.len());
        payload.extend_from_slice(&seq.to_le_bytes());
        put_bytes(&mut payload, &flags);
        self.record(CREATED, &payload)
    }

    /// `replaced` is about to be overwritten (synced before it is).
    pub fn replaced(&mut self, replaced: &Replaced) -> Result<(), BackendError> {
        let mut payload = Vec::with_capacity(16 + replaced.key.len() + replaced.payload.len());
        put_bytes(&mut payload, &replaced.key);
        payload.extend_from_slice(&replaced.ttl_ms.to_le_bytes());
        put_bytes(&mut payload, &replaced.payload);
        self.record(REPLACED, &payload)?;
        self.sync()
    }

    /// `source_key` is about to be merged into `before.key` (synced before it is).
    pub fn merged(&mut self, before: &Replaced, source_key: &[u8]) -> Result<(), BackendError> {
        let mut payload =
            Vec::with_capacity(24 + before.key.len() + before.payload.len() + source_key.len());
        put_bytes(&mut payload, &before.key);
        payload.extend_from_slice(&before.ttl_ms.to_le_bytes());
        put_bytes(&mut payload, &before.payload);
        put_bytes(&mut payload, source_key);
        self.record(MERGED, &payload)?;
        self.sync()
    }

    /// A temporary key is about to be written (flushed before it is).
    pub fn temporary(&mut self, key: &[u8]) -> Result<(), BackendError> {
        let mut payload = Vec::new();
        put_bytes(&mut payload, key);
        self.record(TEMPORARY, &payload)?;
        self.flush()
    }

    /// Every batch up to `checkpoint.seq` is done (synced).
    pub fn checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), BackendError> {
        let mut payload = Vec::with_capacity(64);
        payload.extend_from_slice(&checkpoint.seq.to_le_bytes());
        payload.extend_from_slice(&checkpoint.cursor.to_le_bytes());
        checkpoint.counters.encode(&mut payload);
        self.record(CHECKPOINT, &payload)?;
        self.sync()
    }

    /// The copy is complete (synced).
    pub fn finished(&mut self, counters: &Counters) -> Result<(), BackendError> {
        let mut payload = Vec::with_capacity(48);
        counters.encode(&mut payload);
        self.record(FINISHED, &payload)?;
        self.sync()
    }
}

fn local(path: &Path, e: std::io::Error) -> BackendError {
    BackendError::Local(format!("copy ledger {}: {e}", path.display()))
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn take_u64(input: &mut &[u8]) -> Option<u64> {
    let (head, rest) = input.split_first_chunk::<8>()?;
    *input = rest;
    Some(u64::from_le_bytes(*head))
}

fn take_u32(input: &mut &[u8]) -> Option<usize> {
    let (head, rest) = input.split_first_chunk::<4>()?;
    *input = rest;
    Some(u32::from_le_bytes(*head) as usize)
}

fn take_bytes(input: &mut &[u8]) -> Option<Vec<u8>> {
    let len = take_u32(input)?;
    if input.len() < len {
        return None;
    }
    let (bytes, rest) = input.split_at(len);
    *input = rest;
    Some(bytes.to_vec())
}

fn take_keys(input: &mut &[u8]) -> Option<Vec<KeyPair>> {
    let count = take_u32(input)?;
    (0..count)
        .map(|_| {
            let key = take_bytes(input)?;
            let source_key = take_bytes(input)?;
            let source_key = if source_key.is_empty() {
                key.clone()
            } else {
                source_key
            };
            Some((key, source_key))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<Vec<u8>> {
        names.iter().map(|n| n.as_bytes().to_vec()).collect()
    }

    fn refs(keys: &[Vec<u8>]) -> Vec<(&[u8], &[u8])> {
        keys.iter().map(|k| (k.as_slice(), k.as_slice())).collect()
    }

    #[test]
    fn records_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.ledger");
        let mut writer = LedgerWriter::open(&path, &LedgerState::default()).unwrap();
        let batch1 = keys(&["a", "b\0bin", "c"]);
        writer.intent(1, &refs(&batch1)).unwrap();
        writer.created(1, &[true, true, false]).unwrap();
        let counters = Counters {
            copied: 2,
            skipped: 1,
            ..Counters::default()
        };
        writer
            .checkpoint(&Checkpoint {
                seq: 1,
                cursor: 17,
                counters,
            })
            .unwrap();
        let batch2 = keys(&["d", "e"]);
        writer.intent(2, &refs(&batch2)).unwrap();
        writer
            .replaced(&Replaced {
                key: b"e".to_vec(),
                payload: b"old".to_vec(),
                ttl_ms: 500,
            })
            .unwrap();
        writer.created(2, &[true, false]).unwrap();
        writer
            .intent(3, &[(b"step:f".as_slice(), b"job:f".as_slice())])
            .unwrap();
        writer.flush().unwrap();
        drop(writer);

        let state = LedgerState::read(&path).unwrap();
        assert_eq!(
            state.checkpoint,
            Some(Checkpoint {
                seq: 1,
                cursor: 17,
                counters
            })
        );
        assert_eq!(state.finished, None);
        assert_eq!(
            state.changes,
            vec![
                Change::Created(b"a".to_vec()),
                Change::Created(b"b\0bin".to_vec()),
                Change::Replaced(Replaced {
                    key: b"e".to_vec(),
                    payload: b"old".to_vec(),
                    ttl_ms: 500
                }),
                Change::Created(b"d".to_vec()),
                Change::Unconfirmed {
                    key: b"step:f".to_vec(),
                    source_key: b"job:f".to_vec()
                },
            ]
        );
        let after: HashSet<Vec<u8>> = keys(&["d", "step:f"]).into_iter().collect();
        assert_eq!(state.created_after_checkpoint, after);
        assert_eq!(
            state.unconfirmed_after_checkpoint,
            keys(&["step:f"]).into_iter().collect()
        );
    }

    #[test]
    fn a_torn_tail_is_ignored_and_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.ledger");
        let mut writer = LedgerWriter::open(&path, &LedgerState::default()).unwrap();
        writer
            .intent(1, &[(b"a".as_slice(), b"a".as_slice())])
            .unwrap();
        writer.created(1, &[true]).unwrap();
        writer.flush().unwrap();
        drop(writer);
        let whole = std::fs::metadata(&path).unwrap().len();
        // Half a record, as a kill -9 during a write leaves it.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[INTENT, 200, 0, 0, 0, 1, 2]).unwrap();
        drop(file);
        let state = LedgerState::read(&path).unwrap();
        assert_eq!(state.changes, vec![Change::Created(b"a".to_vec())]);
        let mut writer = LedgerWriter::open(&path, &state).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        writer.finished(&Counters::default()).unwrap();
        drop(writer);
        let state = LedgerState::read(&path).unwrap();
        assert_eq!(state.finished, Some(Counters::default()));
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.ledger");
        std::fs::write(&path, b"something else").unwrap();
        let err = LedgerState::read(&path).unwrap_err();
        assert!(
            err.to_string().contains("not a redis-move copy ledger"),
            "{err}"
        );
    }
}
