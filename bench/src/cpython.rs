//! The CPython side: `cpython_side.py` (kept beside this crate, stdlib only), run with
//! `python3` once per round and cell; it prints one line of JSON with the measured value.

use serde::Deserialize;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The script, found next to this crate's manifest.
pub fn default_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cpython_side.py")
}

#[derive(Clone, Debug)]
pub struct Python {
    pub exe: String,
    pub script: PathBuf,
}

#[derive(Deserialize)]
struct Reply {
    python: String,
    /// The measured figures: `value`, and for workloads that time several phases in one run,
    /// one more per phase.
    #[serde(flatten)]
    figures: serde_json::Map<String, serde_json::Value>,
}

/// One run's figures, to read one row's value from (see [`Python::run`]).
pub type Figures = serde_json::Map<String, serde_json::Value>;

/// The figure `field` of a reply.
pub fn figure(figures: &Figures, field: &str) -> Result<f64, String> {
    figures.get(field).and_then(|v| v.as_f64()).ok_or_else(|| format!("the CPython side printed no {field:?}"))
}

impl Python {
    fn call(&self, args: &[String]) -> Result<Reply, String> {
        let out = Command::new(&self.exe)
            .arg(&self.script)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.exe))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(3).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!("{} {} failed ({}): {}", self.exe, args.join(" "), out.status, tail.join(" | ")));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
        serde_json::from_str(line).map_err(|e| format!("bad output from the CPython side ({e}): {stdout:?}"))
    }

    /// The interpreter's version, which also checks that the script runs.
    pub fn version(&self) -> Result<String, String> {
        Ok(self.call(&["version".into()])?.python)
    }

    /// One run of the script: its figures (`value` in the row's unit, and maybe more).
    pub fn run(&self, args: &[String]) -> Result<Figures, String> {
        Ok(self.call(args)?.figures)
    }
}
