//! What the operating system lets this process have: open files (one per user) and CPUs (one per shard).
//!
//! wtelnet stopped at 1,019 users on a 1,024-file limit, and glommio's own CPU list ignores the process's
//! affinity mask (so a container limited to CPU 1 fails to start a shard pinned to CPU 0). Both facts are
//! read here, at start, from the kernel, so the startup line can say exactly what the machine allows.

use std::io;

/// Descriptors kept back for everything that is not a user and not counted per shard or per worker:
/// stdio, the main thread's io_uring and eventfds (28 in all with two shards and two workers), with
/// room to spare, plus every channel log the log writer may hold open at once. Without the logs'
/// share, a full server would leave the writer no descriptor and lines would go unlogged.
pub const RESERVED_FDS: u64 = 64 + crate::chanlog::MAX_OPEN_FILES as u64;

/// Descriptors each shard uses besides its users: its listener, io_uring rings, eventfds, its epoll
/// set.
pub const FDS_PER_SHARD: u64 = 8;

/// Descriptors each worker thread holds: its SQLite connection's database, WAL and shared-memory
/// files.
pub const FDS_PER_WORKER: u64 = 3;

/// Descriptors a server of `shards` shards and `workers` worker threads keeps for itself: what an
/// open-files limit less this leaves is room for users.
pub fn reserved_fds(shards: usize, workers: usize) -> u64 {
    RESERVED_FDS + FDS_PER_SHARD * shards as u64 + FDS_PER_WORKER * workers as u64
}

/// The open-files limit after [`raise_nofile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLimit {
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit, which only a privileged process can raise.
    pub hard: u64,
}

impl FileLimit {
    /// How many users (one socket each) the limit allows to a server of `shards` shards and
    /// `workers` worker threads, once [`reserved_fds`] are set aside.
    pub fn users_allowed(&self, shards: usize, workers: usize) -> u64 {
        self.soft.saturating_sub(reserved_fds(shards, workers))
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the limits now in force.
pub fn raise_nofile() -> io::Result<FileLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(FileLimit {
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

/// The least locked memory glommio accepts for an executor's io_uring rings.
pub const MIN_MEMLOCK: u64 = 512 * 1024;

/// Raises the soft RLIMIT_MEMLOCK toward the hard limit if it is below [`MIN_MEMLOCK`]; returns the
/// soft limit now in force, in bytes.
pub fn raise_memlock() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < MIN_MEMLOCK && lim.rlim_max > lim.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max.min(MIN_MEMLOCK.max(lim.rlim_cur)),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
            lim.rlim_cur = raised.rlim_cur;
        }
    }
    Ok(lim.rlim_cur)
}

/// The CPUs this process may run on, from its affinity mask, in ascending order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set, and sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = 8 * size;
    // SAFETY: CPU_ISSET reads the set we own, for indices below its capacity.
    Ok((0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// The process's resident set size in bytes, from `/proc/self/statm` (a blocking read: call it from a
/// plain thread, never from a shard).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_nofile_reaches_the_hard_limit() {
        let lim = raise_nofile().unwrap();
        assert_eq!(lim.soft, lim.hard);
        assert!(lim.users_allowed(2, 2) < lim.soft);
    }

    /// Regression: the reserve was 96, while the channel-log writer alone may hold 256 files, so a
    /// full server could leave it no descriptor and lose log lines.
    #[test]
    fn the_reserve_covers_every_channel_log_the_writer_may_hold() {
        assert!(RESERVED_FDS >= crate::chanlog::MAX_OPEN_FILES as u64 + 32);
        let lim = FileLimit {
            soft: 20_000,
            hard: 20_000,
        };
        assert_eq!(lim.users_allowed(2, 2), 20_000 - RESERVED_FDS - 16 - 6);
        let tiny = FileLimit { soft: 80, hard: 80 };
        assert_eq!(tiny.users_allowed(2, 2), 0);
        // Each worker's SQLite connection holds three: many workers leave fewer users.
        assert_eq!(
            lim.users_allowed(2, 100),
            lim.users_allowed(2, 2) - 98 * FDS_PER_WORKER
        );
    }

    #[test]
    fn allowed_cpus_match_available_parallelism() {
        let cpus = allowed_cpus().unwrap();
        assert!(!cpus.is_empty());
        let par = std::thread::available_parallelism().unwrap().get();
        assert_eq!(cpus.len(), par);
    }

    #[test]
    fn rss_is_nonzero() {
        assert!(rss_bytes().unwrap() > 0);
    }
}
