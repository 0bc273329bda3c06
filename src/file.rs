//! Writing payloads to files atomically.

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::container::{prepare, EncodeOptions, TensorInput};
use crate::error::{Error, Result};

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    name.push(format!(".tmp-{}-{nonce:x}", std::process::id()));
    path.with_file_name(name)
}

/// Encode `inputs` into `path`: written to a temporary file in the same directory,
/// synced, then renamed over `path`, so a reader sees the old file or the new one.
/// Raw tensors are streamed from the caller's memory; no copy of the payload is held.
pub fn save_atomic(
    inputs: &[TensorInput<'_>],
    opts: &EncodeOptions<'_>,
    path: &Path,
) -> Result<()> {
    let prepared = prepare(inputs, opts)?;
    let tmp = temp_path(path);
    let io = |what: &str, source| Error::Io {
        context: format!("{what} {}", tmp.display()),
        source,
    };
    let result = (|| {
        let file = fs::File::create(&tmp).map_err(|e| io("creating", e))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        prepared.write_to(&mut w)?;
        let file = w.into_inner().map_err(|e| io("writing", e.into_error()))?;
        file.sync_all().map_err(|e| io("syncing", e))?;
        fs::rename(&tmp, path).map_err(|e| Error::Io {
            context: format!("renaming to {}", path.display()),
            source: e,
        })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
