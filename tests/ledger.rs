//! The conformance ledger (`tests/CONFORMANCE.md`) stays true: every test it names exists in
//! the file it names, its counts add up, every priority case is ported or explained, and (where
//! the catalogue is at hand, `../shared/CONFORMANCE.md`) every case of the catalogue has a row.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One row of the ledger: the case id, whether it is a priority case, and its status text.
struct Row {
    case: String,
    priority: bool,
    status: String,
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("tests/CONFORMANCE.md")).unwrap();
    let mut rows = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("| ") else { continue };
        let Some((case, status)) = rest.split_once(" | ") else { continue };
        if case == "case" || !case.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
            continue;
        }
        let priority = case.ends_with('★');
        let case = case.trim_end_matches('★').trim().to_string();
        rows.push(Row { case, priority, status: status.trim_end_matches('|').trim().to_string() });
    }
    rows
}

/// The kind of a status: the word before its colon.
fn kind(status: &str) -> &str {
    ["ported", "deliberately different", "not applicable", "deferred"]
        .into_iter()
        .find(|k| status.starts_with(&format!("{k}:")))
        .unwrap_or("unknown")
}

/// Each `tests/<file>.rs` the status names, with the test names that follow it.
fn named_tests(status: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = status;
    while let Some(at) = rest.find("tests/") {
        let after = &rest[at..];
        let end = after.find(".rs").map_or(after.len(), |e| e + 3);
        let file = after[..end].to_string();
        rest = &after[end..];
        let mut names = Vec::new();
        for token in rest.trim_start_matches('`').split([' ', ',']).filter(|t| !t.is_empty()) {
            // `name::{fork,spawn}` names the start methods a case runs under.
            let token = token.trim_matches('`').split("::").next().unwrap_or_default();
            let is_name = token.contains('_')
                && token.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && token.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !is_name {
                break;
            }
            names.push(token.to_string());
        }
        out.push((file, names));
    }
    out
}

#[test]
fn every_named_test_exists() {
    let mut missing = Vec::new();
    for row in rows() {
        for (file, names) in named_tests(&row.status) {
            let Ok(source) = std::fs::read_to_string(Path::new(ROOT).join(&file)) else {
                missing.push(format!("{}: no file {file}", row.case));
                continue;
            };
            for name in names {
                let defined = [format!("fn {name}("), format!("fn {name} "), format!("mod {name} ")]
                    .iter()
                    .any(|def| source.contains(def.as_str()));
                if !defined {
                    missing.push(format!("{}: {file} has no test {name}", row.case));
                }
            }
        }
        if kind(&row.status) == "ported" && named_tests(&row.status).iter().all(|(_, n)| n.is_empty()) {
            missing.push(format!("{}: ported, but names no test", row.case));
        }
    }
    assert!(missing.is_empty(), "the ledger names tests that do not exist:\n{}", missing.join("\n"));
}

#[test]
fn counts_add_up_and_priority_cases_are_settled() {
    let rows = rows();
    let mut all: BTreeMap<&str, usize> = BTreeMap::new();
    let mut priority: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &rows {
        let k = kind(&row.status);
        assert_ne!(
            k, "unknown",
            "{}: status must be ported, deliberately different, not applicable or deferred",
            row.case
        );
        *all.entry(k).or_default() += 1;
        if row.priority {
            *priority.entry(k).or_default() += 1;
            if k == "deferred" {
                assert!(
                    row.status.contains("managers"),
                    "{}: a priority case may be deferred only to the managers, which come later",
                    row.case
                );
            }
        }
    }
    let n = |m: &BTreeMap<&str, usize>, k: &str| m.get(k).copied().unwrap_or(0);
    let summary = format!(
        "{} cases: {} ported, {} deliberately different, {} not applicable, {} deferred. Priority cases: {} ({} ported, {} deliberately different, {} not applicable, {} deferred).",
        rows.len(),
        n(&all, "ported"),
        n(&all, "deliberately different"),
        n(&all, "not applicable"),
        n(&all, "deferred"),
        priority.values().sum::<usize>(),
        n(&priority, "ported"),
        n(&priority, "deliberately different"),
        n(&priority, "not applicable"),
        n(&priority, "deferred"),
    );
    let text = std::fs::read_to_string(Path::new(ROOT).join("tests/CONFORMANCE.md")).unwrap();
    assert!(text.contains(&summary), "the ledger's summary line should read:\n{summary}");
    let ids: BTreeSet<&str> = rows.iter().map(|r| r.case.as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "a case has two rows");
}

#[test]
fn every_catalogue_case_has_a_row() {
    let catalogue = Path::new(ROOT).join("../shared/CONFORMANCE.md");
    let Ok(text) = std::fs::read_to_string(&catalogue) else {
        eprintln!("no catalogue at {}: skipped", catalogue.display());
        return;
    };
    let ours: BTreeSet<String> = rows().into_iter().map(|r| r.case).collect();
    let mut missing = Vec::new();
    for line in text.lines() {
        let Some((id, _)) = line.split_once(" | ") else { continue };
        let is_id = id.split_once('-').is_some_and(|(area, num)| {
            !area.is_empty()
                && area.chars().all(|c| c.is_ascii_uppercase())
                && !num.is_empty()
                && num.chars().all(|c| c.is_ascii_digit())
        });
        if is_id && !ours.contains(id) {
            missing.push(id.to_string());
        }
    }
    assert!(missing.is_empty(), "catalogue cases with no row in the ledger: {missing:?}");
}

/// The guarantees (docs/guarantees.md, which the README links to) name tests: each exists, as
/// a `fn` or a `mod` of the test files (or, for a `src/` path it names, of that file).
#[test]
fn guarantees_name_real_tests() {
    let section = std::fs::read_to_string(Path::new(ROOT).join("docs/guarantees.md")).unwrap();
    assert!(section.starts_with("# Guarantees"), "docs/guarantees.md is the guarantees");
    let mut sources = String::new();
    for dir in ["tests", "src/queues", "src/managers"] {
        for entry in std::fs::read_dir(Path::new(ROOT).join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut named = 0;
    let mut missing = Vec::new();
    for quoted in section.split('`').skip(1).step_by(2) {
        let name = quoted.trim_end_matches("::*");
        let is_test_name = name.contains('_')
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !name.starts_with('_');
        // Names of the API the section quotes, not tests.
        const API: [&str; 3] = ["is_alive", "wait_for", "task_timeout"];
        if !is_test_name || API.contains(&name) {
            continue;
        }
        named += 1;
        let defined = [format!("fn {name}("), format!("fn {name} "), format!("mod {name} ")]
            .iter()
            .any(|def| sources.contains(def.as_str()));
        if !defined {
            missing.push(name.to_string());
        }
    }
    assert!(named >= 40, "docs/guarantees.md names only {named} tests");
    assert!(missing.is_empty(), "docs/guarantees.md names tests that do not exist: {missing:?}");
}
