//! The rule that keeps the engine's layers apart, checked: every engine
//! module imports only from the floors below its own (docs/ARCHITECTURE.md,
//! "Layers"), so no import circle can come back unnoticed. The face
//! (`src/cli*`, `src/main.rs`) sits on top and may use anything.

use std::path::Path;

/// The engine's floors, from the ground up (docs/ARCHITECTURE.md).
const FLOORS: &[&[&str]] = &[
    &["relpath", "digest", "progress", "pool", "merkle"],
    &["source"],
    &["crypt", "keys"],
    &["manifest", "dest"],
    &["ledger", "lock", "proofs", "witness"],
    &["databox", "schedule"],
    &["scan", "split", "verify", "rollback", "restore", "report"],
    // A transfer ends with the verify stage (`--verify`).
    &["transfer", "set"],
];

fn floor(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

/// The top-level modules `text` names through `crate::` (test modules
/// left out), including those in grouped imports.
fn imports(text: &str) -> Vec<String> {
    let code = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c, d::{e, f}}`: the names at depth 0.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.push(item);
        } else {
            found.push(rest.to_owned());
        }
    }
    found
        .iter()
        .map(|s| {
            s.trim()
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_engine_module_imports_only_from_the_floors_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut broken = Vec::new();
    let mut seen = 0;
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = top.trim_end_matches(".rs");
        if matches!(module, "cli" | "main" | "lib" | "layers") {
            continue;
        }
        let own = floor(module)
            .unwrap_or_else(|| panic!("{}: module {module} has no floor", rel.display()));
        seen += 1;
        let text = std::fs::read_to_string(file).unwrap();
        for used in imports(&text) {
            // Items of the crate root (`crate::host_name`, …) are ground.
            let Some(theirs) = floor(&used) else { continue };
            if used != module && theirs >= own {
                broken.push(format!(
                    "{}: {module} (floor {own}) imports {used} (floor {theirs})",
                    rel.display()
                ));
            }
        }
    }
    assert!(seen > 50, "walked {seen} engine files");
    assert!(broken.is_empty(), "{broken:#?}");
}

#[test]
fn the_import_reader_finds_grouped_and_nested_names() {
    let text = "use crate::ledger::{self, Ledger};\n\
                use crate::{dest::{Destination, share::Share}, verify};\n\
                fn f() { crate::pool::parallel_map(); }\n\
                #[cfg(test)]\nmod tests { use crate::scan; }\n";
    assert_eq!(imports(text), ["ledger", "dest", "verify", "pool"]);
}
