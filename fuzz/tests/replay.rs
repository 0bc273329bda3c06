//! Every seed of `corpus/<target>/` and every saved crash input of
//! `regressions/<target>/` through the target's body, without libFuzzer:
//! `cargo test --manifest-path fuzz/Cargo.toml` (stable toolchain; debug assertions on). A saved
//! crash input fails here until the bug it found is fixed; set
//! `TW_FUZZ_SKIP_REGRESSIONS=1` to replay the seeds alone.

use std::path::Path;

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file() && !p.file_name().unwrap().to_str().unwrap().starts_with('.'));
    v.sort();
    v
}

fn replay(folder: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let mut n = 0;
    let mut failed = Vec::new();
    for (name, target) in tensorwire_fuzz::targets::ALL {
        for f in files(&root.join(name)) {
            let data = std::fs::read(&f).unwrap();
            n += 1;
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failed.push(f.display().to_string());
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} inputs panic:\n{}",
        failed.len(),
        failed.join("\n")
    );
    n
}

#[test]
fn seeds_run_clean() {
    let n = replay("corpus");
    assert!(n > 100, "only {n} seeds found");
}

#[test]
fn saved_crashes_are_fixed() {
    if std::env::var_os("TW_FUZZ_SKIP_REGRESSIONS").is_some() {
        return;
    }
    replay("regressions");
}
