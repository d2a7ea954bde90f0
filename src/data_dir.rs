//! The data directory's lock: one ringtalk process at a time uses a data directory.
//!
//! # Why
//!
//! A server keeps state of its own beside the database (its sessions, what its channels' homes
//! hold in memory, the channel logs it appends to), so a second server on the same directory would
//! make two of everything. And `ringtalk admin` edits accounts while the server is stopped: a
//! server that is running would not see an admin flag granted under it until its users log in
//! again, so the tool refuses rather than seem to work.
//!
//! # How
//!
//! An exclusive `flock` on `<data_dir>/ringtalk.lock`, taken without waiting and held by an open
//! file for as long as the process uses the directory. The kernel lets go of it when the file is
//! closed, however the process ends, so a crash leaves no stale lock behind (a PID file would).
//! The file itself stays; it holds the process id of the last holder, for people to read.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "ringtalk.lock";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock: a server runs on this directory, or `ringtalk admin` does.
    #[error("another ringtalk process is using the data directory {} (it holds {}); stop it first", .dir.display(), .lock.display())]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// Its lock file.
        lock: PathBuf,
    },
    /// The directory or its lock file could not be made or opened.
    #[error("cannot lock the data directory {}: {source}", .dir.display())]
    Io {
        /// The data directory.
        dir: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
}

/// The lock on a data directory, held until this is dropped.
#[derive(Debug)]
pub struct DataDirLock {
    /// The open lock file; closing it lets go of the lock.
    _file: File,
}

impl DataDirLock {
    /// Locks `dir`, which must exist, without waiting: [`LockError::Held`] if another process
    /// (or another server in this one) has it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let io_error = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let lock = dir.join(LOCK_FILE);
        // Not truncated on open: until the lock is ours the holder's id stays readable.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io_error)?;
        // SAFETY: `flock` on a descriptor this function owns, open for its whole call.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let error = io::Error::last_os_error();
            return Err(if error.kind() == io::ErrorKind::WouldBlock {
                LockError::Held {
                    dir: dir.to_path_buf(),
                    lock,
                }
            } else {
                io_error(error)
            });
        }
        // For people only: who holds it now. A failure here does not matter to the lock.
        let _ = file
            .set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(DataDirLock { _file: file })
    }

    /// Creates `dir` (and its parents) if needed, then locks it as [`DataDirLock::acquire`] does.
    pub fn acquire_creating(dir: &Path) -> Result<DataDirLock, LockError> {
        std::fs::create_dir_all(dir).map_err(|source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        })?;
        DataDirLock::acquire(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_lock_goes_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a").join("b");
        assert!(matches!(
            DataDirLock::acquire(&data),
            Err(LockError::Io { .. })
        ));
        let held = DataDirLock::acquire_creating(&data).unwrap();
        let refused = DataDirLock::acquire(&data).unwrap_err();
        assert!(matches!(refused, LockError::Held { .. }), "{refused:?}");
        assert!(
            refused.to_string().contains("another ringtalk process"),
            "{refused}"
        );
        let holder = std::fs::read_to_string(data.join(LOCK_FILE)).unwrap();
        assert_eq!(holder.trim(), std::process::id().to_string());
        drop(held);
        let _again = DataDirLock::acquire(&data).unwrap();
    }
}
