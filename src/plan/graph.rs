//! The step graph of a phase: which step waits for which, the order a run follows, and
//! the cycles that make a phase impossible to run.
//!
//! In a sequential phase each step waits for the one declared before it (plus its
//! `needs`); in a parallel phase only `needs` orders steps. Phases themselves are
//! barriers: every step of a phase waits for every step of the phase before.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::runbook::model::Phase;

/// The dependencies of a phase's steps, by index in declared order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseGraph {
    /// `(before, after)`: `after` starts only when `before` has finished.
    pub edges: Vec<(usize, usize)>,
    /// A run order: dependencies first, otherwise declared order.
    pub order: Vec<usize>,
    /// Cycles, each as the steps along it (first step repeated at the end).
    pub cycles: Vec<Vec<usize>>,
}

impl PhaseGraph {
    /// Builds the graph of `count` steps where `needs[i]` lists the steps `i` waits for.
    pub fn new(count: usize, needs: &[Vec<usize>], sequential: bool) -> PhaseGraph {
        let mut edges: Vec<(usize, usize)> = Vec::new();
        if sequential {
            edges.extend((1..count).map(|i| (i - 1, i)));
        }
        for (after, befores) in needs.iter().enumerate() {
            for &before in befores {
                if !edges.contains(&(before, after)) {
                    edges.push((before, after));
                }
            }
        }
        let mut graph: DiGraph<usize, ()> = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..count).map(|i| graph.add_node(i)).collect();
        for &(before, after) in &edges {
            graph.add_edge(nodes[before], nodes[after], ());
        }
        let cycles = tarjan_scc(&graph)
            .into_iter()
            .filter(|scc| scc.len() > 1 || graph.contains_edge(scc[0], scc[0]))
            .map(|scc| cycle_path(&edges, &scc.iter().map(|n| graph[*n]).collect::<Vec<_>>()))
            .collect::<Vec<_>>();
        let order = stable_order(count, &edges);
        PhaseGraph {
            edges,
            order,
            cycles,
        }
    }

    /// The graph of a validated phase (unknown `needs` were rejected by validation).
    pub fn of_phase(phase: &Phase) -> PhaseGraph {
        let index_of = |id: &str| phase.steps.iter().position(|s| s.id == id);
        let needs: Vec<Vec<usize>> = phase
            .steps
            .iter()
            .map(|s| s.needs.iter().filter_map(|n| index_of(n)).collect())
            .collect();
        PhaseGraph::new(phase.steps.len(), &needs, phase.parallel.is_none())
    }

    /// The steps `step` waits for directly.
    pub fn dependencies(&self, step: usize) -> impl Iterator<Item = usize> + '_ {
        self.edges
            .iter()
            .filter(move |(_, a)| *a == step)
            .map(|(b, _)| *b)
    }

    /// Whether `ancestor` always finishes before `step` starts.
    pub fn runs_before(&self, ancestor: usize, step: usize) -> bool {
        let mut stack: Vec<usize> = self.dependencies(step).collect();
        let mut seen = vec![step];
        while let Some(s) = stack.pop() {
            if s == ancestor {
                return true;
            }
            if !seen.contains(&s) {
                seen.push(s);
                stack.extend(self.dependencies(s));
            }
        }
        false
    }
}

/// Kahn's algorithm, always taking the lowest declared index that is ready: the order
/// is deterministic and follows the file where dependencies allow. Steps in a cycle are
/// appended in declared order so that callers still see every step.
fn stable_order(count: usize, edges: &[(usize, usize)]) -> Vec<usize> {
    let mut indegree = vec![0usize; count];
    for &(_, after) in edges {
        indegree[after] += 1;
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..count)
        .filter(|i| indegree[*i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(count);
    while let Some(Reverse(next)) = ready.pop() {
        order.push(next);
        for &(before, after) in edges {
            if before == next {
                indegree[after] -= 1;
                if indegree[after] == 0 {
                    ready.push(Reverse(after));
                }
            }
        }
    }
    for i in 0..count {
        if !order.contains(&i) {
            order.push(i);
        }
    }
    order
}

/// A closed path through the members of a strongly connected component.
fn cycle_path(edges: &[(usize, usize)], members: &[usize]) -> Vec<usize> {
    let start = *members.iter().min().unwrap_or(&0);
    let mut path = vec![start];
    let mut current = start;
    let mut visited = vec![start];
    loop {
        let mut successors: Vec<usize> = edges
            .iter()
            .filter(|(b, a)| *b == current && members.contains(a))
            .map(|(_, a)| *a)
            .collect();
        successors.sort_unstable();
        if successors.contains(&start) {
            path.push(start);
            return path;
        }
        match successors.into_iter().find(|s| !visited.contains(s)) {
            Some(next) => {
                visited.push(next);
                path.push(next);
                current = next;
            }
            None => {
                // Dead end inside the component: report its members instead.
                let mut members = members.to_vec();
                members.sort_unstable();
                members.push(members[0]);
                return members;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_phases_follow_declared_order() {
        let graph = PhaseGraph::new(3, &[vec![], vec![], vec![]], true);
        assert_eq!(graph.order, vec![0, 1, 2]);
        assert!(graph.runs_before(0, 2));
        assert!(graph.cycles.is_empty());
    }

    #[test]
    fn parallel_phases_follow_needs_then_declared_order() {
        // 0 needs 2; 1 is free.
        let graph = PhaseGraph::new(3, &[vec![2], vec![], vec![]], false);
        assert_eq!(graph.order, vec![1, 2, 0]);
        assert!(graph.runs_before(2, 0));
        assert!(!graph.runs_before(1, 0));
    }

    #[test]
    fn cycles_are_reported_as_paths() {
        // 0 -> 1 -> 2 -> 0, 3 alone.
        let graph = PhaseGraph::new(4, &[vec![2], vec![0], vec![1], vec![]], false);
        assert_eq!(graph.cycles, vec![vec![0, 1, 2, 0]]);
        assert_eq!(graph.order.len(), 4);
        let self_loop = PhaseGraph::new(1, &[vec![0]], false);
        assert_eq!(self_loop.cycles, vec![vec![0, 0]]);
    }
}
