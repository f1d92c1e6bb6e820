//! The examples' one command-line convention: `cargo run --release --example NAME -- [--out DIR]
//! [other flags]`. Every example writes its files (named after the example) into `--out DIR`,
//! default `longseq-out/` in the current directory, created when missing.
#![allow(dead_code)]

use std::path::PathBuf;

/// The command line after the program name.
pub struct Args(Vec<String>);

impl Args {
    /// Reads `std::env::args()`.
    pub fn new() -> Self {
        Self(std::env::args().skip(1).collect())
    }

    /// The value after `--name`; an error when the flag is last.
    pub fn value(&self, name: &str) -> Result<Option<String>, String> {
        match self.0.iter().position(|a| a == name) {
            None => Ok(None),
            Some(i) => self
                .0
                .get(i + 1)
                .cloned()
                .map(Some)
                .ok_or_else(|| format!("{name} needs a value")),
        }
    }

    /// `--out DIR` (default `longseq-out`), created.
    pub fn out_dir(&self) -> Result<PathBuf, Box<dyn std::error::Error>> {
        let dir = PathBuf::from(self.value("--out")?.unwrap_or_else(|| "longseq-out".into()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create output folder {}: {e}", dir.display()))?;
        Ok(dir)
    }
}

/// Runs an example's body; an error is one sentence on stderr and exit code 2 (not Rust's
/// debug print of the error value).
pub fn main_with(
    body: impl FnOnce() -> Result<(), Box<dyn std::error::Error>>,
) -> std::process::ExitCode {
    match body() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
