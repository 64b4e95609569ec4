//! Compiles the vault's migrations into the crate (src/db.rs's `embedded`), as `sqlx::migrate!` would, without
//! its proc macros: `include_str!` of every `<version>_<description>.sql` under migrations/sqlite and
//! migrations/postgres, in version order.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::{env, fs};

fn main() {
    let root = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("../migrations");
    let mut out = String::new();
    for engine in ["sqlite", "postgres"] {
        let dir = root.join(engine);
        // A folder: cargo reruns this when any file in it changes, is added or removed.
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        files.sort();
        writeln!(out, "pub const {}: &[(i64, &str, &str, bool)] = &[", engine.to_uppercase()).unwrap();
        let mut last = 0;
        for path in files {
            let stem = path.file_stem().unwrap().to_str().expect("a migration's file name is UTF-8");
            let (version, description) = stem
                .split_once('_')
                .unwrap_or_else(|| panic!("{}: name migrations <version>_<description>.sql", path.display()));
            let version: i64 =
                version.parse().unwrap_or_else(|_| panic!("{}: the version is not a number", path.display()));
            assert!(version > last, "{}: two migrations with version {version}", path.display());
            last = version;
            // As sqlx's own reader: a file opening with this comment runs outside a transaction.
            let no_tx = fs::read_to_string(&path).unwrap().starts_with("-- no-transaction");
            let path = path.canonicalize().unwrap();
            writeln!(out, "    ({version}, {:?}, include_str!({:?}), {no_tx}),", description.replace('_', " "), path)
                .unwrap();
        }
        out.push_str("];\n");
    }
    fs::write(Path::new(&env::var("OUT_DIR").unwrap()).join("migrations.rs"), out).unwrap();
}
