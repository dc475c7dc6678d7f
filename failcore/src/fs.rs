//! Enforcement at the effect: files opened beneath a root so that no path can escape at the syscall.
//!
//! [`Sandbox`] opens the root once and resolves every path relative to that directory handle with the
//! `cap-std` crate (on Linux, `openat2` with `RESOLVE_BENEATH` where the kernel has it): `..`, absolute
//! paths and symlinks that lead out of the root fail with an error, and there is no window between a check
//! of the path string and the open.
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let sandbox = failcore::fs::Sandbox::open(dir.path())?;
//! sandbox.write("notes/today.md", b"hello")?;
//! assert_eq!(sandbox.read_to_string("notes/today.md")?, "hello");
//! assert!(sandbox.read("../outside").is_err());
//! # Ok(()) }
//! ```

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use std::io;
use std::path::{Path, PathBuf};

/// A directory that files are opened, created, read and written beneath.
#[derive(Debug)]
pub struct Sandbox {
    root: PathBuf,
    dir: Dir,
}

impl Sandbox {
    /// Opens `root` (which must exist) as the sandbox.
    pub fn open(root: impl AsRef<Path>) -> io::Result<Sandbox> {
        let root = root.as_ref();
        let dir = Dir::open_ambient_dir(root, ambient_authority())?;
        Ok(Sandbox {
            root: root.to_path_buf(),
            dir,
        })
    }

    /// The root, as given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens an existing file for reading.
    pub fn open_file(&self, path: impl AsRef<Path>) -> io::Result<std::fs::File> {
        Ok(self.dir.open(path)?.into_std())
    }

    /// Creates (or truncates) a file for writing.
    pub fn create(&self, path: impl AsRef<Path>) -> io::Result<std::fs::File> {
        Ok(self.dir.create(path)?.into_std())
    }

    /// Reads a whole file.
    pub fn read(&self, path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
        self.dir.read(path)
    }

    /// Reads a whole file as UTF-8 text.
    pub fn read_to_string(&self, path: impl AsRef<Path>) -> io::Result<String> {
        self.dir.read_to_string(path)
    }

    /// Writes a whole file, creating its parent directories beneath the root.
    pub fn write(&self, path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> io::Result<()> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.dir.create_dir_all(parent)?;
        }
        self.dir.write(path, contents)
    }

    /// Creates a directory and its parents beneath the root.
    pub fn create_dir_all(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.dir.create_dir_all(path)
    }

    /// Removes a file.
    pub fn remove_file(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.dir.remove_file(path)
    }
}
