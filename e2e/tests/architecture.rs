//! The shape of `src/`, checked: modules import each other without cycles, forwarding and
//! configuration never reach up into the pipeline or the journal, only the edge shell names the
//! platform, and functions stay short enough to read.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name → source text of every file in `src/` (`edge` for `src/edge/`).
fn sources() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            out.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    let mut edge = String::new();
    for entry in std::fs::read_dir(src.join("edge")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            edge.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    out.insert("edge".into(), edge);
    out
}

/// The code outside `#[cfg(test)] mod tests`, which is allowed to reach anywhere.
fn non_test(text: &str) -> &str {
    text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text)
}

/// Modules named as `crate::<module>` in a module's non-test code.
fn imports(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code = non_test(text);
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if modules.contains(&name) {
            found.insert(name);
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let sources = sources();
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    sources
        .iter()
        .map(|(name, text)| {
            let mut deps = imports(text, &modules);
            deps.remove(name);
            (name.clone(), deps)
        })
        .collect()
}

#[test]
fn modules_import_each_other_without_a_cycle() {
    let graph = graph();
    // Depth-first search; a module met again while still on the path closes a cycle.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(module) {
            return;
        }
        if let Some(at) = path.iter().position(|m| m == module) {
            panic!("module cycle: {} -> {module}", path[at..].join(" -> "));
        }
        path.push(module.to_owned());
        for dep in graph.get(module).into_iter().flatten() {
            visit(dep, graph, path, done);
        }
        path.pop();
        done.insert(module.to_owned());
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done);
    }
    assert!(done.len() >= 15, "every module was read: {done:?}");
}

#[test]
fn forwarding_and_configuration_never_reach_up_into_the_pipeline_or_the_journal() {
    let graph = graph();
    for module in ["forward", "config"] {
        let deps = &graph[module];
        for upper in ["pipeline", "journal", "edge"] {
            assert!(!deps.contains(upper), "{module} imports {upper}");
        }
    }
    // Only the shell and the pipeline know the pipeline.
    for (module, deps) in &graph {
        if deps.contains("pipeline") {
            assert_eq!(module, "edge", "{module} imports the pipeline");
        }
    }
}

#[test]
fn only_the_edge_shell_names_the_platform() {
    for (module, text) in sources() {
        if module == "edge" || module == "lib" {
            continue;
        }
        for platform in ["wasm_bindgen", "js_sys", "web_sys", "worker::"] {
            assert!(!text.contains(platform), "{module} names {platform}");
        }
        assert!(
            !non_test(&text).contains("Instant::now") && !non_test(&text).contains("SystemTime"),
            "{module} reads a clock (time is an input)"
        );
    }
}

/// `(name, lines)` of every function outside test modules, by brace depth from its `fn` line.
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = non_test(text).lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        let is_fn = line.starts_with("fn ")
            || line.starts_with("pub fn ")
            || line.starts_with("pub(crate) fn ")
            || line.starts_with("async fn ");
        if !is_fn {
            i += 1;
            continue;
        }
        let name = line
            .split("fn ")
            .nth(1)
            .unwrap_or("")
            .split(['(', '<'])
            .next();
        let (mut depth, mut opened, start) = (0i32, false, i);
        while i < lines.len() {
            for c in lines[i].chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            // A declaration without a body (a trait method) ends at its `;`.
            if (opened && depth == 0) || (!opened && lines[i].trim_end().ends_with(';')) {
                break;
            }
            i += 1;
        }
        out.push((name.unwrap_or("").to_owned(), i - start + 1));
        i += 1;
    }
    out
}

#[test]
fn functions_stay_short_and_the_request_flow_reads_on_one_screen() {
    let sources = sources();
    let mut long = Vec::new();
    for (module, text) in &sources {
        for (name, lines) in function_lengths(text) {
            if lines > 120 {
                long.push(format!("{module}::{name} ({lines} lines)"));
            }
        }
    }
    assert!(long.is_empty(), "over 120 lines: {long:?}");
    let flow = function_lengths(&sources["pipeline"])
        .into_iter()
        .find(|(name, _)| name == "flow")
        .expect("pipeline::flow exists");
    assert!(flow.1 < 60, "pipeline::flow has {} lines", flow.1);
    assert!(flow.1 > 10, "the length counter found the body");
}
