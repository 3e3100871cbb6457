//! The source tree's import graph: layers only point down, and no module imports itself back.
//!
//! Layers, highest first (a module may use any module of a lower layer, and a sibling of its own
//! layer as long as no circle forms):
//!
//! ```text
//! main.rs -> cli/ -> (train/, metrics/, data/, generate, hub, plot) -> model/ -> (audio/, text/)
//!         -> (progress, simd, alloc) -> error
//! ```
//!
//! Every `crate::...` and `super::...` path in `src/` (test modules included, comments not)
//! is an edge from its file's module to the deepest module that path names. The test fails on an
//! edge to a higher layer, naming the file and the path, and on any circle of modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

mod common;

/// The layer of a top-level module of `src/` (higher numbers may import lower ones).
fn layer(top: &str) -> usize {
    match top {
        "cli" => 5,
        "train" | "metrics" | "data" | "generate" | "hub" | "plot" => 4,
        "model" => 3,
        "audio" | "text" => 2,
        "progress" | "simd" | "alloc" => 1,
        "error" => 0,
        other => panic!("src/{other}: a new top-level module needs a layer in tests/layers.rs"),
    }
}

/// Module path (`cli::tag`, `model`) of each source file below `src/`, but `lib.rs`/`main.rs`.
fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let mut p = prefix.to_vec();
            p.push(name);
            modules(&path, &p, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            if prefix.is_empty() && (name == "lib" || name == "main") {
                continue;
            }
            let mut p = prefix.to_vec();
            // `a/mod.rs` is module `a` itself.
            if name != "mod" {
                p.push(name);
            }
            out.insert(p.join("::"), std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The source without `//` comments (doc links are not imports) and string contents.
fn code_only(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    for line in src.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut kept = String::new();
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if !in_str && c == '/' && chars.get(i + 1) == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' && !(prev == '\'' && chars.get(i + 1) == Some(&'\'')) {
                in_str = !in_str;
            } else if !in_str {
                kept.push(c);
            }
            prev = if prev == '\\' && c == '\\' { ' ' } else { c };
            i += 1;
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// `crate::a::b::Item` / `super::x` paths in `code`, as absolute module paths (items included).
fn paths(module: &str, code: &str) -> Vec<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = vec![];
    let bytes: Vec<char> = code.chars().collect();
    for (start, kw) in [("crate::", "crate"), ("super::", "super")] {
        let mut from = 0;
        while let Some(pos) = code[from..].find(start) {
            let at = from + pos;
            from = at + start.len();
            if at > 0 && ident(bytes[at - 1]) {
                continue;
            }
            let rest: String = code[at + start.len()..]
                .chars()
                .take_while(|&c| ident(c) || c == ':')
                .collect();
            let base = if kw == "crate" {
                String::new()
            } else {
                // `super` of `a::b` (file b.rs, or b/mod.rs) is `a`.
                module
                    .rsplit_once("::")
                    .map(|(p, _)| p.to_string())
                    .unwrap_or_default()
            };
            let rest = rest.trim_end_matches(':');
            let full = match (base.is_empty(), rest.is_empty()) {
                (true, _) => rest.to_string(),
                (false, true) => base,
                (false, false) => format!("{base}::{rest}"),
            };
            out.push(full);
        }
    }
    out
}

/// The deepest module that `path` names (`model::gpt2::Gpt2` -> `model::gpt2`).
fn resolve<'a>(path: &str, mods: &'a BTreeMap<String, String>) -> Option<&'a str> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    (1..=segs.len()).rev().find_map(|k| {
        mods.get_key_value(&segs[..k].join("::"))
            .map(|(m, _)| m.as_str())
    })
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap()
}

/// Module-level edges (`from -> {to}`), each with one example path for the failure message.
fn graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut mods = BTreeMap::new();
    modules(&common::root().join("src"), &[], &mut mods);
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (module, src) in &mods {
        let code = code_only(src);
        for p in paths(module, &code) {
            // A child using its parent's items (`super::ClipArgs`) is an edge too.
            if let Some(to) = resolve(&p, &mods).filter(|to| to != module) {
                edges
                    .entry(module.clone())
                    .or_default()
                    .entry(to.to_string())
                    .or_insert(p);
            }
        }
        edges.entry(module.clone()).or_default();
    }
    edges
}

#[test]
fn no_module_imports_a_higher_layer() {
    let mut upward = vec![];
    for (from, tos) in graph() {
        for (to, example) in tos {
            let (a, b) = (top(&from), top(&to));
            if a != b && layer(b) > layer(a) {
                upward.push(format!("{from} -> {to} (`{example}`)"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up a layer:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_circle_of_modules() {
    // Tarjan's strongly connected components over file-level modules.
    let g = graph();
    let names: Vec<&String> = g.keys().collect();
    let index_of: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let adj: Vec<Vec<usize>> = names
        .iter()
        .map(|n| {
            g[*n]
                .keys()
                .filter_map(|t| index_of.get(t.as_str()).copied())
                .collect()
        })
        .collect();
    struct State {
        next: usize,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        stack: Vec<usize>,
        on: Vec<bool>,
        circles: Vec<Vec<usize>>,
    }
    fn visit(v: usize, adj: &[Vec<usize>], s: &mut State) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on[v] = true;
        for &w in &adj[v] {
            match s.index[w] {
                None => {
                    visit(w, adj, s);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on[w] => s.low[v] = s.low[v].min(iw),
                _ => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = vec![];
            loop {
                let w = s.stack.pop().unwrap();
                s.on[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                s.circles.push(comp);
            }
        }
    }
    let n = names.len();
    let mut s = State {
        next: 0,
        index: vec![None; n],
        low: vec![0; n],
        stack: vec![],
        on: vec![false; n],
        circles: vec![],
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(v, &adj, &mut s);
        }
    }
    let circles: Vec<String> = s
        .circles
        .iter()
        .map(|c| {
            let set: BTreeSet<&str> = c.iter().map(|&i| names[i].as_str()).collect();
            let edges: Vec<String> = set
                .iter()
                .flat_map(|a| {
                    g[*a]
                        .iter()
                        .filter(|(t, _)| set.contains(t.as_str()))
                        .map(move |(t, p)| format!("{a} -> {t} (`{p}`)"))
                })
                .collect();
            edges.join("; ")
        })
        .collect();
    assert!(
        circles.is_empty(),
        "modules that import each other:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_scanner_reads_code_not_comments_or_strings() {
    // The scanner itself: a path in code counts, one in a comment or a string does not.
    let code = code_only(
        "use crate::cli::progress_bar; // crate::train::x\nlet s = \"crate::data::y\";\n",
    );
    let found = paths("model::adiff", &code);
    assert_eq!(found, vec!["cli::progress_bar".to_string()]);
    assert_eq!(
        paths("cli::tag", "use super::{ClipArgs};"),
        vec!["cli".to_string()]
    );
    assert!(layer("cli") > layer("model"));
}
