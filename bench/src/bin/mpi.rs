//! The MPI benchmark (issue 18): `Pool::mpi()` beside mpi4py.futures and the raw MPI limit,
//! on the same ranks. Run it without `mpirun`; it runs each side under `mpirun -n RANKS
//! --oversubscribe` itself, interleaved over the rounds, and prints a markdown table of
//! medians (min–max) and per-round ratios:
//!
//! ```text
//! cargo run --release -p multiprocess-bench --features mpi --bin mpi              # 3 rounds, shared memory
//! cargo run --release -p multiprocess-bench --features mpi --bin mpi -- --tcp     # TCP loopback
//! cargo run --release -p multiprocess-bench --features mpi --bin mpi -- --rounds 5 --ranks 3 --no-mpi4py
//! ```
//!
//! Under `mpirun`, the same binary is one side (`ours` or `raw`) on every rank, and rank 0
//! prints `BENCH {json}`. The measures: `map_chunked(square, 0..20_000, 1)` in tasks/s (raw:
//! one postcard message per task each way, a window of 16 per worker), `map(square,
//! 0..1_000_000)` with the default chunking in tasks/s (raw: the same chunks, postcard
//! `Vec<u64>` each way), and the `apply` round trip in µs (raw: an 8-byte ping-pong).

use mpi::traits::*;
use multiprocess::Pool;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

const CHUNK1_ITEMS: u64 = 20_000;
const MAP_ITEMS: u64 = 1_000_000;
const APPLIES: u32 = 2_000;

fn square(x: u64) -> u64 {
    x * x
}

fn main() {
    multiprocess::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ours") => ours(),
        Some("raw") => raw(),
        _ => drive(&args),
    }
}

fn emit(chunk1: f64, chunked: f64, apply_us: f64) {
    println!("BENCH {{\"chunk1\": {chunk1}, \"chunked\": {chunked}, \"apply_us\": {apply_us}}}");
}

/// `Pool::mpi()`: rank 0 measures, the others serve.
fn ours() {
    let pool = Pool::mpi().expect("Pool::mpi()");
    assert_eq!(pool.map(square, 0..200u64).unwrap()[199], 199 * 199);

    let start = Instant::now();
    let r = pool.map_chunked(square, 0..CHUNK1_ITEMS, 1).unwrap();
    let chunk1 = CHUNK1_ITEMS as f64 / start.elapsed().as_secs_f64();
    assert_eq!(r[r.len() - 1], (CHUNK1_ITEMS - 1).pow(2));

    let start = Instant::now();
    let r = pool.map(square, 0..MAP_ITEMS).unwrap();
    let chunked = MAP_ITEMS as f64 / start.elapsed().as_secs_f64();
    assert_eq!(r[r.len() - 1], (MAP_ITEMS - 1).pow(2));

    for i in 0..100u64 {
        pool.apply(square, (i,)).unwrap();
    }
    let start = Instant::now();
    for i in 0..APPLIES as u64 {
        assert_eq!(pool.apply(square, (i,)).unwrap(), i * i);
    }
    let apply_us = start.elapsed().as_secs_f64() / APPLIES as f64 * 1e6;
    pool.close();
    pool.join().unwrap();
    drop(pool);
    emit(chunk1, chunked, apply_us);
}

const TASK: i32 = 1;
const STOP: i32 = 2;
/// Tasks in flight per worker in the one-message-per-task measure.
const WINDOW: u64 = 16;

/// The limit: rank 0 and the workers exchange the same messages with plain send/receive.
fn raw() {
    let universe = mpi::initialize().expect("MPI");
    let world = universe.world();
    let (rank, size) = (world.rank(), world.size());
    if rank != 0 {
        let root = world.process_at_rank(0);
        loop {
            let (bytes, status) = root.matched_probe().matched_receive_vec::<u8>();
            if status.tag() == STOP {
                break;
            }
            let items: Vec<u64> = postcard::from_bytes(&bytes).unwrap();
            let results: Vec<u64> = items.iter().map(|&x| square(x)).collect();
            root.send_with_tag(&postcard::to_allocvec(&results).unwrap()[..], TASK);
        }
        return;
    }
    let workers = (size - 1) as u64;
    // One task a message, WINDOW in flight per worker.
    let run = |items: &[Vec<u64>], window: u64| -> Vec<u64> {
        let mut out = Vec::with_capacity(items.len());
        let mut next = 0usize;
        for w in 1..=workers {
            for _ in 0..window {
                if next < items.len() {
                    world
                        .process_at_rank(w as i32)
                        .send_with_tag(&postcard::to_allocvec(&items[next]).unwrap()[..], TASK);
                    next += 1;
                }
            }
        }
        let mut done = 0;
        while done < items.len() {
            let (bytes, status) = world.any_process().receive_vec::<u8>();
            done += 1;
            let results: Vec<u64> = postcard::from_bytes(&bytes).unwrap();
            out.extend(results);
            if next < items.len() {
                world
                    .process_at_rank(status.source_rank())
                    .send_with_tag(&postcard::to_allocvec(&items[next]).unwrap()[..], TASK);
                next += 1;
            }
        }
        out
    };
    let singles: Vec<Vec<u64>> = (0..CHUNK1_ITEMS).map(|x| vec![x]).collect();
    run(&singles[..200], WINDOW);
    let start = Instant::now();
    let r = run(&singles, WINDOW);
    let chunk1 = CHUNK1_ITEMS as f64 / start.elapsed().as_secs_f64();
    assert_eq!(r.len(), CHUNK1_ITEMS as usize);

    // CPython's default chunking, as Pool::map: ceil(n / (4 × workers)); one in flight per
    // worker (two large blocking sends each way would deadlock).
    let chunksize = MAP_ITEMS.div_ceil(4 * workers);
    let start = Instant::now();
    let chunks: Vec<Vec<u64>> =
        (0..MAP_ITEMS).collect::<Vec<_>>().chunks(chunksize as usize).map(<[u64]>::to_vec).collect();
    let r = run(&chunks, 1);
    let chunked = MAP_ITEMS as f64 / start.elapsed().as_secs_f64();
    assert_eq!(r.len(), MAP_ITEMS as usize);

    // The round trip: one postcard task to rank 1 and its result back.
    let one = world.process_at_rank(1);
    for i in 0..100u64 {
        one.send_with_tag(&postcard::to_allocvec(&vec![i]).unwrap()[..], TASK);
        let _ = one.receive_vec::<u8>();
    }
    let start = Instant::now();
    for i in 0..APPLIES as u64 {
        one.send_with_tag(&postcard::to_allocvec(&vec![i]).unwrap()[..], TASK);
        let (bytes, _) = one.receive_vec::<u8>();
        assert_eq!(postcard::from_bytes::<Vec<u64>>(&bytes).unwrap()[0], i * i);
    }
    let apply_us = start.elapsed().as_secs_f64() / APPLIES as f64 * 1e6;
    for w in 1..=workers {
        world.process_at_rank(w as i32).send_with_tag(&[0u8][..], STOP);
    }
    emit(chunk1, chunked, apply_us);
}

type Figures = BTreeMap<String, f64>;

fn parse(output: &str) -> Option<Figures> {
    let line = output.lines().find_map(|l| l.strip_prefix("BENCH "))?;
    let mut figures = Figures::new();
    for part in line.trim().trim_start_matches('{').trim_end_matches('}').split(',') {
        let (k, v) = part.split_once(':')?;
        figures.insert(k.trim().trim_matches('"').to_string(), v.trim().parse().ok()?);
    }
    Some(figures)
}

/// Runs the sides under mpirun, round after round, and prints the table.
fn drive(args: &[String]) {
    let mut rounds = 3;
    let mut ranks = 3;
    let mut tcp = false;
    let mut python = "python3".to_string();
    let mut mpi4py = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--ranks" => ranks = it.next().and_then(|v| v.parse().ok()).expect("--ranks N"),
            "--tcp" => tcp = true,
            "--python" => python = it.next().expect("--python EXE").clone(),
            "--no-mpi4py" => mpi4py = false,
            other => {
                eprintln!("unknown option {other}; options: --rounds N --ranks N --tcp --python EXE --no-mpi4py");
                std::process::exit(2);
            }
        }
    }
    let me = std::env::current_exe().expect("current_exe");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mpi4py_side.py");
    let mpirun = |program: &[&str]| -> Result<Figures, String> {
        let mut cmd = Command::new("mpirun");
        cmd.args(["-n", &ranks.to_string(), "--oversubscribe"]);
        if tcp {
            cmd.args(["--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo"]);
            cmd.env("OMPI_MCA_oob_tcp_if_include", "lo");
        }
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
        }
        let out = cmd.args(program).output().map_err(|e| format!("mpirun: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse(&text).ok_or_else(|| format!("{program:?}: no BENCH line; {}", String::from_utf8_lossy(&out.stderr)))
    };
    let sides: Vec<(&str, Vec<String>)> = {
        let mut s = vec![
            ("ours", vec![me.display().to_string(), "ours".into()]),
            ("raw", vec![me.display().to_string(), "raw".into()]),
        ];
        if mpi4py {
            s.push((
                "mpi4py",
                vec![python.clone(), "-m".into(), "mpi4py.futures".into(), script.display().to_string()],
            ));
        }
        s
    };
    let mut samples: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let mut per_round: Vec<BTreeMap<(&str, &str), f64>> = Vec::new();
    for round in 1..=rounds {
        let mut this = BTreeMap::new();
        for (side, program) in &sides {
            let program: Vec<&str> = program.iter().map(String::as_str).collect();
            match mpirun(&program) {
                Ok(figures) => {
                    eprintln!("round {round} {side}: {figures:?}");
                    for (k, v) in figures {
                        let k: &str = match k.as_str() {
                            "chunk1" => "chunk1",
                            "chunked" => "chunked",
                            _ => "apply_us",
                        };
                        samples.entry((side, k)).or_default().push(v);
                        this.insert((*side, k), v);
                    }
                }
                Err(e) => eprintln!("round {round} {side}: FAILED {e}"),
            }
        }
        per_round.push(this);
    }
    let median = |v: &[f64]| -> Option<(f64, f64, f64)> {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| (v[v.len() / 2], v[0], v[v.len() - 1]))
    };
    let cell = |side: &str, k: &str| -> String {
        match samples.get(&(side, k)).and_then(|v| median(v)) {
            Some((m, lo, hi)) if k == "apply_us" => format!("{m:.1} ({lo:.1}–{hi:.1}) µs"),
            Some((m, lo, hi)) => format!("{} ({}–{}) tasks/s", rate(m), rate(lo), rate(hi)),
            None => "–".into(),
        }
    };
    // Per-round ratios, "how many times better are we": rates ours/theirs, times theirs/ours.
    let ratio = |k: &str, other: &str| -> String {
        let v: Vec<f64> = per_round
            .iter()
            .filter_map(|r| {
                let (a, b) = (r.get(&("ours", k))?, r.get(&(other, k))?);
                Some(if k == "apply_us" { b / a } else { a / b })
            })
            .collect();
        match median(&v) {
            Some((m, lo, hi)) => format!("{m:.2}× ({lo:.2}–{hi:.2})"),
            None => "–".into(),
        }
    };
    println!(
        "MPI pool, {ranks} ranks ({} worker ranks), {}, {rounds} rounds, medians (min–max); nproc {}",
        ranks - 1,
        if tcp { "TCP loopback (btl tcp,self)" } else { "shared memory (Open MPI's default btl)" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("| measure | Pool::mpi() | mpi4py.futures | raw MPI limit | ours vs mpi4py | ours vs raw | target |");
    println!("|---|---|---|---|---|---|---|");
    let rows = [
        ("chunk size 1 (map_chunked 20,000 squares, 1 a chunk)", "chunk1", "≥ 30× mpi4py"),
        ("default chunking (map 1,000,000 squares; mpi4py chunksize=1000)", "chunked", "≥ 5× mpi4py, ≥ 0.5× raw"),
        ("apply round trip (raw: one postcard ping-pong)", "apply_us", "≤ 30 µs"),
    ];
    for (name, k, target) in rows {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {target} |",
            cell("ours", k),
            cell("mpi4py", k),
            cell("raw", k),
            ratio(k, "mpi4py"),
            ratio(k, "raw")
        );
    }
    println!();
    println!("Ratios are taken per round (above 1: ours is faster), then their median (min–max).");
}

fn rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}
