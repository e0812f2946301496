//! Results: per-cell summaries, ratios, goals, and the markdown and JSON renderings.

use crate::machine::Machine;
use crate::stats::{self, Summary};
use crate::workloads::{Goal, Unit};
use serde::Serialize;
use std::fmt::Write as _;

/// One side of one row over all rounds.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub label: String,
    /// One value per round, `None` where the round failed.
    pub samples: Vec<Option<f64>>,
    pub summary: Option<Summary>,
    pub errors: Vec<String>,
}

impl Cell {
    pub fn new(label: String) -> Cell {
        Cell { label, samples: Vec::new(), summary: None, errors: Vec::new() }
    }

    pub fn record(&mut self, r: Result<f64, String>) {
        match r {
            Ok(v) => self.samples.push(Some(v)),
            Err(e) => {
                self.samples.push(None);
                self.errors.push(e);
            }
        }
    }

    pub fn finish(&mut self) {
        let ok: Vec<f64> = self.samples.iter().flatten().copied().collect();
        self.summary = stats::summarize(&ok);
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct GoalResult {
    pub goal: Goal,
    pub text: String,
    pub measured: String,
    /// `None` when the needed numbers are missing.
    pub met: Option<bool>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RowResult {
    pub id: String,
    pub workload: String,
    pub variant: String,
    pub unit: Unit,
    pub unit_label: String,
    pub placement: Option<String>,
    pub ours: Option<Cell>,
    pub cpython: Option<Cell>,
    /// The CPython start method or setup, as shown in the table.
    pub cpython_label: Option<String>,
    pub limit: Option<Cell>,
    /// CPython's cost over ours, per round (above 1: we are faster).
    pub speedup_over_cpython: Option<Summary>,
    /// Our cost over the limit's, per round (1 is the machine's limit).
    pub ours_over_limit: Option<Summary>,
    pub goal: Option<GoalResult>,
    pub note: Option<String>,
}

/// Cost ratio `a / b` per round in a unit where less is better; inverted for rates.
fn cost_ratio(unit: Unit, a: &Cell, b: &Cell) -> Option<Summary> {
    let r = if unit.lower_is_better() {
        stats::paired_ratios(&a.samples, &b.samples)
    } else {
        stats::paired_ratios(&b.samples, &a.samples)
    };
    stats::summarize(&r)
}

impl RowResult {
    pub fn finish(&mut self, goal: Option<Goal>) {
        for c in [&mut self.ours, &mut self.cpython, &mut self.limit].into_iter().flatten() {
            c.finish();
        }
        if let (Some(o), Some(p)) = (&self.ours, &self.cpython) {
            self.speedup_over_cpython = cost_ratio(self.unit, p, o);
        }
        if let (Some(o), Some(l)) = (&self.ours, &self.limit) {
            self.ours_over_limit = cost_ratio(self.unit, o, l);
        }
        self.goal = goal.map(|g| {
            let unit = self.unit.label();
            let (text, measured, met) = match g {
                Goal::AtMost(max) => {
                    let m = self.ours.as_ref().and_then(|c| c.summary);
                    (
                        format!("{} {}: multiprocess ≤ {} {unit}", self.workload, self.variant, num(max)),
                        m.map_or("n/a".into(), |s| format!("{} {unit}", num(s.median))),
                        m.map(|s| s.median <= max),
                    )
                }
                Goal::AtLeast(min) => {
                    let m = self.ours.as_ref().and_then(|c| c.summary);
                    (
                        format!("{} {}: multiprocess ≥ {} {unit}", self.workload, self.variant, num(min)),
                        m.map_or("n/a".into(), |s| format!("{} {unit}", num(s.median))),
                        m.map(|s| s.median >= min),
                    )
                }
                Goal::AtLeastTimesRow(other, k) => (
                    format!("{} {}: multiprocess ≥ {}× its value in {other}", self.workload, self.variant, ratio(k)),
                    // Filled in by `resolve_row_goals`, which sees every row.
                    "n/a (that row did not run)".into(),
                    None,
                ),
                Goal::FasterThanCPython(k) => {
                    let r = self.speedup_over_cpython;
                    (
                        format!("{} {}: multiprocess ≥ {}× CPython", self.workload, self.variant, ratio(k)),
                        r.map_or("n/a".into(), |s| format!("{}× CPython", ratio(s.median))),
                        r.map(|s| s.median >= k),
                    )
                }
                Goal::AtMostTimesLimit(k) => {
                    let r = self.ours_over_limit;
                    (
                        format!("{} {}: multiprocess ≤ {}× limit", self.workload, self.variant, ratio(k)),
                        r.map_or("n/a".into(), |s| format!("{}× limit", ratio(s.median))),
                        r.map(|s| s.median <= k),
                    )
                }
            };
            GoalResult { goal: g, text, measured, met }
        });
    }

    /// Ours in this row over ours in `other`, per round, as "how many times better".
    fn better_than(&self, other: &RowResult) -> Option<Summary> {
        let (a, b) = (self.ours.as_ref()?, other.ours.as_ref()?);
        let r = if self.unit.lower_is_better() {
            stats::paired_ratios(&b.samples, &a.samples)
        } else {
            stats::paired_ratios(&a.samples, &b.samples)
        };
        stats::summarize(&r)
    }

    pub fn errors(&self) -> impl Iterator<Item = (&'static str, &String)> {
        let sides = [("multiprocess", &self.ours), ("CPython", &self.cpython), ("limit", &self.limit)];
        sides.into_iter().flat_map(|(name, c)| c.iter().flat_map(move |c| c.errors.iter().map(move |e| (name, e))))
    }
}

/// Fills in the goals that compare a row with another ([`Goal::AtLeastTimesRow`]), once every
/// row is finished. The rows of one round ran one after the other, so the ratio is per round.
pub fn resolve_row_goals(rows: &mut [RowResult]) {
    for i in 0..rows.len() {
        let Some(GoalResult { goal: Goal::AtLeastTimesRow(other, k), .. }) = rows[i].goal else { continue };
        let Some(j) = rows.iter().position(|r| r.id == other) else { continue };
        let Some(r) = rows[i].better_than(&rows[j]) else { continue };
        if let Some(g) = rows[i].goal.as_mut() {
            g.measured = if r.n == 1 {
                format!("{}× {other}", ratio(r.median))
            } else {
                format!("{}× ({}–{}) {other}", ratio(r.median), ratio(r.min), ratio(r.max))
            };
            g.met = Some(r.median >= k);
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub quick: bool,
    pub rounds: u32,
    pub command: String,
    pub wall_seconds: f64,
    pub rows: Vec<RowResult>,
}

/// A value with about three significant digits, thousands separated.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    if x.abs() >= 1000.0 {
        let s = format!("{:.0}", x.abs());
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if x < 0.0 { format!("-{out}") } else { out }
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A ratio: two decimals below 10, then whole numbers.
pub fn ratio(x: f64) -> String {
    if x >= 10.0 { format!("{x:.0}") } else { format!("{x:.2}") }
}

fn spread(s: &Summary, f: fn(f64) -> String) -> String {
    if s.n == 1 { f(s.median) } else { format!("{} ({}–{})", f(s.median), f(s.min), f(s.max)) }
}

fn cell_text(c: &Option<Cell>, extra: Option<&str>) -> String {
    match c {
        None => "–".into(),
        Some(c) => {
            let v = match &c.summary {
                Some(s) => spread(s, num),
                None => "failed".into(),
            };
            match extra {
                Some(e) if !e.is_empty() => format!("{v} · {e}"),
                _ => v,
            }
        }
    }
}

fn ratio_text(r: &Option<Summary>) -> String {
    r.as_ref().map_or("–".into(), |s| {
        if s.n == 1 {
            format!("{}×", ratio(s.median))
        } else {
            format!("{}× ({}–{})", ratio(s.median), ratio(s.min), ratio(s.max))
        }
    })
}

impl Report {
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut o = String::new();
        let kind = if self.quick { "quick smoke run (times not meaningful)" } else { "full run" };
        let _ = writeln!(o, "## multiprocess benchmark: {kind}\n");
        let _ = writeln!(o, "- when: {}, commit {}", m.started_utc, m.git_commit);
        let _ = writeln!(
            o,
            "- machine: nproc {} (this process may use CPUs {:?}), CPU {}, kernel {}, Python {}",
            m.nproc, m.cpus_allowed, m.cpu_model, m.kernel, m.python
        );
        let _ = writeln!(o, "- load average (1, 5, 15 min): before {}, after {}", m.load_before, m.load_after);
        let _ = writeln!(
            o,
            "- bench process resident size at start: {:.1} MiB (the process the fork rows fork)",
            m.bench_rss_kib as f64 / 1024.0
        );
        let _ = writeln!(
            o,
            "- {} rounds, {:.0} s; each round runs every row's sides back to back, the side that goes first rotating from round to round",
            self.rounds, self.wall_seconds
        );
        let _ = writeln!(o, "- command: `{}`\n", self.command);
        let _ = writeln!(
            o,
            "| workload | multiprocess | CPython (start method) | limit | speed-up over CPython | ours / limit |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|");
        for r in &self.rows {
            let name = format!("{} {} [{}]", r.workload, r.variant, r.unit_label);
            let limit_label = r.limit.as_ref().map(|c| c.label.clone());
            let _ = writeln!(
                o,
                "| {name} | {} | {} | {} | {} | {} |",
                cell_text(&r.ours, None),
                cell_text(&r.cpython, r.cpython_label.as_deref()),
                cell_text(&r.limit, limit_label.as_deref()),
                ratio_text(&r.speedup_over_cpython),
                ratio_text(&r.ours_over_limit),
            );
        }
        let _ = writeln!(
            o,
            "\nEach cell: median (min–max) over the rounds. Ratios are per round (the three sides of a \
             round ran back to back), then median (min–max). Speed-up over CPython is CPython's cost \
             over ours (above 1: multiprocess is faster); ours / limit is our cost over the raw-syscall \
             limit's (1 is the machine's limit)."
        );
        if self.rows.iter().any(|r| r.placement.is_some()) {
            let _ = writeln!(
                o,
                "\nPlacement: in the rows that name a placement, both processes of every side (parent and \
                 echo or partner child; multiprocess, CPython and limit alike) are pinned with \
                 sched_setaffinity as named, because a wake-up on another core costs far more than one \
                 on the same core on these machines, and a spinning wait only pays off when the other \
                 process has a CPU of its own. The other rows are not pinned."
            );
        }
        for r in &self.rows {
            if let Some(n) = &r.note {
                let _ = writeln!(o, "\n{}: {n}", r.id);
            }
        }
        let goals: Vec<&GoalResult> = self.rows.iter().filter_map(|r| r.goal.as_ref()).collect();
        if !goals.is_empty() {
            let _ = writeln!(o, "\n### Project targets (reported, never asserted)\n");
            let _ = writeln!(o, "| target | measured (median) | met |");
            let _ = writeln!(o, "|---|---|---|");
            for g in goals {
                let met = match g.met {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "n/a",
                };
                let _ = writeln!(o, "| {} | {} | {met} |", g.text, g.measured);
            }
        }
        let errors: Vec<String> = self
            .rows
            .iter()
            .flat_map(|r| r.errors().map(move |(side, e)| format!("- {} ({side}): {e}", r.id)))
            .collect();
        if !errors.is_empty() {
            let _ = writeln!(o, "\n### Failures\n");
            for e in errors {
                let _ = writeln!(o, "{e}");
            }
        }
        o
    }
}

/// The rows the project README quotes as its headline, in its order: a row id and what the
/// README calls the workload. Rows that did not run are left out.
pub const HEADLINE: &[(&str, &str)] = &[
    ("process_start_join/forkserver", "start + join a process, forkserver"),
    ("process_start_join/spawn", "start + join a process, spawn"),
    ("pipe_pingpong/typed", "pipe round trip, `send`/`recv`, one core"),
    ("pipe_pingpong/typed-cross-core", "pipe round trip, `send`/`recv`, across cores"),
    ("lock_uncontended/lock", "`Lock` acquire + release"),
    ("lock_contended/cross-core", "`Lock`, 2 processes contending"),
    ("sync_pingpong/event-cross-core", "`Event` ping-pong across cores"),
    ("queue_small/1-producer", "`Queue`, small messages, 1 producer"),
    ("queue_1m/1-producer-gbps", "`Queue`, 1 MiB messages"),
    ("pool_startup_shutdown/forkserver", "`Pool(2)` start + shutdown, forkserver"),
    ("pool_map/default-chunks", "`Pool(2).map` of 1,000,000 tasks"),
    ("pool_apply/unpinned", "`Pool(1).apply` round trip"),
    ("managers_dict/unpinned", "manager dict set + get"),
];

fn median_text(c: &Option<Cell>, unit: &str) -> String {
    match c.as_ref().and_then(|c| c.summary) {
        Some(s) => format!("{} {unit}", num(s.median)),
        None => "–".into(),
    }
}

fn median_ratio(r: &Option<Summary>) -> String {
    r.as_ref().map_or("–".into(), |s| format!("{}×", ratio(s.median)))
}

impl Report {
    /// The headline rows ([`HEADLINE`]) as a short table of medians, the one the README quotes.
    pub fn headline_markdown(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "| workload | multiprocess | CPython | speed-up over CPython | ours / limit |");
        let _ = writeln!(o, "|---|---|---|---|---|");
        for (id, name) in HEADLINE {
            let Some(r) = self.rows.iter().find(|r| r.id == *id) else { continue };
            let _ = writeln!(
                o,
                "| {name} | {} | {} | {} | {} |",
                median_text(&r.ours, &r.unit_label),
                median_text(&r.cpython, &r.unit_label),
                median_ratio(&r.speedup_over_cpython),
                median_ratio(&r.ours_over_limit),
            );
        }
        o
    }

    /// `bench/RESULTS.md`: the headline, the chart, then the whole table with the machine and
    /// the command. `chart` is the chart's path relative to the file.
    pub fn results_markdown(&self, chart: &str) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "<!-- Written by the benchmark harness (bench/src/report.rs) with --write-results: do not edit by hand. \
             Hand-written analysis goes to docs/performance.md. -->\n"
        );
        let _ = writeln!(o, "# Benchmark results\n");
        if self.quick {
            let _ = writeln!(
                o,
                "**This is a quick smoke run (`--quick`: few iterations, {} rounds, cross-core rows left out): \
                 its times are not meaningful. A full run (`cargo run --release -p multiprocess-bench -- \
                 --write-results`, about eight minutes on a quiet machine) replaces it.**\n",
                self.rounds
            );
        }
        let _ = writeln!(
            o,
            "Each workload measured three ways in one run, rounds interleaved: multiprocess, CPython's \
             `multiprocessing` doing the same, and the machine's limit (the same mechanism in raw syscalls). \
             `bench/README.md` explains the method and every column; `docs/performance.md` discusses the \
             results.\n"
        );
        let _ = writeln!(o, "## Headline (medians)\n");
        o.push_str(&self.headline_markdown());
        let _ = writeln!(o, "\n![Speed-up over CPython and ours / limit per workload]({chart})\n");
        o.push_str(&self.markdown().replacen("## multiprocess benchmark", "## All rows: multiprocess benchmark", 1));
        o
    }
}
