//! Usage records as JSON lines, to a file (appended) or stdout.
use std::{
    fs::OpenOptions,
    io::{self, Write},
    path::Path,
};

use crate::usage::UsageRecord;

pub struct JsonLines {
    out: Box<dyn Write + Send>,
}

impl JsonLines {
    /// `-` means stdout.
    pub fn open(path: &Path) -> io::Result<JsonLines> {
        let out: Box<dyn Write + Send> = if path.as_os_str() == "-" {
            Box::new(io::stdout())
        } else {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            Box::new(OpenOptions::new().create(true).append(true).open(path)?)
        };
        Ok(JsonLines { out })
    }

    /// Writes one record as one line, flushed, so a reader never sees half a record.
    pub fn write(&mut self, record: &UsageRecord) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        self.out.write_all(&line)?;
        self.out.flush()
    }
}
