//! `notify:` webhooks: the run's events told to the people who are not at its terminal.
//!
//! Each webhook has its own queue and task: an event is queued the moment it happens and
//! delivered in order (POST, a 2xx answer counts), tried three times in all, each try
//! within the webhook's `timeout`. The run never waits for a delivery, and a delivery
//! never fails the run; every outcome is recorded in the journal
//! (`notifications`). When the run ends, what is still queued gets at most one
//! `timeout` more, once, and what is left then is recorded as not delivered. Bodies
//! and records pass through the run's redactor; a record names the webhook by its
//! scheme, host and port only (a webhook's path is often its secret).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::exec::engine::JournalHandle;
use crate::exec::event::RunEvent;
use crate::exec::journal::{NotificationRecord, RunStatus};
use crate::redact::Redactor;
use crate::runbook::spec::{NotifyEvent, NotifyFormat};

/// Tries of one delivery.
const ATTEMPTS: u32 = 3;

/// A webhook, its URL resolved.
pub struct Sink {
    /// The URL (may hold a secret).
    pub url: String,
    /// The body's format.
    pub format: NotifyFormat,
    /// Its events (every one when empty).
    pub events: Vec<NotifyEvent>,
    /// One try's time limit.
    pub timeout: Duration,
}

/// One event to deliver.
struct Message {
    event: NotifyEvent,
    body: String,
}

/// The events a webhook has queued and not yet recorded, oldest first.
type Pending = Arc<Mutex<VecDeque<&'static str>>>;

struct Queue {
    sender: mpsc::UnboundedSender<Message>,
    pending: Pending,
    task: tokio::task::JoinHandle<()>,
    label: String,
    timeout: Duration,
}

/// The webhooks of a run.
pub struct Notifier {
    queues: Vec<(Queue, NotifyFormat, Vec<NotifyEvent>)>,
    runbook: String,
    run_id: String,
    journal: Arc<JournalHandle>,
    redactor: Arc<Redactor>,
}

/// `scheme://host[:port]` of a URL: how a record names a webhook.
fn label(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "(an invalid URL)".into(),
    }
}

impl NotifyEvent {
    fn name(self) -> &'static str {
        match self {
            NotifyEvent::RunStarted => "run_started",
            NotifyEvent::GateWaiting => "gate_waiting",
            NotifyEvent::TriggerFired => "trigger_fired",
            NotifyEvent::RollbackStarted => "rollback_started",
            NotifyEvent::RollbackFinished => "rollback_finished",
            NotifyEvent::RunFinished => "run_finished",
        }
    }
}

impl Notifier {
    /// Starts a task per webhook.
    pub fn start(
        sinks: Vec<Sink>,
        runbook: &str,
        run_id: &str,
        journal: Arc<JournalHandle>,
        redactor: Arc<Redactor>,
    ) -> Notifier {
        let queues = sinks
            .into_iter()
            .enumerate()
            .map(|(i, sink)| {
                let (sender, receiver) = mpsc::unbounded_channel();
                let pending = Pending::default();
                let label = format!("#{} {}", i + 1, label(&sink.url));
                let task = tokio::spawn(deliver_all(
                    sink.url,
                    label.clone(),
                    sink.timeout,
                    receiver,
                    pending.clone(),
                    journal.clone(),
                    redactor.clone(),
                ));
                (
                    Queue {
                        sender,
                        pending,
                        task,
                        label,
                        timeout: sink.timeout,
                    },
                    sink.format,
                    sink.events,
                )
            })
            .collect();
        Notifier {
            queues,
            runbook: runbook.to_owned(),
            run_id: run_id.to_owned(),
            journal,
            redactor,
        }
    }

    /// Queues what `event` tells (nothing for events no webhook is told of).
    pub fn observe(&self, event: &RunEvent) {
        for (kind, fields) in self.describe(event) {
            for (queue, format, events) in &self.queues {
                if !events.is_empty() && !events.contains(&kind) {
                    continue;
                }
                let body = self.redactor.redact(&self.body(kind, &fields, *format));
                let mut pending = queue.pending.lock().expect("not poisoned");
                if queue.sender.send(Message { event: kind, body }).is_ok() {
                    pending.push_back(kind.name());
                }
            }
        }
    }

    /// The events `event` is, each with its fields (`step`, `text`, ...).
    fn describe(&self, event: &RunEvent) -> Vec<(NotifyEvent, Vec<(&'static str, String)>)> {
        match event {
            RunEvent::RunStarted { resumed, steps, .. } => vec![(
                NotifyEvent::RunStarted,
                vec![(
                    "text",
                    format!(
                        "{} ({steps} steps)",
                        if *resumed { "resumed" } else { "started" }
                    ),
                )],
            )],
            // Decided at once (`--yes`, `--approve`): nobody needs to come.
            RunEvent::GateOpened {
                automatic: true, ..
            } => Vec::new(),
            RunEvent::GateOpened {
                gate,
                question,
                evidence,
                ..
            } => {
                let mut text = format!("`{gate}` waits for a decision: {question}");
                if !evidence.is_empty() {
                    text.push_str("\nEvidence:");
                    for line in evidence.iter().rev().take(10).rev() {
                        text.push_str(&format!("\n- {line}"));
                    }
                }
                let approve = format!("redis-move approve {} {gate}", self.run_id);
                text.push_str(&format!("\nApprove: {approve}"));
                vec![(
                    NotifyEvent::GateWaiting,
                    vec![("step", gate.clone()), ("text", text), ("approve", approve)],
                )]
            }
            RunEvent::TriggerFired {
                trigger,
                condition,
                reason,
                outcome,
            } => vec![(
                NotifyEvent::TriggerFired,
                vec![
                    ("step", trigger.clone()),
                    (
                        "text",
                        format!("trigger `{trigger}` fired ({condition}): {reason}; {outcome}"),
                    ),
                ],
            )],
            RunEvent::RollbackStarted { reason } => vec![(
                NotifyEvent::RollbackStarted,
                vec![("text", format!("rollback started: {reason}"))],
            )],
            RunEvent::RunFinished { status, reason, .. } => {
                let mut events = Vec::new();
                if matches!(status, RunStatus::RolledBack | RunStatus::RollbackFailed) {
                    events.push((
                        NotifyEvent::RollbackFinished,
                        vec![(
                            "text",
                            if *status == RunStatus::RolledBack {
                                "rollback finished: everything undone".to_owned()
                            } else {
                                "rollback finished with changes left: manual action needed"
                                    .to_owned()
                            },
                        )],
                    ));
                }
                events.push((
                    NotifyEvent::RunFinished,
                    vec![
                        ("status", format!("{status:?}")),
                        ("text", format!("run finished: {status:?} ({reason})")),
                    ],
                ));
                events
            }
            _ => Vec::new(),
        }
    }

    fn body(&self, kind: NotifyEvent, fields: &[(&str, String)], format: NotifyFormat) -> String {
        let text = fields
            .iter()
            .find(|(k, _)| *k == "text")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        match format {
            NotifyFormat::Slack => serde_json::json!({
                "text": format!("redis-move `{}` run {}: {text}", self.runbook, self.run_id)
            })
            .to_string(),
            NotifyFormat::Json => {
                let mut object = serde_json::Map::new();
                object.insert("event".into(), kind.name().into());
                object.insert("runbook".into(), self.runbook.clone().into());
                object.insert("run_id".into(), self.run_id.clone().into());
                object.insert("at".into(), jiff::Timestamp::now().to_string().into());
                for (k, v) in fields {
                    object.insert((*k).into(), v.clone().into());
                }
                serde_json::Value::Object(object).to_string()
            }
        }
    }

    /// Gives what is still queued at most one `timeout` more (the longest of the
    /// webhooks'), then records what is left as not delivered.
    pub async fn finish(self) {
        let wait = self
            .queues
            .iter()
            .map(|(q, _, _)| q.timeout)
            .max()
            .unwrap_or_default();
        let mut tasks = Vec::new();
        let mut left = Vec::new();
        for (queue, _, _) in self.queues {
            drop(queue.sender);
            left.push((queue.label, queue.pending));
            tasks.push(queue.task);
        }
        let all = futures_util::future::join_all(tasks.iter_mut());
        if tokio::time::timeout(wait, all).await.is_err() {
            for task in &tasks {
                task.abort();
            }
        }
        for (label, pending) in left {
            let events: Vec<&str> = pending.lock().expect("not poisoned").drain(..).collect();
            for event in events {
                let record = NotificationRecord {
                    event: event.into(),
                    webhook: label.clone(),
                    delivered: false,
                    attempts: 0,
                    detail: format!(
                        "queued or being tried when the run ended, not delivered within the {} it was given then",
                        crate::runbook::units::format_duration(wait)
                    ),
                    at: jiff::Timestamp::now(),
                };
                self.journal
                    .update(|j| j.notifications.push(record.clone()));
            }
        }
    }
}

/// POSTs `body`; the status of a 2xx answer, or what went wrong, never with the URL
/// (its path or query may be the webhook's secret).
async fn post(client: &reqwest::Client, url: &str, body: &str) -> Result<u16, String> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .map_err(|e| cause(&e))?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(format!("answered HTTP {}", status.as_u16()))
    }
}

/// What went wrong in a request, from the error and its causes, without the URL.
fn cause(e: &reqwest::Error) -> String {
    let mut words = vec![if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else if e.is_builder() {
        "not a usable URL".to_owned()
    } else {
        "failed".to_owned()
    }];
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        let text = inner.to_string();
        // A cause that names the URL is left out.
        if !text.contains("://") && !words.contains(&text) {
            words.push(text);
        }
        source = inner.source();
    }
    words.join(": ")
}

/// A webhook's task: delivers its queue in order, each message tried [`ATTEMPTS`] times.
async fn deliver_all(
    url: String,
    label: String,
    timeout: Duration,
    mut queue: mpsc::UnboundedReceiver<Message>,
    pending: Pending,
    journal: Arc<JournalHandle>,
    redactor: Arc<Redactor>,
) {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        // A redirect would be followed as a GET without the body: not a delivery.
        .redirect(reqwest::redirect::Policy::none())
        .build();
    while let Some(message) = queue.recv().await {
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            let tried = match &client {
                Ok(client) => post(client, &url, &message.body).await,
                Err(e) => Err(cause(e)),
            };
            match tried {
                Ok(status) => break Ok(status),
                Err(e) if attempts >= ATTEMPTS => break Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(500) * attempts).await,
            }
        };
        let (delivered, detail) = match outcome {
            Ok(status) => (true, format!("HTTP {status}")),
            Err(e) => (false, redactor.redact(&e)),
        };
        let record = NotificationRecord {
            event: message.event.name().into(),
            webhook: label.clone(),
            delivered,
            attempts,
            detail,
            at: jiff::Timestamp::now(),
        };
        if !delivered {
            tracing::warn!(
                "notification `{}` to {label} not delivered: {}",
                record.event,
                record.detail
            );
        }
        journal.update(|j| j.notifications.push(record.clone()));
        pending.lock().expect("not poisoned").pop_front();
    }
}
