//! The step graph as a diagram: Mermaid (renders on GitHub) or Graphviz DOT.

use std::fmt::Write as _;

use super::graph::PhaseGraph;
use crate::runbook::action::Action;
use crate::runbook::model::Runbook;

/// Diagram formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiagramFormat {
    /// Mermaid flowchart.
    Mermaid,
    /// Graphviz DOT.
    Dot,
}

fn node_id(phase: &str, step: &str) -> String {
    let clean = |s: &str| s.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    format!("{}__{}", clean(phase), clean(step))
}

fn escape(text: &str) -> String {
    text.replace('"', "'")
}

/// Renders the runbook's step graph.
pub fn render(runbook: &Runbook, format: DiagramFormat) -> String {
    match format {
        DiagramFormat::Mermaid => mermaid(runbook),
        DiagramFormat::Dot => dot(runbook),
    }
}

/// The steps without predecessors and without successors inside a phase: where the
/// barrier edges from the previous phase land and where the next phase's leave.
fn entries_and_exits(graph: &PhaseGraph, count: usize) -> (Vec<usize>, Vec<usize>) {
    let entries = (0..count)
        .filter(|i| !graph.edges.iter().any(|(_, a)| a == i))
        .collect();
    let exits = (0..count)
        .filter(|i| !graph.edges.iter().any(|(b, _)| b == i))
        .collect();
    (entries, exits)
}

fn mermaid(runbook: &Runbook) -> String {
    let mut out = String::from("flowchart TD\n");
    let mut previous_exits: Vec<String> = Vec::new();
    for phase in &runbook.phases {
        let graph = PhaseGraph::of_phase(phase);
        let title = escape(phase.title.as_deref().unwrap_or(&phase.id));
        let _ = writeln!(
            out,
            "  subgraph {}[\"{title}\"]",
            node_id("phase", &phase.id)
        );
        for step in &phase.steps {
            let id = node_id(&phase.id, &step.id);
            let label = format!(
                "{}<br/><small>{}</small>",
                escape(&step.id),
                step.action.name()
            );
            if matches!(step.action, Action::Gate(_)) {
                let _ = writeln!(out, "    {id}{{\"{label}\"}}");
            } else {
                let _ = writeln!(out, "    {id}[\"{label}\"]");
            }
        }
        for (before, after) in &graph.edges {
            let _ = writeln!(
                out,
                "    {} --> {}",
                node_id(&phase.id, &phase.steps[*before].id),
                node_id(&phase.id, &phase.steps[*after].id)
            );
        }
        let _ = writeln!(out, "  end");
        let (entries, exits) = entries_and_exits(&graph, phase.steps.len());
        for from in &previous_exits {
            for entry in &entries {
                let _ = writeln!(
                    out,
                    "  {from} ==> {}",
                    node_id(&phase.id, &phase.steps[*entry].id)
                );
            }
        }
        previous_exits = exits
            .iter()
            .map(|i| node_id(&phase.id, &phase.steps[*i].id))
            .collect();
    }
    for trigger in &runbook.triggers {
        let id = node_id("trigger", &trigger.id);
        let _ = writeln!(out, "  {id}([\"trigger {}\"])", escape(&trigger.id));
        for phase in &trigger.window.phases {
            let _ = writeln!(out, "  {id} -.-> {}", node_id("phase", phase));
        }
    }
    out
}

fn dot(runbook: &Runbook) -> String {
    let mut out = String::from(
        "digraph runbook {\n  rankdir=TB;\n  node [shape=box, fontname=\"sans-serif\"];\n",
    );
    let mut previous_exits: Vec<String> = Vec::new();
    for phase in &runbook.phases {
        let graph = PhaseGraph::of_phase(phase);
        let title = escape(phase.title.as_deref().unwrap_or(&phase.id));
        let _ = writeln!(
            out,
            "  subgraph cluster_{} {{\n    label=\"{title}\";",
            node_id("phase", &phase.id)
        );
        for step in &phase.steps {
            let shape = if matches!(step.action, Action::Gate(_)) {
                ", shape=diamond"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {} [label=\"{}\\n{}\"{shape}];",
                node_id(&phase.id, &step.id),
                escape(&step.id),
                step.action.name()
            );
        }
        for (before, after) in &graph.edges {
            let _ = writeln!(
                out,
                "    {} -> {};",
                node_id(&phase.id, &phase.steps[*before].id),
                node_id(&phase.id, &phase.steps[*after].id)
            );
        }
        let _ = writeln!(out, "  }}");
        let (entries, exits) = entries_and_exits(&graph, phase.steps.len());
        for from in &previous_exits {
            for entry in &entries {
                let _ = writeln!(
                    out,
                    "  {from} -> {} [style=bold];",
                    node_id(&phase.id, &phase.steps[*entry].id)
                );
            }
        }
        previous_exits = exits
            .iter()
            .map(|i| node_id(&phase.id, &phase.steps[*i].id))
            .collect();
    }
    out.push_str("}\n");
    out
}
