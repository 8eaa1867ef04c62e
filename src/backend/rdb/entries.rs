//! The keys of an RDB stream, one at a time: each key with its database, absolute expiry
//! and the bytes of its value exactly as the server serialized them, so that a key can be
//! written elsewhere with `RESTORE` (the value re-wrapped as a DUMP payload: type byte,
//! value, RDB version, CRC-64) without decoding it. Read as a stream (flat memory: one
//! value at a time), for RDB versions 9 to 12 (Redis 6.0 to 7.4, Valkey 7 and 8).
//!
//! Values are walked only far enough to find where they end: strings (plain, integer,
//! LZF), the containers of every encoding (listpack, ziplist, intset, quicklist, skiplist,
//! hash table) and streams with their consumer groups.

use std::io::Read;

use crc::{CRC_64_REDIS, Crc};

/// Redis's CRC-64 (Jones polynomial, reflected), as DUMP payloads carry it.
// Slice-by-16 tables: the checksum runs over every value a sync moves.
static CRC64: Crc<u64, crc::Table<16>> = Crc::<u64, crc::Table<16>>::new(&CRC_64_REDIS);

/// A running CRC-64 of Redis's kind (an RDB's checksum).
pub(super) fn crc64_digest() -> crc::Digest<'static, u64, crc::Table<16>> {
    CRC64.digest()
}

/// The longest string Redis stores (`proto-max-bulk-len`'s ceiling): a longer length in
/// a stream is corruption, not a string to allocate.
const MAX_STRING: u64 = 512 * 1024 * 1024;

/// The newest RDB format this reader knows (12: Redis 7.4, whose hashes with field
/// expiries are refused by name; the rest of its format is 11's).
pub const NEWEST_VERSION: u16 = 12;

/// Why an RDB stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RdbError {
    /// The stream ended or could not be read.
    #[error("reading the RDB: {0}")]
    Io(#[from] std::io::Error),
    /// It is not an RDB this reader knows.
    #[error("{0}")]
    Format(String),
}

/// One key of an RDB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdbEntry {
    /// Its database.
    pub db: u64,
    /// Its name.
    pub key: Vec<u8>,
    /// When it expires, in Unix milliseconds.
    pub expires_at_ms: Option<i64>,
    /// Its value's RDB type (`0` string, `18` quicklist, `21` stream, ...).
    pub value_type: u8,
    /// Its value as serialized in the RDB.
    pub value: Vec<u8>,
}

impl RdbEntry {
    /// The value as a DUMP payload for `RESTORE`, marked with RDB version `version` (the
    /// source's: a server refuses a payload newer than its own format).
    pub fn dump_payload(&self, version: u16) -> Vec<u8> {
        let mut payload = Vec::with_capacity(self.value.len() + 11);
        self.write_dump_payload(version, &mut payload);
        payload
    }

    /// Writes the DUMP payload of the value to `out` (without a copy of it first).
    pub fn write_dump_payload(&self, version: u16, out: &mut impl std::io::Write) {
        let footer = version.to_le_bytes();
        let mut digest = CRC64.digest();
        digest.update(&[self.value_type]);
        digest.update(&self.value);
        digest.update(&footer);
        let crc = digest.finalize().to_le_bytes();
        for part in [&[self.value_type][..], &self.value, &footer, &crc] {
            // Writing to memory does not fail.
            let _ = out.write_all(part);
        }
    }

    /// The payload built the plain way, to check the one written in place against.
    #[cfg(test)]
    fn dump_payload_copied(&self, version: u16) -> Vec<u8> {
        let mut payload = Vec::with_capacity(self.value.len() + 11);
        payload.push(self.value_type);
        payload.extend_from_slice(&self.value);
        payload.extend_from_slice(&version.to_le_bytes());
        let crc = CRC64.checksum(&payload);
        payload.extend_from_slice(&crc.to_le_bytes());
        payload
    }
}

/// Opcodes between keys.
mod op {
    pub const SLOT_INFO: u8 = 0xF4;
    pub const FUNCTION2: u8 = 0xF5;
    pub const FUNCTION_PRE_GA: u8 = 0xF6;
    pub const MODULE_AUX: u8 = 0xF7;
    pub const IDLE: u8 = 0xF8;
    pub const FREQ: u8 = 0xF9;
    pub const AUX: u8 = 0xFA;
    pub const RESIZEDB: u8 = 0xFB;
    pub const EXPIRETIME_MS: u8 = 0xFC;
    pub const EXPIRETIME: u8 = 0xFD;
    pub const SELECTDB: u8 = 0xFE;
    pub const EOF: u8 = 0xFF;
}

impl RdbEntry {
    /// The entry of `key` (db 0, no expiry) from its DUMP payload (type byte, value, RDB
    /// version, CRC-64), and the payload's RDB version. The checksum is checked.
    pub fn from_dump(key: &[u8], payload: &[u8]) -> Result<(RdbEntry, u16), RdbError> {
        let bad = || RdbError::Format("not a DUMP payload (too short, or a wrong checksum)".into());
        let (body, crc) = payload
            .split_at_checked(payload.len().checked_sub(8).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        if body.len() < 3 || CRC64.checksum(body).to_le_bytes() != crc {
            return Err(bad());
        }
        let (value, footer) = body[1..].split_at(body.len() - 3);
        Ok((
            RdbEntry {
                db: 0,
                key: key.to_vec(),
                expires_at_ms: None,
                value_type: body[0],
                value: value.to_vec(),
            },
            u16::from_le_bytes(footer.try_into().expect("2 bytes")),
        ))
    }
}

/// Reads the keys of an RDB stream.
pub struct RdbReader<R> {
    input: R,
    version: u16,
    db: u64,
    done: bool,
    /// The bytes of the value being read (recorded while it is walked).
    record: Option<Vec<u8>>,
    /// The record's buffer between keys.
    scratch: Vec<u8>,
}

impl<R: Read> RdbReader<R> {
    /// Reads the header (`REDIS` and four digits) of `input`.
    pub fn new(mut input: R) -> Result<Self, RdbError> {
        let mut head = [0u8; 9];
        input.read_exact(&mut head)?;
        let version = super::header_version(&head)
            .ok_or_else(|| RdbError::Format("not an RDB (no REDIS header)".into()))?;
        if !(1..=u32::from(NEWEST_VERSION)).contains(&version) {
            return Err(RdbError::Format(format!(
                "RDB version {version} is newer than this reader knows ({NEWEST_VERSION}: Redis 7.4, Valkey 8)"
            )));
        }
        Ok(RdbReader {
            input,
            version: version as u16,
            db: 0,
            done: false,
            record: None,
            scratch: Vec::new(),
        })
    }

    /// A reader of one value's bytes (no header): for decoding a value the stream gave.
    pub(super) fn value(input: R) -> Self {
        RdbReader {
            input,
            version: NEWEST_VERSION,
            db: 0,
            done: false,
            record: None,
            scratch: Vec::new(),
        }
    }

    /// The stream's RDB format version.
    pub fn version(&self) -> u16 {
        self.version
    }

    pub(super) fn bytes(&mut self, buf: &mut [u8]) -> Result<(), RdbError> {
        self.input.read_exact(buf)?;
        if let Some(record) = self.record.as_mut() {
            record.extend_from_slice(buf);
        }
        Ok(())
    }

    pub(super) fn byte(&mut self) -> Result<u8, RdbError> {
        let mut b = [0u8; 1];
        self.bytes(&mut b)?;
        Ok(b[0])
    }

    /// Reads past `n` bytes (into the record, when one is kept). The record grows as the
    /// bytes arrive, so that a corrupt length fails on the data it does not find.
    fn skip(&mut self, mut n: u64) -> Result<(), RdbError> {
        match self.record.as_mut() {
            Some(record) => {
                while n > 0 {
                    let take = n.min(1 << 16);
                    let read = (&mut self.input).take(take).read_to_end(record)?;
                    if (read as u64) < take {
                        return Err(RdbError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                    n -= take;
                }
            }
            None => {
                let skipped = std::io::copy(&mut (&mut self.input).take(n), &mut std::io::sink())?;
                if skipped < n {
                    return Err(RdbError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
        Ok(())
    }

    /// A length, or the kind of a specially encoded string (`Err` side: its code).
    fn length_or_special(&mut self) -> Result<Result<u64, u8>, RdbError> {
        let first = self.byte()?;
        Ok(match first >> 6 {
            0 => Ok(u64::from(first & 0x3F)),
            1 => Ok((u64::from(first & 0x3F) << 8) | u64::from(self.byte()?)),
            2 => match first {
                0x80 => {
                    let mut b = [0u8; 4];
                    self.bytes(&mut b)?;
                    Ok(u64::from(u32::from_be_bytes(b)))
                }
                0x81 => {
                    let mut b = [0u8; 8];
                    self.bytes(&mut b)?;
                    Ok(u64::from_be_bytes(b))
                }
                other => {
                    return Err(RdbError::Format(format!(
                        "unknown length encoding 0x{other:02x}"
                    )));
                }
            },
            _ => Err(first & 0x3F),
        })
    }

    pub(super) fn length(&mut self) -> Result<u64, RdbError> {
        self.length_or_special()?.map_err(|code| {
            RdbError::Format(format!(
                "a string encoding ({code}) where a length was expected"
            ))
        })
    }

    /// A string, read whole (keys and opcode arguments).
    pub(super) fn string(&mut self) -> Result<Vec<u8>, RdbError> {
        match self.length_or_special()? {
            Ok(len) => self.exact(len),
            Err(0) => Ok((self.byte()? as i8).to_string().into_bytes()),
            Err(1) => {
                let mut b = [0u8; 2];
                self.bytes(&mut b)?;
                Ok(i16::from_le_bytes(b).to_string().into_bytes())
            }
            Err(2) => {
                let mut b = [0u8; 4];
                self.bytes(&mut b)?;
                Ok(i32::from_le_bytes(b).to_string().into_bytes())
            }
            Err(3) => {
                let compressed = self.length()?;
                let plain = self.length()?;
                let input = self.exact(compressed)?;
                // LZF expands at most ~132 times (264 bytes from a 2-byte reference).
                if plain > MAX_STRING || plain > compressed.saturating_mul(132) + 64 {
                    return Err(RdbError::Format(format!(
                        "an LZF string of {compressed} bytes said to expand to {plain}"
                    )));
                }
                lzf_decompress(&input, plain as usize)
            }
            Err(code) => Err(RdbError::Format(format!("unknown string encoding {code}"))),
        }
    }

    /// `len` bytes, read as they arrive (a corrupt length fails on the data it does not
    /// find, instead of allocating what it claims).
    pub(super) fn exact(&mut self, len: u64) -> Result<Vec<u8>, RdbError> {
        if len > MAX_STRING {
            return Err(RdbError::Format(format!(
                "a string of {len} bytes: longer than Redis allows"
            )));
        }
        // A short string (a key, most values) in one read into its own buffer.
        if len <= 1 << 16 {
            let mut out = vec![0u8; len as usize];
            self.bytes(&mut out)?;
            return Ok(out);
        }
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        let mut left = len;
        while left > 0 {
            let take = left.min(buf.len() as u64) as usize;
            self.bytes(&mut buf[..take])?;
            out.extend_from_slice(&buf[..take]);
            left -= take as u64;
        }
        Ok(out)
    }

    /// Passes over a string without keeping it.
    fn skip_string(&mut self) -> Result<(), RdbError> {
        match self.length_or_special()? {
            Ok(len) => self.skip(len),
            Err(0) => self.skip(1),
            Err(1) => self.skip(2),
            Err(2) => self.skip(4),
            Err(3) => {
                let compressed = self.length()?;
                let _plain = self.length()?;
                self.skip(compressed)
            }
            Err(code) => Err(RdbError::Format(format!("unknown string encoding {code}"))),
        }
    }

    /// Passes over a value of type `value_type`.
    fn skip_value(&mut self, value_type: u8) -> Result<(), RdbError> {
        match value_type {
            // String, and the encodings held in one string (zipmap, ziplists, intset,
            // listpacks).
            0 | 9 | 10 | 11 | 12 | 13 | 16 | 17 | 20 => self.skip_string(),
            // List, set (hash table), quicklist of ziplists: a count of strings.
            1 | 2 | 14 => {
                for _ in 0..self.length()? {
                    self.skip_string()?;
                }
                Ok(())
            }
            // Sorted set with scores as text (1 length byte; 253-255 are nan/inf).
            3 => {
                for _ in 0..self.length()? {
                    self.skip_string()?;
                    let len = self.byte()?;
                    if len < 253 {
                        self.skip(u64::from(len))?;
                    }
                }
                Ok(())
            }
            // Hash table.
            4 => {
                for _ in 0..self.length()? {
                    self.skip_string()?;
                    self.skip_string()?;
                }
                Ok(())
            }
            // Sorted set with binary scores.
            5 => {
                for _ in 0..self.length()? {
                    self.skip_string()?;
                    self.skip(8)?;
                }
                Ok(())
            }
            // Quicklist 2: each node's container kind, then the node.
            18 => {
                for _ in 0..self.length()? {
                    self.length()?;
                    self.skip_string()?;
                }
                Ok(())
            }
            15 | 19 | 21 => self.skip_stream(value_type),
            6 | 7 => Err(RdbError::Format(
                "a module's data type (a key of a Redis module): redis-move cannot move it".into(),
            )),
            22..=25 => Err(RdbError::Format(
                "a hash with field expiries (Redis 7.4, RDB 12): not supported yet".into(),
            )),
            other => Err(RdbError::Format(format!("unknown value type {other}"))),
        }
    }

    fn skip_stream(&mut self, value_type: u8) -> Result<(), RdbError> {
        // Nodes: a master ID (16 bytes, as a string) and a listpack.
        for _ in 0..self.length()? {
            self.skip_string()?;
            self.skip_string()?;
        }
        // Length, last ID; from version 2 on: first ID, max deleted ID, entries added.
        self.length()?;
        self.length()?;
        self.length()?;
        if value_type >= 19 {
            for _ in 0..5 {
                self.length()?;
            }
        }
        // Consumer groups.
        for _ in 0..self.length()? {
            self.skip_string()?; // name
            self.length()?; // last ID
            self.length()?;
            if value_type >= 19 {
                self.length()?; // entries read
            }
            // Pending entries: ID (16 bytes), delivery time (8), delivery count.
            for _ in 0..self.length()? {
                self.skip(16 + 8)?;
                self.length()?;
            }
            for _ in 0..self.length()? {
                self.skip_string()?; // consumer name
                self.skip(8)?; // seen time
                if value_type >= 21 {
                    self.skip(8)?; // active time
                }
                for _ in 0..self.length()? {
                    self.skip(16)?;
                }
            }
        }
        Ok(())
    }

    fn next_entry(&mut self) -> Result<Option<RdbEntry>, RdbError> {
        let mut expires_at_ms = None;
        loop {
            let opcode = self.byte()?;
            match opcode {
                op::EOF => {
                    self.done = true;
                    return Ok(None);
                }
                op::SELECTDB => self.db = self.length()?,
                op::RESIZEDB => {
                    self.length()?;
                    self.length()?;
                }
                op::AUX => {
                    self.skip_string()?;
                    self.skip_string()?;
                }
                op::EXPIRETIME_MS => {
                    let mut b = [0u8; 8];
                    self.bytes(&mut b)?;
                    expires_at_ms = Some(i64::from_le_bytes(b));
                }
                op::EXPIRETIME => {
                    let mut b = [0u8; 4];
                    self.bytes(&mut b)?;
                    expires_at_ms = Some(i64::from(i32::from_le_bytes(b)) * 1000);
                }
                op::IDLE => {
                    self.length()?;
                }
                op::FREQ => {
                    self.byte()?;
                }
                op::SLOT_INFO => {
                    for _ in 0..3 {
                        self.length()?;
                    }
                }
                op::FUNCTION2 => self.skip_string()?,
                op::FUNCTION_PRE_GA | op::MODULE_AUX => {
                    return Err(RdbError::Format(format!(
                        "opcode 0x{opcode:02x} (functions of Redis 7.0 RC, or module data): not supported"
                    )));
                }
                value_type => {
                    let key = self.string()?;
                    // The value is recorded into a buffer kept from key to key (no
                    // regrowth for each), then copied out at its exact size.
                    let mut scratch = std::mem::take(&mut self.scratch);
                    scratch.clear();
                    self.record = Some(scratch);
                    let walked = self.skip_value(value_type);
                    let scratch = self.record.take().unwrap_or_default();
                    let value = scratch.clone();
                    // A huge value's buffer is not kept.
                    if scratch.capacity() <= 1 << 20 {
                        self.scratch = scratch;
                    }
                    walked?;
                    return Ok(Some(RdbEntry {
                        db: self.db,
                        key,
                        expires_at_ms,
                        value_type,
                        value,
                    }));
                }
            }
        }
    }
}

impl<R: Read> Iterator for RdbReader<R> {
    type Item = Result<RdbEntry, RdbError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_entry() {
            Ok(Some(entry)) => Some(Ok(entry)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// LZF decompression (the format Redis compresses long strings with).
fn lzf_decompress(input: &[u8], plain_len: usize) -> Result<Vec<u8>, RdbError> {
    let bad = || RdbError::Format("a corrupt LZF-compressed string".into());
    let mut out = Vec::with_capacity(plain_len);
    let mut i = 0;
    while i < input.len() {
        let control = usize::from(input[i]);
        i += 1;
        if control < 32 {
            let run = control + 1;
            out.extend_from_slice(input.get(i..i + run).ok_or_else(bad)?);
            i += run;
        } else {
            let mut len = control >> 5;
            if len == 7 {
                len += usize::from(*input.get(i).ok_or_else(bad)?);
                i += 1;
            }
            let back = ((control & 0x1F) << 8) + usize::from(*input.get(i).ok_or_else(bad)?) + 1;
            i += 1;
            let start = out.len().checked_sub(back).ok_or_else(bad)?;
            for k in 0..len + 2 {
                let b = out[start + k];
                out.push(b);
            }
        }
    }
    if out.len() != plain_len {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_payload_carries_the_redis_crc64() {
        // The CRC-64 Redis checks (crc64 Jones) of "123456789".
        assert_eq!(CRC64.checksum(b"123456789"), 0xe9c6d914c4b8d9ca);
        let entry = RdbEntry {
            db: 0,
            key: b"k".to_vec(),
            expires_at_ms: None,
            value_type: 0,
            value: vec![0x01, b'v'],
        };
        let payload = entry.dump_payload(10);
        assert_eq!(payload, entry.dump_payload_copied(10));
        assert_eq!(&payload[..5], &[0, 1, b'v', 10, 0]);
        assert_eq!(payload.len(), 5 + 8);
    }

    #[test]
    fn reads_keys_expiries_and_databases() {
        let mut rdb = b"REDIS0010".to_vec();
        rdb.extend([op::AUX, 0x03]);
        rdb.extend(b"ver");
        rdb.extend([0x05]);
        rdb.extend(b"7.0.0");
        rdb.extend([op::SELECTDB, 0x02, op::RESIZEDB, 0x02, 0x01]);
        rdb.extend([op::EXPIRETIME_MS]);
        rdb.extend(1_700_000_000_123i64.to_le_bytes());
        rdb.extend([0x00, 0x01, b'a', 0xC0, 42]); // "a" = int8 42
        rdb.extend([0x00, 0x01, b'b', 0x03]);
        rdb.extend(b"xyz");
        rdb.extend([op::EOF]);
        rdb.extend([0u8; 8]);
        let entries: Vec<RdbEntry> = RdbReader::new(&rdb[..])
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].db, 2);
        assert_eq!(entries[0].key, b"a");
        assert_eq!(entries[0].expires_at_ms, Some(1_700_000_000_123));
        assert_eq!(entries[0].value, vec![0xC0, 42]);
        assert_eq!(entries[1].expires_at_ms, None);
        assert_eq!(entries[1].value, b"\x03xyz".to_vec());
    }

    #[test]
    fn an_rdb_12_is_read_and_a_hash_with_field_expiries_is_refused_by_name() {
        let mut rdb = b"REDIS0012".to_vec();
        rdb.extend([op::SELECTDB, 0x00]);
        rdb.extend([0x00, 0x01, b'a', 0x01, b'x']);
        rdb.extend([25, 0x01, b'h', 0x00]);
        rdb.extend([op::EOF]);
        rdb.extend([0u8; 8]);
        let mut reader = RdbReader::new(&rdb[..]).unwrap();
        assert_eq!(reader.version(), 12);
        assert_eq!(reader.next().unwrap().unwrap().key, b"a");
        let refused = reader.next().unwrap().unwrap_err().to_string();
        assert!(refused.contains("field expiries"), "{refused}");
        let newer = RdbReader::new(&b"REDIS0013"[..]).err().unwrap().to_string();
        assert!(newer.contains("newer than this reader knows"), "{newer}");
    }

    #[test]
    fn a_truncated_or_foreign_stream_is_an_error_not_a_panic() {
        assert!(RdbReader::new(&b"NOTRDB0010"[..]).is_err());
        assert!(RdbReader::new(&b"REDIS0099"[..]).is_err());
        let mut reader = RdbReader::new(&b"REDIS0010\x00\x05ab"[..]).unwrap();
        assert!(matches!(reader.next(), Some(Err(_))));
        assert!(reader.next().is_none());
    }

    proptest::proptest! {
        /// Whatever follows a valid header, the reader ends with keys or an error: it
        /// never panics, and never allocates what a corrupt length claims.
        #[test]
        fn any_bytes_after_a_header_are_read_or_refused(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut rdb = b"REDIS0011".to_vec();
            rdb.extend(body);
            if let Ok(reader) = RdbReader::new(&rdb[..]) {
                for item in reader.take(1000) {
                    let _ = item;
                }
            }
        }
    }

    #[test]
    fn a_huge_length_is_corruption_not_an_allocation() {
        // A key whose length says 2^62 bytes.
        let mut rdb = b"REDIS0010\x00\x81".to_vec();
        rdb.extend((1u64 << 62).to_be_bytes());
        let mut reader = RdbReader::new(&rdb[..]).unwrap();
        let error = reader.next().unwrap().unwrap_err().to_string();
        assert!(error.contains("longer than Redis allows"), "{error}");
    }

    #[test]
    fn lzf_round_trips_what_redis_writes() {
        // A literal run, then a back reference of 6 bytes at distance 3: "abcabcabc".
        let compressed = [0x02, b'a', b'b', b'c', 0x80, 0x02];
        assert_eq!(lzf_decompress(&compressed, 9).unwrap(), b"abcabcabc");
        assert!(lzf_decompress(&[0x80, 0x05], 3).is_err());
    }
}
