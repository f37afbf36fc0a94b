//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

/// A scratch folder under the system temp dir, unique per test process,
/// removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    /// `ringsgd-test-{kind}-{name}-{pid}`, emptied first.
    pub fn new(kind: &str, name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("ringsgd-test-{kind}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
