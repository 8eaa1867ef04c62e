//! Where the keys of a command are, from the server's own key specifications (`COMMAND`,
//! Redis 7+), never from a hand-kept list: what a replication stream needs to rename the
//! keys of each write. A command whose specs say they are incomplete (the server itself
//! cannot always tell its keys) is refused by name.

use std::collections::HashMap;

use redis::Value;

/// Where the search for a command's keys starts.
#[derive(Clone, Debug, PartialEq, Eq)]
enum BeginSearch {
    /// At this argument (negative: from the end).
    Index(i64),
    /// After this keyword, searched from `start_from` (negative: backwards from the end).
    Keyword { keyword: Vec<u8>, start_from: i64 },
}

/// Which arguments after the start are keys.
#[derive(Clone, Debug, PartialEq, Eq)]
enum FindKeys {
    /// Every `key_step`-th up to `last_key` (relative to the start; negative: from the
    /// end); with `last_key` -1, `limit` > 1 takes only the first 1/limit of them.
    Range {
        last_key: i64,
        key_step: i64,
        limit: i64,
    },
    /// The number of keys is an argument (`numkeys`).
    Keynum {
        keynum_idx: i64,
        first_key: i64,
        key_step: i64,
    },
}

/// One key specification.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KeySpec {
    begin: BeginSearch,
    find: FindKeys,
    incomplete: bool,
}

/// Why a command's keys cannot be found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// The server does not know the command.
    #[error("`{0}` is not a command of the source")]
    Unknown(String),
    /// Its keys cannot always be told from its arguments.
    #[error(
        "the keys of `{0}` cannot always be told from its arguments (its key specs are incomplete)"
    )]
    Incomplete(String),
    /// The arguments do not fit the command's specs.
    #[error("`{0}` has arguments its key specs do not fit")]
    Malformed(String),
}

/// The key specifications of every command of a server.
#[derive(Clone, Debug, Default)]
pub struct CommandKeys {
    specs: HashMap<String, Vec<KeySpec>>,
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

/// A flat `[name, value, name, value, ...]` reply (or a RESP3 map) as pairs.
fn pairs(value: &Value) -> Vec<(String, &Value)> {
    match value {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|pair| Some((text(pair.first()?)?, pair.get(1)?)))
            .collect(),
        Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, v)))
            .collect(),
        _ => Vec::new(),
    }
}

fn field<'v>(value: &'v Value, name: &str) -> Option<&'v Value> {
    pairs(value)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn parse_spec(value: &Value) -> Option<KeySpec> {
    let flags = match field(value, "flags")? {
        Value::Array(flags) => flags.iter().filter_map(text).collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    let begin = field(value, "begin_search")?;
    let begin_spec = field(begin, "spec")?;
    let begin = match text(field(begin, "type")?)?.as_str() {
        "index" => BeginSearch::Index(int(field(begin_spec, "index")?)?),
        "keyword" => BeginSearch::Keyword {
            keyword: text(field(begin_spec, "keyword")?)?.into_bytes(),
            start_from: int(field(begin_spec, "startfrom")?)?,
        },
        _ => return None,
    };
    let find = field(value, "find_keys")?;
    let find_spec = field(find, "spec")?;
    let find = match text(field(find, "type")?)?.as_str() {
        "range" => FindKeys::Range {
            last_key: int(field(find_spec, "lastkey")?)?,
            key_step: int(field(find_spec, "keystep")?)?,
            limit: int(field(find_spec, "limit")?)?,
        },
        "keynum" => FindKeys::Keynum {
            keynum_idx: int(field(find_spec, "keynumidx")?)?,
            first_key: int(field(find_spec, "firstkey")?)?,
            key_step: int(field(find_spec, "keystep")?)?,
        },
        _ => return None,
    };
    Some(KeySpec {
        begin,
        find,
        incomplete: flags.iter().any(|f| f == "incomplete"),
    })
}

impl CommandKeys {
    /// Reads them from a `COMMAND` reply (each command, and its subcommands as
    /// `container|sub`).
    pub fn from_reply(reply: &Value) -> CommandKeys {
        let mut keys = CommandKeys::default();
        if let Value::Array(commands) = reply {
            for command in commands {
                keys.add(command, None);
            }
        }
        keys
    }

    fn add(&mut self, command: &Value, container: Option<&str>) {
        let Value::Array(parts) = command else { return };
        let Some(name) = parts.first().and_then(text) else {
            return;
        };
        let name = name.to_ascii_lowercase();
        let name = match container {
            Some(c) if !name.contains('|') => format!("{c}|{name}"),
            _ => name,
        };
        // A spec this reader cannot follow (an `unknown` search) counts as incomplete:
        // a key left out would be a key not renamed.
        let specs = match parts.get(8) {
            Some(Value::Array(specs)) => specs
                .iter()
                .map(|spec| {
                    parse_spec(spec).unwrap_or(KeySpec {
                        begin: BeginSearch::Index(0),
                        find: FindKeys::Range {
                            last_key: 0,
                            key_step: 1,
                            limit: 0,
                        },
                        incomplete: true,
                    })
                })
                .collect(),
            _ => Vec::new(),
        };
        if let Some(Value::Array(subcommands)) = parts.get(9) {
            for sub in subcommands {
                self.add(sub, Some(&name));
            }
        }
        self.specs.insert(name, specs);
    }

    /// How many commands it knows.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether it knows none.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// The positions (in `args`, the command's name at 0) of the keys of a command.
    pub fn positions(&self, args: &[Vec<u8>]) -> Result<Vec<usize>, KeysError> {
        let name = String::from_utf8_lossy(args.first().map_or(&[][..], Vec::as_slice))
            .to_ascii_lowercase();
        let sub = args
            .get(1)
            .map(|s| format!("{name}|{}", String::from_utf8_lossy(s).to_ascii_lowercase()));
        let (name, specs) = match sub.as_ref().and_then(|s| self.specs.get_key_value(s)) {
            Some(found) => found,
            None => self
                .specs
                .get_key_value(&name)
                .ok_or_else(|| KeysError::Unknown(name.clone()))?,
        };
        let mut positions = Vec::new();
        for spec in specs {
            if spec.incomplete {
                return Err(KeysError::Incomplete(name.clone()));
            }
            let found = find(spec, args).ok_or_else(|| KeysError::Malformed(name.clone()))?;
            positions.extend(found);
        }
        positions.sort_unstable();
        positions.dedup();
        Ok(positions)
    }
}

impl CommandKeys {
    /// Renames the keys of a command in place: `rename` gives a key's new name, or
    /// `None` to keep it. The positions of the keys it changed.
    pub fn rename(
        &self,
        args: &mut [Vec<u8>],
        rename: impl Fn(&[u8]) -> Option<Vec<u8>>,
    ) -> Result<Vec<usize>, KeysError> {
        let mut changed = Vec::new();
        for position in self.positions(args)? {
            if let Some(new) = rename(&args[position]) {
                args[position] = new;
                changed.push(position);
            }
        }
        Ok(changed)
    }
}

/// The key positions one spec gives, or `None` when the arguments do not fit it.
fn find(spec: &KeySpec, args: &[Vec<u8>]) -> Option<Vec<usize>> {
    let argc = args.len() as i64;
    let start = match &spec.begin {
        BeginSearch::Index(i) if *i >= 0 => *i,
        BeginSearch::Index(i) => argc + i,
        BeginSearch::Keyword {
            keyword,
            start_from,
        } => {
            let matches = |i: i64| {
                args.get(i as usize)
                    .is_some_and(|a| a.eq_ignore_ascii_case(keyword))
            };
            let found = if *start_from >= 0 {
                (*start_from..argc).find(|&i| matches(i))
            } else {
                (1..=argc + start_from).rev().find(|&i| matches(i))
            };
            match found {
                Some(i) => i + 1,
                // The keyword is optional: no keys from this spec.
                None => return Some(Vec::new()),
            }
        }
    };
    if start < 1 {
        return None;
    }
    let mut out = Vec::new();
    match spec.find {
        FindKeys::Range {
            last_key,
            key_step,
            limit,
        } => {
            let last = if last_key >= 0 {
                start + last_key
            } else if last_key == -1 && limit > 1 {
                start + (argc - start) / limit - 1
            } else {
                argc + last_key
            };
            let step = key_step.max(1);
            let mut i = start;
            while i <= last {
                if i >= argc {
                    return None;
                }
                out.push(i as usize);
                i += step;
            }
        }
        FindKeys::Keynum {
            keynum_idx,
            first_key,
            key_step,
        } => {
            let count: i64 = std::str::from_utf8(args.get((start + keynum_idx) as usize)?)
                .ok()?
                .parse()
                .ok()?;
            let first = start + first_key;
            let step = key_step.max(1);
            for n in 0..count.max(0) {
                let i = first + n * step;
                if i >= argc {
                    return None;
                }
                out.push(i as usize);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
impl CommandKeys {
    /// Key specs for unit tests: each command's keys from argument `first` to `last_key`
    /// (`-1`: the last argument) every `step`.
    pub(crate) fn ranges(commands: &[(&str, i64, i64, i64)]) -> CommandKeys {
        let mut keys = CommandKeys::default();
        for &(name, first, last_key, key_step) in commands {
            keys.specs.insert(
                name.into(),
                vec![KeySpec {
                    begin: BeginSearch::Index(first),
                    find: FindKeys::Range {
                        last_key,
                        key_step,
                        limit: 0,
                    },
                    incomplete: false,
                }],
            );
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<Vec<u8>> {
        text.split_whitespace()
            .map(|a| a.as_bytes().to_vec())
            .collect()
    }

    fn keys() -> CommandKeys {
        let mut keys = CommandKeys::default();
        let range = |start, last_key, key_step| KeySpec {
            begin: BeginSearch::Index(start),
            find: FindKeys::Range {
                last_key,
                key_step,
                limit: 0,
            },
            incomplete: false,
        };
        keys.specs.insert("set".into(), vec![range(1, 0, 1)]);
        keys.specs.insert("mset".into(), vec![range(1, -1, 2)]);
        keys.specs
            .insert("lmove".into(), vec![range(1, 0, 1), range(2, 0, 1)]);
        keys.specs.insert(
            "zunionstore".into(),
            vec![
                range(1, 0, 1),
                KeySpec {
                    begin: BeginSearch::Index(2),
                    find: FindKeys::Keynum {
                        keynum_idx: 0,
                        first_key: 1,
                        key_step: 1,
                    },
                    incomplete: false,
                },
            ],
        );
        keys.specs.insert(
            "georadius".into(),
            vec![
                range(1, 0, 1),
                KeySpec {
                    begin: BeginSearch::Keyword {
                        keyword: b"STORE".to_vec(),
                        start_from: 6,
                    },
                    find: FindKeys::Range {
                        last_key: 0,
                        key_step: 1,
                        limit: 0,
                    },
                    incomplete: false,
                },
            ],
        );
        keys.specs.insert(
            "migrate".into(),
            vec![KeySpec {
                incomplete: true,
                ..range(3, 0, 1)
            }],
        );
        keys.specs
            .insert("xgroup|create".into(), vec![range(2, 0, 1)]);
        keys
    }

    #[test]
    fn finds_keys_by_index_range_keynum_keyword_and_subcommand() {
        let k = keys();
        assert_eq!(k.positions(&args("SET a 1")).unwrap(), [1]);
        assert_eq!(k.positions(&args("MSET a 1 b 2 c 3")).unwrap(), [1, 3, 5]);
        assert_eq!(k.positions(&args("LMOVE a b LEFT RIGHT")).unwrap(), [1, 2]);
        assert_eq!(
            k.positions(&args("ZUNIONSTORE d 2 a b WEIGHTS 1 2"))
                .unwrap(),
            [1, 3, 4]
        );
        assert_eq!(
            k.positions(&args("GEORADIUS g 1 2 3 km STORE dest"))
                .unwrap(),
            [1, 7]
        );
        assert_eq!(k.positions(&args("GEORADIUS g 1 2 3 km")).unwrap(), [1]);
        assert_eq!(k.positions(&args("xgroup CREATE s g $")).unwrap(), [2]);
        assert!(matches!(
            k.positions(&args("MIGRATE h 6379 k 0 5000")),
            Err(KeysError::Incomplete(_))
        ));
        assert!(matches!(
            k.positions(&args("NOSUCH a")),
            Err(KeysError::Unknown(_))
        ));
        assert!(matches!(
            k.positions(&args("ZUNIONSTORE d 5 a")),
            Err(KeysError::Malformed(_))
        ));
    }
}
