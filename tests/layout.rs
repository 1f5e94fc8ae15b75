//! The crate's layout holds: every top-level module of `src/` sits on a floor and imports
//! only modules on its own floor or below, the graph has no cycles, `common` imports nothing
//! else in the crate, and no command imports another command.
//!
//! The graph is read from the `crate::` and `super::` paths in the source, comments left
//! out. `cargo test --release --test layout -- --nocapture` prints it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The module every other may import and that imports nothing.
const FLOOR: &str = "common";

/// The floors of `src/lib.rs`'s map, top down: a module may import its own floor and those
/// below.
const FLOORS: [(u8, &[&str]); 5] = [
    (4, &["cli", "exit_code", "commands"]),
    (3, &["dispatch", "job", "report"]),
    (2, &["loadgen", "capacity", "server"]),
    (
        1,
        &["client", "results", "dataset", "model", "shutdown", "store"],
    ),
    (0, &["common"]),
];

fn floor_of(module: &str) -> Option<u8> {
    FLOORS
        .iter()
        .find(|(_, modules)| modules.contains(&module))
        .map(|(floor, _)| *floor)
}

/// `name -> the top-level modules it names`, for every top-level module of `src/`.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn source_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// The code of a file without its comments (line comments and doc comments).
fn code_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => line[..at].to_string(),
            None => line.to_string(),
        })
        .collect()
}

/// The identifiers that follow `prefix` in `line` (`crate::loadgen::x` with `crate::`
/// gives `loadgen`).
fn names_after<'a>(line: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut names = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find(prefix) {
        let boundary = at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric();
        rest = &rest[at + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if boundary && end > 0 {
            names.push(&rest[..end]);
        }
    }
    names
}

/// The top-level module a file belongs to (`src/loadgen/http.rs` -> `loadgen`); `None` for
/// the crate root and the binary.
fn top_level(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn graph() -> Graph {
    let src = src();
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let Some(module) = top_level(&src, &file) else {
            continue;
        };
        let edges = graph.entry(module.clone()).or_default();
        for line in code_lines(&file) {
            for name in names_after(&line, "crate::") {
                if name != module {
                    edges.insert(name.to_string());
                }
            }
        }
    }
    graph
}

/// A cycle through `start`, as the path of modules, if there is one.
fn cycle_through(graph: &Graph, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in graph.get(last).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_string());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn the_top_level_modules_import_each_other_without_cycles() {
    let graph = graph();
    for (module, edges) in &graph {
        let names: Vec<&str> = edges.iter().map(String::as_str).collect();
        println!("{module} -> {}", names.join(", "));
    }
    assert!(graph.len() > 5, "read too few modules from {:?}", src());
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|module| cycle_through(&graph, module))
        .map(|cycle| cycle.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn every_module_has_a_floor_and_imports_only_its_floor_or_below() {
    let graph = graph();
    let mut wrong = Vec::new();
    for (module, edges) in &graph {
        let Some(floor) = floor_of(module) else {
            wrong.push(format!(
                "{module} has no floor: place it in FLOORS and src/lib.rs"
            ));
            continue;
        };
        for target in edges {
            match floor_of(target) {
                Some(below) if below <= floor => {}
                Some(above) => wrong.push(format!(
                    "{module} (floor {floor}) imports {target} (floor {above})"
                )),
                None => wrong.push(format!("{module} imports {target}, which has no floor")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn common_imports_nothing_else_in_the_crate() {
    let graph = graph();
    let edges = graph.get(FLOOR).expect("src/common exists");
    assert!(edges.is_empty(), "{FLOOR} imports {edges:?}");
}

#[test]
fn no_command_imports_another() {
    let dir = src().join("commands");
    let mut files = Vec::new();
    source_files(&dir, &mut files);
    let commands: BTreeSet<String> = files
        .iter()
        .map(|file| file.file_stem().unwrap().to_str().unwrap().to_string())
        .collect();
    let mut crossings = Vec::new();
    for file in &files {
        let stem = file.file_stem().unwrap().to_str().unwrap();
        // A command's own parts share its prefix: `run_finish` is part of `run`.
        let command = stem.split('_').next().unwrap();
        if stem == "mod" {
            continue;
        }
        for line in code_lines(file) {
            for name in names_after(&line, "super::") {
                if commands.contains(name) && name.split('_').next() != Some(command) {
                    crossings.push(format!("{stem} uses super::{name}"));
                }
            }
            for name in names_after(&line, "crate::commands::") {
                crossings.push(format!("{stem} uses crate::commands::{name}"));
            }
        }
    }
    assert!(crossings.is_empty(), "{}", crossings.join("\n"));
}

#[test]
fn the_reader_finds_paths_and_skips_comments() {
    assert_eq!(
        names_after("use crate::loadgen::x; f(crate::results::y)", "crate::"),
        ["loadgen", "results"]
    );
    assert_eq!(
        names_after("use mycrate::loadgen;", "crate::"),
        Vec::<&str>::new()
    );
    let mut graph = Graph::new();
    graph.insert("a".into(), ["b".to_string()].into());
    graph.insert("b".into(), ["c".to_string()].into());
    graph.insert("c".into(), ["a".to_string()].into());
    assert_eq!(
        cycle_through(&graph, "a").unwrap(),
        ["a", "b", "c", "a"].map(String::from)
    );
    graph.get_mut("c").unwrap().clear();
    assert_eq!(cycle_through(&graph, "a"), None);
}
