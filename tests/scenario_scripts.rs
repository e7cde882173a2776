//! Runs every scenario script in `tests/scenarios/*.txt` (format: `raft_consensus::sim::script`)
//! and compares each command's output with the expected output written under it.
//!
//! `REWRITE_SCENARIOS=1 cargo test --test scenario_scripts` rewrites the files with the actual
//! output instead: review the diff before committing it.

use std::path::{Path, PathBuf};

use raft_consensus::sim::script::run_script;

/// The environment variable that makes the test rewrite the scripts' expected output.
const REWRITE_VARIABLE: &str = "REWRITE_SCENARIOS";

fn scenario_files() -> Vec<PathBuf> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("{} is readable: {error}", directory.display()))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "txt"))
        .collect();
    files.sort();
    files
}

/// The first line where `expected` and `actual` differ, with some context.
fn first_difference(expected: &str, actual: &str) -> String {
    let expected_lines: Vec<&str> = expected.lines().collect();
    let actual_lines: Vec<&str> = actual.lines().collect();
    let position = expected_lines
        .iter()
        .zip(&actual_lines)
        .position(|(expected, actual)| expected != actual)
        .unwrap_or(expected_lines.len().min(actual_lines.len()));
    let context = position.saturating_sub(5);
    let show = |lines: &[&str]| lines[context..lines.len().min(position + 5)].join("\n");
    format!(
        "first difference at line {}:\n--- expected ---\n{}\n--- actual ---\n{}",
        position + 1,
        show(&expected_lines),
        show(&actual_lines)
    )
}

#[test]
fn every_scenario_script_prints_its_expected_output() {
    let rewrite = std::env::var_os(REWRITE_VARIABLE).is_some();
    let files = scenario_files();
    assert!(!files.is_empty(), "no scenario scripts found");
    let mut failures = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{} is readable: {error}", path.display()));
        let actual = run_script(&text)
            .unwrap_or_else(|error| panic!("{} does not parse: {error}", path.display()));
        if actual == text {
            continue;
        }
        if rewrite {
            std::fs::write(&path, &actual)
                .unwrap_or_else(|error| panic!("{} is writable: {error}", path.display()));
        } else {
            failures.push(format!("{}: {}", path.display(), first_difference(&text, &actual)));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\n(run with {REWRITE_VARIABLE}=1 to accept the actual output)",
        failures.join("\n\n")
    );
}
