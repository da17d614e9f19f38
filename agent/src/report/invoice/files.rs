//! Writing an invoice's files: each is written to a temporary file in the directory and
//! renamed over its name, so a reader never sees half an invoice; a file already at that name
//! is replaced only when it is a version of the same invoice (same key and period), never a
//! file of anything else. Every target is checked before any is written.
use std::io::Write;
use std::path::{Path, PathBuf};

/// A file to write and how to recognise an earlier version of the same invoice in it.
pub struct Target {
    pub path: PathBuf,
    pub contents: String,
    /// True when `existing` (the current contents of `path`) is a version of this invoice.
    pub same_invoice: Box<dyn Fn(&str) -> bool>,
}

/// Creates `dir` if needed, checks every target, then writes them all.
pub fn write_all(dir: &Path, targets: &[Target]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create the directory: {e}", dir.display()))?;
    for t in targets {
        check(t)?;
    }
    for t in targets {
        write_one(dir, t)?;
    }
    Ok(())
}

fn check(t: &Target) -> Result<(), String> {
    let path = t.path.display();
    let meta = match std::fs::symlink_metadata(&t.path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{path}: {e}")),
    };
    if !meta.is_file() {
        return Err(format!("{path}: exists and is not a regular file; nothing was written"));
    }
    let existing = std::fs::read(&t.path).map_err(|e| format!("{path}: cannot read: {e}"))?;
    match std::str::from_utf8(&existing) {
        Ok(text) if (t.same_invoice)(text) => Ok(()),
        _ => Err(format!(
            "{path}: exists and is not this invoice (another key or period, or not an invoice); \
             nothing was written — remove it or choose another --output directory"
        )),
    }
}

fn write_one(dir: &Path, t: &Target) -> Result<(), String> {
    let name = t.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(t.contents.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, &t.path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: cannot write: {e}", t.path.display())
    })
}
