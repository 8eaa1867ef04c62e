//! Decisions only a person can make: go/no-go gates and "done?" for manual steps.
//!
//! Non-interactive runs decide with `--approve ID` / `--yes`, or an approval dropped by
//! `redis-move approve RUN ID` from another shell; without one, the run stops at the
//! gate (exit 4) with its state saved, and `resume --approve ID` continues.

use std::collections::HashSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::journal::{GateDecision, Signoff, operator as whoami};

/// What is asked.
#[derive(Clone, Debug)]
pub enum Question {
    /// A go/no-go gate.
    Gate {
        /// The question.
        question: String,
        /// Named sign-offs required.
        signoffs: Vec<String>,
    },
    /// A manual step: confirm it is done.
    Manual {
        /// The instruction.
        instruction: String,
        /// Who must confirm.
        by: Option<String>,
    },
}

/// A request for a decision.
#[derive(Clone, Debug)]
pub struct DecisionRequest {
    /// The gate or manual step id.
    pub id: String,
    /// What is asked.
    pub question: Question,
    /// The checks since the last gate, one line each (`PASS memory: 1.2 GiB < 8 GiB`).
    pub evidence: Vec<String>,
    /// How long to wait.
    pub timeout: Option<Duration>,
}

/// The answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Decided.
    Decided {
        /// Go or no-go.
        decision: GateDecision,
        /// Who.
        who: String,
        /// How (`terminal`, `--approve`, `--yes`, `approve command`).
        how: String,
        /// Sign-offs given.
        signoffs: Vec<Signoff>,
    },
    /// Nobody can answer now (no terminal, no approval): stop here, resumable.
    Unavailable,
    /// The gate's timeout passed.
    TimedOut,
}

/// Makes decisions.
pub trait Operator: Send + Sync {
    /// Asks.
    fn decide<'a>(&'a self, request: &'a DecisionRequest) -> BoxFuture<'a, Answer>;

    /// Whether gate `id` is decided without asking anyone (`--yes`, `--approve ID`):
    /// nobody is told that it waits.
    fn decides_alone(&self, _id: &str) -> bool {
        false
    }
}

/// An approval written by `redis-move approve` or from the live page.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApprovalFile {
    /// Go or no-go.
    pub decision: GateDecision,
    /// Who.
    pub who: String,
    /// When.
    pub at: jiff::Timestamp,
    /// How it was given (`live page from 127.0.0.1`); `approve command` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub how: Option<String>,
    /// The named sign-offs given with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signoffs: Vec<Signoff>,
}

impl ApprovalFile {
    /// A decision by whoever runs this process, with the `approve` command.
    pub fn by_command(decision: GateDecision) -> ApprovalFile {
        ApprovalFile {
            decision,
            who: whoami(),
            at: jiff::Timestamp::now(),
            how: None,
            signoffs: Vec::new(),
        }
    }

    fn answer(self) -> Answer {
        Answer::Decided {
            decision: self.decision,
            who: self.who,
            how: self.how.unwrap_or_else(|| "approve command".into()),
            signoffs: self.signoffs,
        }
    }
}

/// Writes `bytes` into `path` whole (a reader never sees half of it), owner-only.
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    write_private(&temp, bytes)?;
    std::fs::rename(&temp, path)
}

/// Writes an approval for gate `id` into `dir` (by `redis-move approve` and the live
/// page). The first one written stands: while it waits to be used, another is refused
/// (`AlreadyExists`; [`pending_approval`] says whose), so that nobody is told that a
/// decision was recorded when another replaces it.
pub fn write_approval(dir: &Path, id: &str, approval: &ApprovalFile) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{id}.json"));
    let temp = dir.join(format!(".{id}.{}.tmp", std::process::id()));
    write_private(&temp, &serde_json::to_vec(approval).unwrap_or_default())?;
    // A link is made whole or not at all, and never over an existing file.
    let linked = std::fs::hard_link(&temp, &path);
    let _ = std::fs::remove_file(&temp);
    linked.map(|()| path)
}

/// Writes `bytes` into a new file readable by its owner only (names, addresses).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    std::io::Write::write_all(&mut open.open(path)?, bytes)
}

/// The decision waiting to be used for gate `id`, if any.
pub fn pending_approval(dir: &Path, id: &str) -> Option<ApprovalFile> {
    let text = std::fs::read_to_string(dir.join(format!("{id}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

/// Takes the decision waiting for gate `id`: it (and the gate's sign-offs) move to
/// `used/`, so that the gate asked again (a resumed run) asks anew.
fn take_approval(dir: &Path, id: &str) -> Option<ApprovalFile> {
    let used = dir.join("used");
    std::fs::create_dir_all(&used).ok()?;
    let stamp = jiff::Timestamp::now().as_millisecond();
    let taken = used.join(format!("{id}.{stamp}.json"));
    std::fs::rename(dir.join(format!("{id}.json")), &taken).ok()?;
    let _ = std::fs::rename(
        dir.join(format!("{id}.signoffs")),
        used.join(format!("{id}.{stamp}.signoffs")),
    );
    let text = std::fs::read_to_string(&taken).ok()?;
    serde_json::from_str(&text).ok()
}

/// Records one named sign-off of gate `id` (the `index`-th role it asks for), given
/// ahead of its "go" from the live page.
pub fn write_signoff(dir: &Path, id: &str, index: usize, signoff: &Signoff) -> std::io::Result<()> {
    let dir = dir.join(format!("{id}.signoffs"));
    std::fs::create_dir_all(&dir)?;
    write_whole(
        &dir.join(format!("{index}.json")),
        &serde_json::to_vec(signoff).unwrap_or_default(),
    )
}

/// The named sign-offs given so far for gate `id`, in the order of its roles.
pub fn read_signoffs(dir: &Path, id: &str) -> Vec<Signoff> {
    let dir = dir.join(format!("{id}.signoffs"));
    let mut found: Vec<(usize, Signoff)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let index = name.strip_suffix(".json")?.parse().ok()?;
                    let text = std::fs::read_to_string(e.path()).ok()?;
                    Some((index, serde_json::from_str(&text).ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|(i, _)| *i);
    found.into_iter().map(|(_, s)| s).collect()
}

/// The operator of a real run: pre-approvals, approval files, and a terminal prompt
/// when there is a terminal.
pub struct RunOperator {
    /// Ids approved with `--approve`.
    pub approved: HashSet<String>,
    /// `--yes`: approve everything.
    pub yes: bool,
    /// Where `redis-move approve` drops approvals for this run.
    pub approvals_dir: PathBuf,
    /// Ask on the terminal (stdin and stderr are terminals and not `--no-input`).
    pub interactive: bool,
    /// Without a terminal, wait at gates for an approval instead of stopping.
    pub wait: bool,
}

impl RunOperator {
    /// Whether stdin and stderr are terminals.
    pub fn terminal() -> bool {
        std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
    }

    fn preapproved(&self, request: &DecisionRequest) -> Option<Answer> {
        let how = if self.approved.contains(&request.id) {
            "--approve"
        } else if self.yes {
            "--yes"
        } else {
            return None;
        };
        let who = whoami();
        let signoffs = match &request.question {
            Question::Gate { signoffs, .. } => signoffs
                .iter()
                .map(|role| Signoff {
                    role: role.clone(),
                    who: who.clone(),
                    at: jiff::Timestamp::now(),
                })
                .collect(),
            Question::Manual { .. } => Vec::new(),
        };
        Some(Answer::Decided {
            decision: GateDecision::Go,
            who,
            how: how.into(),
            signoffs,
        })
    }

    async fn wait_for_approval(&self, id: &str) -> Answer {
        loop {
            if let Some(approval) = take_approval(&self.approvals_dir, id) {
                return approval.answer();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Operator for RunOperator {
    fn decides_alone(&self, id: &str) -> bool {
        self.yes
            || self.approved.contains(id)
            || pending_approval(&self.approvals_dir, id).is_some()
    }

    fn decide<'a>(&'a self, request: &'a DecisionRequest) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            if let Some(answer) = self.preapproved(request) {
                return answer;
            }
            if let Some(approval) = take_approval(&self.approvals_dir, &request.id) {
                return approval.answer();
            }
            if !self.interactive && !self.wait {
                return Answer::Unavailable;
            }
            let waiting = async {
                if self.interactive {
                    let asked = request.clone();
                    let on_terminal = tokio::task::spawn_blocking(move || prompt(&asked));
                    // Whichever comes first: the terminal, or `redis-move approve`.
                    tokio::select! {
                        answer = on_terminal => answer.unwrap_or(Answer::Unavailable),
                        answer = self.wait_for_approval(&request.id) => answer,
                    }
                } else {
                    self.wait_for_approval(&request.id).await
                }
            };
            match request.timeout {
                Some(limit) => tokio::time::timeout(limit, waiting)
                    .await
                    .unwrap_or(Answer::TimedOut),
                None => waiting.await,
            }
        })
    }
}

/// Asks on the terminal (stderr for the text, stdin for the answer).
fn prompt(request: &DecisionRequest) -> Answer {
    let mut err = std::io::stderr().lock();
    let stdin = std::io::stdin();
    let mut read_line = |label: &str| -> Option<String> {
        let _ = write!(err, "{label}");
        let _ = err.flush();
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim().to_owned()),
        }
    };
    let _ = writeln!(std::io::stderr());
    if !request.evidence.is_empty() {
        let _ = writeln!(std::io::stderr(), "Evidence since the last gate:");
        for line in &request.evidence {
            let _ = writeln!(std::io::stderr(), "  {line}");
        }
    }
    match &request.question {
        Question::Gate { question, signoffs } => {
            let _ = writeln!(std::io::stderr(), "GATE {}: {question}", request.id);
            loop {
                match read_line("Type `go` or `no-go`: ").as_deref() {
                    Some("go") => break,
                    Some("no-go") | Some("nogo") | Some("no") => {
                        return Answer::Decided {
                            decision: GateDecision::NoGo,
                            who: whoami(),
                            how: "terminal".into(),
                            signoffs: Vec::new(),
                        };
                    }
                    Some(_) => continue,
                    None => return Answer::Unavailable,
                }
            }
            let mut given = Vec::new();
            for role in signoffs {
                let Some(name) =
                    read_line(&format!("Sign-off `{role}`: your name: ")).filter(|n| !n.is_empty())
                else {
                    return Answer::Unavailable;
                };
                given.push(Signoff {
                    role: role.clone(),
                    who: name,
                    at: jiff::Timestamp::now(),
                });
            }
            // Nobody known to the process, but a name typed at a sign-off: that one.
            let who = match given.first() {
                Some(signoff) if !super::journal::operator_known() => signoff.who.clone(),
                _ => whoami(),
            };
            Answer::Decided {
                decision: GateDecision::Go,
                who,
                how: "terminal".into(),
                signoffs: given,
            }
        }
        Question::Manual { instruction, by } => {
            let by = by.as_ref().map(|b| format!(" ({b})")).unwrap_or_default();
            let _ = writeln!(
                std::io::stderr(),
                "MANUAL {}{by}: {instruction}",
                request.id
            );
            loop {
                match read_line("Type `done` when done, or `abort`: ").as_deref() {
                    Some("done") => {
                        return Answer::Decided {
                            decision: GateDecision::Go,
                            who: whoami(),
                            how: "terminal".into(),
                            signoffs: Vec::new(),
                        };
                    }
                    Some("abort") => {
                        return Answer::Decided {
                            decision: GateDecision::NoGo,
                            who: whoami(),
                            how: "terminal".into(),
                            signoffs: Vec::new(),
                        };
                    }
                    Some(_) => continue,
                    None => return Answer::Unavailable,
                }
            }
        }
    }
}
