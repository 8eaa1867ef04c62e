//! `report.html`: the report as one self-contained page (inline CSS and SVG, no script,
//! nothing fetched): the run's timeline (phases and steps as bars, gate decisions,
//! trigger firings, the rollback) and each trigger's values over time against its
//! threshold, then the steps, gates and triggers as tables. Built from the report, whose
//! text the journal already holds redacted.

use std::fmt::Write;

use super::model::{Report, ReportSeries, ReportStep};
use crate::exec::journal::StepStatus;
use crate::runbook::units::{format_elapsed, format_number, format_size};

/// Width of the drawings, and of the label column of the timeline.
const WIDTH: f64 = 960.0;
const LABELS: f64 = 190.0;
const ROW: f64 = 22.0;

/// HTML-escapes `text`.
pub(crate) fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub(crate) fn color(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded | StepStatus::Recovered => "#2e7d32",
        StepStatus::Failed | StepStatus::CompensationFailed => "#c62828",
        StepStatus::Compensated => "#6a1b9a",
        StepStatus::Skipped => "#9e9e9e",
        _ => "#f9a825",
    }
}

pub(crate) fn status_name(status: StepStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{status:?}"))
}

/// How a label at `x` is anchored: near the right edge, it ends there.
fn anchor(x: f64) -> &'static str {
    if x > WIDTH - 60.0 { "end" } else { "middle" }
}

/// Where a label beside a mark at `x` starts, and how it is anchored (to its left near
/// the right edge).
fn beside(x: f64) -> (f64, &'static str) {
    if x > WIDTH - 80.0 {
        (x - 3.0, "end")
    } else {
        (x + 3.0, "start")
    }
}

pub(crate) fn clock(t: jiff::Timestamp) -> String {
    t.strftime("%H:%M:%S").to_string()
}

/// The time span the drawings cover.
pub(crate) struct Span {
    start: jiff::Timestamp,
    seconds: f64,
}

impl Span {
    pub(crate) fn of(report: &Report) -> Span {
        let mut end = report.finished_at.unwrap_or(report.started_at);
        let steps = report
            .phases
            .iter()
            .flat_map(|p| p.steps.iter())
            .chain(report.rollback_steps.iter());
        for step in steps {
            for t in [step.started_at, step.finished_at].into_iter().flatten() {
                end = end.max(t);
            }
        }
        for t in report
            .gates
            .iter()
            .map(|g| g.at)
            .chain(report.triggers.iter().map(|t| t.at))
            .chain(report.rollback.iter().map(|r| r.at))
            .chain(
                report
                    .series
                    .iter()
                    .flat_map(|s| s.points.iter().map(|p| p.at)),
            )
        {
            end = end.max(t);
        }
        let seconds = end.duration_since(report.started_at).as_secs_f64().max(1.0);
        Span {
            start: report.started_at,
            seconds,
        }
    }

    /// The end of the drawing.
    fn end(&self) -> jiff::Timestamp {
        self.start
            .checked_add(jiff::SignedDuration::from_secs_f64(self.seconds))
            .unwrap_or(self.start)
    }

    /// The x of `t` in a drawing whose plot starts at `left`.
    fn x(&self, t: jiff::Timestamp, left: f64) -> f64 {
        let s = t
            .duration_since(self.start)
            .as_secs_f64()
            .clamp(0.0, self.seconds);
        left + s / self.seconds * (WIDTH - left - 10.0)
    }

    fn ticks(&self, svg: &mut String, left: f64, y: f64) {
        for i in 0..=5 {
            let s = self.seconds * f64::from(i) / 5.0;
            let x = left + f64::from(i) / 5.0 * (WIDTH - left - 10.0);
            let t = self
                .start
                .checked_add(jiff::SignedDuration::from_secs_f64(s))
                .unwrap_or(self.start);
            let _ = write!(
                svg,
                r##"<line x1="{x:.1}" y1="0" x2="{x:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="{}" fill="#555">{}</text>"##,
                y + 12.0,
                anchor(x),
                clock(t)
            );
        }
    }
}

/// The timeline: a row per step (phases as headings), bars from start to end, gate
/// decisions as diamonds, trigger firings as red lines, the rollback as a band.
fn timeline(report: &Report, span: &Span) -> String {
    let mut rows: Vec<(String, Option<&ReportStep>)> = Vec::new();
    for phase in &report.phases {
        if phase.steps.iter().any(|s| s.started_at.is_some()) {
            rows.push((
                phase.title.clone().unwrap_or_else(|| phase.id.clone()),
                None,
            ));
            rows.extend(phase.steps.iter().map(|s| (s.id.clone(), Some(s))));
        }
    }
    if !report.rollback_steps.is_empty() {
        rows.push(("rollback steps".into(), None));
        rows.extend(
            report
                .rollback_steps
                .iter()
                .map(|s| (s.id.clone(), Some(s))),
        );
    }
    let height = rows.len() as f64 * ROW + 30.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="timeline" viewBox="0 0 {WIDTH} {height:.0}" width="{WIDTH}" height="{height:.0}" role="img" aria-label="timeline">"#
    );
    span.ticks(&mut svg, LABELS, height - 25.0);
    // The rollback, behind everything.
    if let (Some(first), Some(last)) = (
        report.rollback.iter().map(|r| r.at).min(),
        report.rollback.iter().map(|r| r.at).max(),
    ) {
        let (x1, x2) = (span.x(first, LABELS), span.x(last, LABELS));
        let (tx, ta) = beside(x1);
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="0" width="{:.1}" height="{:.1}" fill="#6a1b9a" fill-opacity="0.10"/><text x="{tx:.1}" y="10" font-size="10" text-anchor="{ta}" fill="#6a1b9a">rollback</text>"##,
            x1 - 3.0,
            (x2 - x1) + 6.0,
            height - 25.0,
        );
    }
    for (i, (label, step)) in rows.iter().enumerate() {
        let y = i as f64 * ROW;
        match step {
            None => {
                let _ = write!(
                    svg,
                    r##"<text x="4" y="{:.1}" font-size="12" font-weight="bold" fill="#222">{}</text>"##,
                    y + 15.0,
                    esc(label)
                );
            }
            Some(step) => {
                let _ = write!(
                    svg,
                    r##"<text x="14" y="{:.1}" font-size="11" fill="#333">{}</text>"##,
                    y + 15.0,
                    esc(label)
                );
                if let Some(start) = step.started_at {
                    // A step the run left unfinished (interrupted, rolled back): to the
                    // end of the drawing.
                    let end = step.finished_at.unwrap_or_else(|| span.end());
                    let (x1, x2) = (span.x(start, LABELS), span.x(end, LABELS));
                    let took = step
                        .finished_at
                        .map(|f| format_elapsed(f.duration_since(start).unsigned_abs()))
                        .unwrap_or_default();
                    let _ = write!(
                        svg,
                        r#"<rect x="{x1:.1}" y="{:.1}" width="{:.1}" height="12" rx="2" fill="{}"><title>{}: {} {}</title></rect>"#,
                        y + 5.0,
                        (x2 - x1).max(2.0),
                        color(step.status),
                        esc(&step.id),
                        status_name(step.status),
                        took
                    );
                }
                for gate in report.gates.iter().filter(|g| g.gate == step.id) {
                    let x = span.x(gate.at, LABELS);
                    let fill = match gate.decision {
                        crate::exec::journal::GateDecision::Go => "#1565c0",
                        crate::exec::journal::GateDecision::NoGo => "#c62828",
                    };
                    let _ = write!(
                        svg,
                        r#"<path d="M{x:.1} {:.1} l6 6 l-6 6 l-6 -6 z" fill="{fill}"><title>gate {}: {:?} by {}</title></path>"#,
                        y + 5.0,
                        esc(&gate.gate),
                        gate.decision,
                        esc(&gate.who)
                    );
                }
            }
        }
    }
    for fired in &report.triggers {
        let x = span.x(fired.at, LABELS);
        let (tx, ta) = beside(x);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="0" x2="{x:.1}" y2="{:.1}" stroke="#c62828" stroke-width="2"><title>{}: {}</title></line><text x="{tx:.1}" y="{:.1}" font-size="10" text-anchor="{ta}" fill="#c62828">{}</text>"##,
            height - 25.0,
            esc(&fired.trigger),
            esc(&fired.reason),
            height - 28.0,
            esc(&fired.trigger)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// One trigger's values against its threshold; bad samples in red.
pub(crate) fn chart(series: &ReportSeries, span: &Span) -> String {
    const H: f64 = 180.0;
    const LEFT: f64 = 80.0;
    let numbers: Vec<f64> = series
        .points
        .iter()
        .filter_map(|p| p.value)
        .chain(series.threshold)
        .collect();
    let show = |v: f64| {
        if series.bytes {
            format_size(v)
        } else if v.fract() == 0.0 || v.abs() >= 100.0 {
            format_number(v.round())
        } else {
            format!("{v:.2}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_owned()
        }
    };
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {:.0}" width="{WIDTH}" height="{:.0}" role="img" aria-label="{}">"#,
        H + 30.0,
        H + 30.0,
        esc(&series.trigger)
    );
    span.ticks(&mut svg, LEFT, H);
    let (mut low, mut high) = numbers
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
    if numbers.is_empty() {
        (low, high) = (0.0, 1.0);
    }
    if (high - low).abs() < f64::EPSILON {
        high = low + 1.0;
    }
    let pad = (high - low) * 0.1;
    let (low, high) = (
        (low - pad).max(if low >= 0.0 { 0.0 } else { f64::MIN }),
        high + pad,
    );
    let y = |v: f64| H - (v - low) / (high - low) * (H - 10.0);
    for v in [low, (low + high) / 2.0, high] {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="#555">{}</text>"##,
            LEFT - 4.0,
            y(v) + 3.0,
            esc(&show(v))
        );
    }
    if let Some(threshold) = series.threshold {
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#c62828" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="#c62828">threshold {}</text>"##,
            y(threshold),
            WIDTH - 10.0,
            y(threshold),
            WIDTH - 12.0,
            y(threshold) - 4.0,
            esc(&show(threshold))
        );
    }
    let line: Vec<String> = series
        .points
        .iter()
        .filter_map(|p| {
            p.value
                .map(|v| format!("{:.1},{:.1}", span.x(p.at, LEFT), y(v)))
        })
        .collect();
    if !line.is_empty() {
        let _ = write!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="#1565c0" stroke-width="1.5"/>"##,
            line.join(" ")
        );
    }
    for point in &series.points {
        let x = span.x(point.at, LEFT);
        match point.value {
            Some(v) => {
                let _ = write!(
                    svg,
                    r##"<circle cx="{x:.1}" cy="{:.1}" r="{}" fill="{}"><title>{} {}</title></circle>"##,
                    y(v),
                    if point.bad { 3.5 } else { 2.0 },
                    if point.bad { "#c62828" } else { "#1565c0" },
                    clock(point.at),
                    esc(&show(v))
                );
            }
            None => {
                let _ = write!(
                    svg,
                    r##"<text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#c62828">×<title>{} no value</title></text>"##,
                    H - 2.0,
                    clock(point.at)
                );
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The whole page.
pub fn render(report: &Report) -> String {
    let span = Span::of(report);
    let mut page = String::new();
    let title = report
        .title
        .clone()
        .unwrap_or_else(|| report.runbook.clone());
    let _ = write!(
        page,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{} — {}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1000px; color: #222; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }} h2 {{ font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }}
.meta {{ color: #555; }} .status {{ font-weight: bold; padding: 2px 8px; border-radius: 4px; color: #fff; }}
table {{ border-collapse: collapse; width: 100%; font-size: 13px; }} td, th {{ border-bottom: 1px solid #eee; padding: 4px 6px; text-align: left; vertical-align: top; }}
code {{ font-size: 12px; }} svg {{ display: block; margin: 8px 0; background: #fcfcfc; border: 1px solid #eee; }}
.legend span {{ display: inline-block; margin-right: 14px; }} .legend i {{ display: inline-block; width: 12px; height: 10px; margin-right: 4px; }}
</style></head><body>
"#,
        esc(&report.runbook),
        esc(&report.run_id)
    );
    let status_color = match report.status {
        crate::exec::journal::RunStatus::Succeeded => "#2e7d32",
        crate::exec::journal::RunStatus::RolledBack => "#6a1b9a",
        _ => "#c62828",
    };
    let _ = write!(
        page,
        r#"<h1>{}</h1><p class="meta">run <code>{}</code> of <code>{}</code> by {} · started {} · <span class="status" style="background:{status_color}">{}</span> {}</p>"#,
        esc(&title),
        esc(&report.run_id),
        esc(&report.runbook),
        esc(&report.operator),
        report.started_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        esc(super::markdown::status_text(report.status)),
        esc(&report.reason)
    );
    page.push_str("<h2>Timeline</h2>");
    page.push_str(r##"<p class="legend"><span><i style="background:#2e7d32"></i>succeeded</span><span><i style="background:#c62828"></i>failed</span><span><i style="background:#6a1b9a"></i>undone</span><span><i style="background:#9e9e9e"></i>skipped</span><span><i style="background:#1565c0"></i>gate go</span><span><i style="background:#c62828;width:3px"></i>trigger fired</span></p>"##);
    page.push_str(&timeline(report, &span));
    if !report.series.is_empty() {
        page.push_str("<h2>Triggers over time</h2>");
        for series in &report.series {
            let _ = write!(
                page,
                "<h3>{} <small><code>{}</code></small></h3>",
                esc(&series.label),
                esc(&series.trigger)
            );
            page.push_str(&chart(series, &span));
        }
    }
    page.push_str("<h2>Steps</h2><table><tr><th>Phase</th><th>Step</th><th>Status</th><th>Started</th><th>Took</th><th>Value / detail</th></tr>");
    for phase in &report.phases {
        for step in &phase.steps {
            let took = match (step.started_at, step.finished_at) {
                (Some(s), Some(f)) => format_elapsed(f.duration_since(s).unsigned_abs()),
                _ => String::new(),
            };
            let _ = write!(
                page,
                "<tr><td>{}</td><td><code>{}</code><br>{}</td><td>{}</td><td>{}</td><td>{took}</td><td>{}{}</td></tr>",
                esc(&phase.id),
                esc(&step.id),
                esc(&step.operation),
                status_name(step.status),
                step.started_at.map(clock).unwrap_or_default(),
                esc(step.value.as_deref().unwrap_or("")),
                if step.detail.is_empty() {
                    String::new()
                } else {
                    format!("<br><small>{}</small>", esc(&step.detail))
                }
            );
        }
    }
    page.push_str("</table>");
    if !report.gates.is_empty() {
        page.push_str("<h2>Gates</h2><table><tr><th>Gate</th><th>Decision</th><th>By</th><th>How</th><th>At</th></tr>");
        for gate in &report.gates {
            let _ = write!(
                page,
                "<tr><td><code>{}</code></td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&gate.gate),
                gate.decision,
                esc(&gate.who),
                esc(&gate.how),
                clock(gate.at)
            );
        }
        page.push_str("</table>");
    }
    if !report.triggers.is_empty() {
        page.push_str("<h2>Triggers fired</h2><table><tr><th>Trigger</th><th>At</th><th>Why</th><th>Then</th></tr>");
        for fired in &report.triggers {
            let _ = write!(
                page,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&fired.trigger),
                clock(fired.at),
                esc(&fired.reason),
                esc(&fired.outcome)
            );
        }
        page.push_str("</table>");
    }
    if !report.rollback.is_empty() {
        page.push_str(
            "<h2>Rollback</h2><table><tr><th>Step</th><th>Undo</th><th>Status</th><th>At</th></tr>",
        );
        for action in &report.rollback {
            let _ = write!(
                page,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&action.step),
                esc(&action.operation),
                esc(&action.status),
                clock(action.at)
            );
        }
        page.push_str("</table>");
    }
    page.push_str("<p class=\"meta\">report.html by redis-move: self-contained, nothing fetched.</p></body></html>\n");
    page
}
