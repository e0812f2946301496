//! The shape of the code, checked: the OS layer (`src/sys/`) imports nothing from the public
//! modules above it (issue 13 point 5: `sys/socket.rs` took `Address` from `connection`), and
//! docs name no machine-local paths.
use std::path::Path;

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn the_os_layer_imports_nothing_from_above() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut offending = Vec::new();
    for file in rust_files(&root.join("src/sys")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                // `crate::sys::...` stays inside the layer; the crate root's `Error`/`Result`
                // types are not modules either, but the layer speaks io::Error anyway.
                if !rest.starts_with("sys::") {
                    offending.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(offending.is_empty(), "src/sys/ reaches above itself:\n{}", offending.join("\n"));
}

#[test]
fn docs_name_no_machine_paths() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md"), root.join("bench/README.md"), root.join("CHANGELOG.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        docs.push(entry.unwrap().path());
    }
    docs.extend(rust_files(&root.join("src")));
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap();
        assert!(!text.contains("/work/"), "{} names a path of the developers' machine", doc.display());
    }
}
