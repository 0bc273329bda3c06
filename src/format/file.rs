//! Writing payloads (or any bytes) to files atomically, leaving nothing behind when
//! killed: [`save_atomic`] encodes tensors into a file, [`write_atomic`] writes bytes.
//!
//! On Linux the payload is written into an unnamed file in the target's directory
//! (`O_TMPFILE`), synced, given a temporary name and renamed over the target: a
//! process killed while writing leaves no file at all (the kernel frees the unnamed
//! one). Elsewhere, or where the filesystem has no `O_TMPFILE`, it is written to a
//! named temporary file `.NAME.tw-tmp.PID.NONCE` beside the target. Either way a
//! reader sees the old file or the new one, never half of one, and each save removes
//! the temporary files that earlier saves of the same target left when their process
//! died (between naming and renaming, or while writing a named one).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::write::{prepare, EncodeOptions, TensorInput};
use crate::error::{Error, Result};

/// The infix of temporary file names: `.NAME.tw-tmp.PID.NONCE`.
const TEMP_INFIX: &str = ".tw-tmp.";

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// The directory holding `path` and the file name in it (any bytes the OS allows, not
/// only UTF-8).
fn split(path: &Path) -> Result<(PathBuf, OsString)> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::input(format!("{} is not a file name", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.to_owned()))
}

/// `.NAME.tw-tmp.`: what the temporary files of saves of `name` start with.
fn temp_prefix(name: &OsStr) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(TEMP_INFIX);
    prefix
}

fn temp_name(name: &OsStr) -> OsString {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut tmp = temp_prefix(name);
    tmp.push(format!("{}.{nonce:x}", std::process::id()));
    tmp
}

/// Whether process `pid` is alive on this machine (unknown: assume it is).
fn alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Remove the temporary files of earlier saves of `name` in `dir` whose process is gone.
fn remove_stale(dir: &Path, name: &OsStr) {
    let prefix = temp_prefix(name);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(rest) = file
            .as_encoded_bytes()
            .strip_prefix(prefix.as_encoded_bytes())
        else {
            continue;
        };
        let pid = std::str::from_utf8(rest)
            .ok()
            .and_then(|r| r.split('.').next())
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| pid != std::process::id() && !alive(pid)) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Encode `inputs` into `path` atomically (see the module documentation). Raw tensors
/// are streamed from the caller's memory; no copy of the payload is held.
pub fn save_atomic(
    inputs: &[TensorInput<'_>],
    opts: &EncodeOptions<'_>,
    path: &Path,
) -> Result<()> {
    let prepared = prepare(inputs, opts)?;
    replace(path, |w| prepared.write_to(w))
}

/// Write `data` into `path` atomically (see the module documentation).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    replace(path, |w| {
        w.write_all(data)
            .map_err(io(format!("writing {}", path.display())))
    })
}

/// Write a new file with `write` and put it in place of `path` atomically.
fn replace(path: &Path, write: impl FnOnce(&mut BufWriter<fs::File>) -> Result<()>) -> Result<()> {
    let (dir, name) = split(path)?;
    remove_stale(&dir, &name);
    let tmp = dir.join(temp_name(&name));
    let rename = |tmp: &Path| {
        fs::rename(tmp, path).map_err(|e| {
            let _ = fs::remove_file(tmp);
            io(format!("renaming to {}", path.display()))(e)
        })
    };
    #[cfg(target_os = "linux")]
    if let Some(file) = unnamed_file(&dir) {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        write_synced(
            file.try_clone().map_err(io("duplicating a file".into()))?,
            "the payload",
            write,
        )?;
        link(fd, &tmp)?;
        drop(file);
        return rename(&tmp);
    }
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io(format!("creating {}", tmp.display())))?;
    if let Err(e) = write_synced(file, &tmp.display().to_string(), write) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    rename(&tmp)
}

/// Run `write` on `file` (buffered), then flush and sync it; `what` names it in errors.
fn write_synced(
    file: fs::File,
    what: &str,
    write: impl FnOnce(&mut BufWriter<fs::File>) -> Result<()>,
) -> Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, file);
    write(&mut w)?;
    let file = w
        .into_inner()
        .map_err(|e| io(format!("writing {what}"))(e.into_error()))?;
    file.sync_all().map_err(io(format!("syncing {what}")))
}

/// An unnamed file in `dir` (`O_TMPFILE`), if the filesystem has them and `/proc` can
/// name it later.
#[cfg(target_os = "linux")]
fn unnamed_file(dir: &Path) -> Option<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if !Path::new("/proc/self/fd").is_dir() {
        return None;
    }
    fs::OpenOptions::new()
        .write(true)
        .mode(0o666)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir)
        .ok()
}

/// Give the unnamed file `fd` the name `to`.
#[cfg(target_os = "linux")]
fn link(fd: std::os::fd::RawFd, to: &Path) -> Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let from = CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL");
    let dest = CString::new(to.as_os_str().as_bytes())
        .map_err(|_| Error::input(format!("{} holds a NUL byte", to.display())))?;
    // SAFETY: both are valid NUL-terminated paths; linkat only reads them.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            dest.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r != 0 {
        return Err(io(format!("naming {}", to.display()))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::format::TensorView;

    #[test]
    fn saves_replace_atomically_and_clear_stale_temporaries() {
        let dir = std::env::temp_dir().join(format!("tw-file-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.tw");
        // A temporary file left by a process that is gone, and one by a live process.
        let dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        let mut dead = dead;
        dead.wait().unwrap();
        let stale = dir.join(format!(".m.tw{TEMP_INFIX}{dead_pid}.1"));
        let live = dir.join(format!(".m.tw{TEMP_INFIX}1.1"));
        fs::write(&stale, b"partial").unwrap();
        fs::write(&live, b"partial").unwrap();
        for value in [1u8, 2] {
            let data = [value; 16];
            let input = TensorInput {
                tensor: TensorView {
                    name: "w",
                    dtype: DType::U8,
                    shape: &[16],
                    data: &data,
                },
                codec: "raw",
                base: None,
            };
            save_atomic(&[input], &EncodeOptions::default(), &path).unwrap();
            let blob = fs::read(&path).unwrap();
            let layout = crate::format::parse(&blob).unwrap();
            assert_eq!(layout.stored(&blob, 0), &[value; 16]);
        }
        assert!(
            !stale.exists(),
            "the dead process's temporary file is removed"
        );
        assert!(live.exists(), "a live process's is not (pid 1 is alive)");
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bytes_are_written_atomically() {
        let dir = std::env::temp_dir().join(format!("tw-write-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.bin");
        for data in [&b"first"[..], b"", &[7u8; 3 << 20][..]] {
            write_atomic(&path, data).unwrap();
            assert_eq!(fs::read(&path).unwrap(), data);
        }
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let odd = dir.join(OsStr::from_bytes(b"\xff\xfe-bytes.bin"));
            write_atomic(&odd, b"odd").unwrap();
            assert_eq!(fs::read(&odd).unwrap(), b"odd");
            fs::remove_file(&odd).unwrap();
        }
        let left: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left");
        let err = write_atomic(&dir.join("missing").join("x.bin"), b"x").unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
