//! The benchmark harness: every workload measured on three sides in the same run, interleaved
//! round by round — multiprocess, CPython's multiprocessing (`cpython_side.py`), and the limit
//! (the same mechanism with raw syscalls) — then a markdown table and a JSON file.
//!
//! ```text
//! cargo run --release -p multiprocess-bench [-- --quick] [--only WORKLOAD] [--json PATH]
//! ```
//!
//! See bench/README.md for what each column means.

mod chart;
mod cpython;
mod limit;
mod machine;
mod pin;
mod report;
mod shm;
mod stats;
mod workloads;

use cpython::Python;
use report::{Cell, Report, RowResult};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use workloads::{Config, Row};

/// A bench binary started by the spawn limit exits here, before `main` and before anything
/// else this binary would do: what is measured is loading and starting a process of our size.
#[used]
#[unsafe(link_section = ".init_array")]
static EXIT_NOW_ON_LOAD: extern "C" fn() = exit_now_if_asked;

extern "C" fn exit_now_if_asked() {
    // SAFETY: getenv reads the environment, which nothing changes this early; _exit ends the
    // process without running anything else.
    unsafe {
        if !libc::getenv(c"MULTIPROCESS_BENCH_EXIT_NOW".as_ptr()).is_null() {
            libc::_exit(0);
        }
    }
}

struct Options {
    quick: bool,
    only: Vec<String>,
    json: Option<PathBuf>,
    rounds: Option<u32>,
    python: String,
    cpython: bool,
    list: bool,
    write_results: bool,
}

const USAGE: &str = "\
usage: cargo run --release -p multiprocess-bench -- [options]

  --quick          short smoke run: few iterations, 2 rounds; times are not meaningful
  --only NAME      run only rows whose workload or id starts with NAME (repeatable, or
                   comma-separated), e.g. --only pipe_pingpong --only process_start_join/spawn
  --json PATH      where to write the JSON results (default bench/results/latest.json, or
                   bench/results/quick.json with --quick); the markdown table and the chart
                   go beside it with the extensions .md and .svg
  --rounds N       rounds (default 7, or 2 with --quick)
  --python EXE     the CPython interpreter (default python3)
  --no-cpython     leave the CPython column out
  --write-results  also write bench/RESULTS.md (headline, chart, whole table) and
                   bench/results/chart.svg, the committed results the README links to
  --list           list the row ids and exit
";

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        quick: false,
        only: Vec::new(),
        json: None,
        rounds: None,
        python: "python3".into(),
        cpython: true,
        list: false,
        write_results: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => o.quick = true,
            "--only" => o.only.extend(value("--only")?.split(',').filter(|s| !s.is_empty()).map(String::from)),
            "--json" => o.json = Some(PathBuf::from(value("--json")?)),
            "--rounds" => {
                let n: u32 = value("--rounds")?.parse().map_err(|e| format!("--rounds: {e}"))?;
                o.rounds = Some(n.max(1));
            }
            "--python" => o.python = value("--python")?,
            "--no-cpython" => o.cpython = false,
            "--list" => o.list = true,
            "--write-results" => o.write_results = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}

fn selected(row: &Row, only: &[String]) -> bool {
    only.is_empty() || only.iter().any(|f| row.workload == f || row.id.starts_with(f.as_str()))
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn main() -> ExitCode {
    // First: a child started by spawn or forkserver re-executes this binary and takes its role here.
    multiprocess::init();
    if std::env::var_os(limit::EXIT_NOW_VAR).is_some() {
        // Belt and braces for the constructor above.
        // SAFETY: ends the process at once.
        unsafe { libc::_exit(0) }
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprint!("{USAGE}");
            return if e.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) };
        }
    };
    match run(&opts, &args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the benchmark; `Ok(false)` when some measurement failed (the results are written all
/// the same, with the failures listed).
fn run(opts: &Options, args: &[String]) -> Result<bool, String> {
    let started = Instant::now();
    let manifest_dir = env!("CARGO_MANIFEST_DIR");
    let load_before = machine::loadavg();
    let rss = machine::rss_kib();
    let cfg = Config { quick: opts.quick, cpus: pin::allowed_cpus() };
    let mut rows: Vec<Row> = workloads::all(&cfg)?.into_iter().filter(|r| selected(r, &opts.only)).collect();
    if opts.list {
        for name in workloads::NAMES {
            println!("{name}");
        }
        for r in &rows {
            println!("  {}", r.id);
        }
        return Ok(true);
    }
    if rows.is_empty() {
        return Err(format!("--only {:?} matches no row (try --list)", opts.only));
    }

    let python = Python { exe: opts.python.clone(), script: cpython::default_script() };
    let (python_version, python_ok) = if opts.cpython {
        match python.version() {
            Ok(v) => (v, Ok(())),
            Err(e) => ("unavailable".into(), Err(format!("the CPython side cannot run: {e}"))),
        }
    } else {
        ("not run (--no-cpython)".into(), Ok(()))
    };
    if let Err(e) = &python_ok {
        eprintln!("warning: {e}");
    }

    let rounds = opts.rounds.unwrap_or(if opts.quick { 2 } else { 7 });
    let mut results: Vec<RowResult> = rows
        .iter()
        .map(|r| RowResult {
            id: r.id.clone(),
            workload: r.workload.into(),
            variant: r.variant.clone(),
            unit: r.unit,
            unit_label: r.unit.label().into(),
            placement: r.placement.map(|p| p.describe()),
            ours: r.ours.as_ref().map(|s| Cell::new(s.label.clone())),
            cpython: r.cpython.as_ref().filter(|_| opts.cpython).map(|_| Cell::new("CPython".into())),
            cpython_label: r.cpython.as_ref().filter(|_| opts.cpython).map(|p| p.label.clone()),
            limit: r.limit.as_ref().map(|s| Cell::new(s.label.clone())),
            speedup_over_cpython: None,
            ours_over_limit: None,
            goal: None,
            note: r.note.clone(),
        })
        .collect();

    for round in 1..=rounds {
        // Rows that read different figures of one run of the script (the phases of one
        // workload) share that run within the round.
        let mut py_runs: HashMap<Vec<String>, Result<cpython::Figures, String>> = HashMap::new();
        for (row, res) in rows.iter_mut().zip(results.iter_mut()) {
            let mut line = format!("[round {round}/{rounds}] {}:", row.id);
            let mut show = |side: &str, r: &Result<f64, String>| match r {
                Ok(v) => line.push_str(&format!(" {side} {}", report::num(*v))),
                Err(e) => line.push_str(&format!(" {side} FAILED ({e})")),
            };
            // The sides take turns going first: whatever one side leaves behind (a warm cache,
            // a CPU the scheduler now prefers, a Python interpreter just exited) must not
            // always help or hurt the same one.
            for turn in 0..3 {
                match (turn + round as usize) % 3 {
                    0 => {
                        if let (Some(side), Some(cell)) = (row.ours.as_mut(), res.ours.as_mut()) {
                            let r = (side.measure)();
                            show("multiprocess", &r);
                            cell.record(r);
                        }
                    }
                    1 => {
                        if let (Some(py), Some(cell)) = (row.cpython.as_ref(), res.cpython.as_mut()) {
                            let r = match &python_ok {
                                Ok(()) => py_runs
                                    .entry(py.args.clone())
                                    .or_insert_with(|| python.run(&py.args))
                                    .clone()
                                    .and_then(|f| cpython::figure(&f, py.field)),
                                Err(e) => Err(e.clone()),
                            };
                            show("CPython", &r);
                            cell.record(r);
                        }
                    }
                    _ => {
                        if let (Some(side), Some(cell)) = (row.limit.as_mut(), res.limit.as_mut()) {
                            let r = (side.measure)();
                            show("limit", &r);
                            cell.record(r);
                        }
                    }
                }
            }
            eprintln!("{line} {}", row.unit.label());
        }
    }
    for (row, res) in rows.iter().zip(results.iter_mut()) {
        res.finish(row.goal);
    }
    report::resolve_row_goals(&mut results);

    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let machine = machine::Machine {
        nproc: machine::nproc(),
        cpus_allowed: cfg.cpus.clone(),
        cpu_model: machine::cpu_model(),
        kernel: machine::kernel(),
        python: python_version,
        load_before,
        load_after: machine::loadavg(),
        bench_rss_kib: rss,
        git_commit: machine::git_commit(manifest_dir),
        started_unix: now,
        started_utc: machine::utc_text(now),
    };
    let mut command = String::from("cargo run --release -p multiprocess-bench");
    if !args.is_empty() {
        command.push_str(" -- ");
        command.push_str(&args.join(" "));
    }
    let report = Report {
        machine,
        quick: opts.quick,
        rounds,
        command,
        wall_seconds: started.elapsed().as_secs_f64(),
        rows: results,
    };

    let json_path = opts.json.clone().unwrap_or_else(|| {
        PathBuf::from(manifest_dir).join("results").join(if opts.quick { "quick.json" } else { "latest.json" })
    });
    let md_path = json_path.with_extension("md");
    let svg_path = json_path.with_extension("svg");
    let md = report.markdown();
    print!("{md}");
    let json = serde_json::to_string_pretty(&report).map_err(|e| format!("JSON: {e}"))?;
    write_file(&json_path, &(json + "\n"))?;
    write_file(&md_path, &md)?;
    chart::write_svg(&report, &svg_path)?;
    eprintln!("wrote {}, {} and {}", json_path.display(), md_path.display(), svg_path.display());
    if opts.write_results {
        // The committed results: only when asked, so that a smoke run leaves them alone.
        let results_md = PathBuf::from(manifest_dir).join("RESULTS.md");
        let chart_svg = PathBuf::from(manifest_dir).join("results").join("chart.svg");
        write_file(&results_md, &report.results_markdown("results/chart.svg"))?;
        chart::write_svg(&report, &chart_svg)?;
        eprintln!("wrote {} and {}", results_md.display(), chart_svg.display());
    }
    Ok(report.rows.iter().all(|r| r.errors().next().is_none()))
}
