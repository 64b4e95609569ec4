//! Positioned IO on a disk's data file: exact reads and writes, durable flushes, hole punching and the allocated
//! ranges (SEEK_DATA / SEEK_HOLE), so sparse disks cost what their data costs.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

/// Reads `buf.len()` bytes at `offset`; bytes past the end of the file read as zeros (a short file is a sparse tail).
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                buf[done..].fill(0);
                return Ok(());
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn write_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    file.write_all_at(buf, offset)
}

/// Asks the kernel to start writing `[offset, offset + len)` back without waiting; durability still comes from a
/// later fdatasync. A hint: errors are ignored (they resurface at the fdatasync).
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    // SAFETY: plain syscall on a valid fd.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

/// Deallocates `[offset, offset + len)`; reads of it return zeros afterwards. The file size is unchanged.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: plain syscall on a valid fd with in-range integer arguments.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset as libc::off_t, len as libc::off_t) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        // File systems without hole punching still get the right bytes.
        let zeros = vec![0u8; 1 << 20];
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(zeros.len() as u64) as usize;
            write_at(file, &zeros[..n], at)?;
            at += n as u64;
        }
        return Ok(());
    }
    Err(err)
}

/// The allocated byte ranges of `file` within `[0, limit)`, in order. A file system without SEEK_DATA reports the
/// whole range as data, which is correct, only slower.
pub fn data_ranges(file: &File, limit: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: u64 = 0;
    while pos < limit {
        // SAFETY: lseek on a valid fd.
        let start = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if start < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENXIO) => break, // no data after pos
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
                    out.push((pos, limit));
                    break;
                }
                _ => return Err(err),
            }
        }
        let start = start as u64;
        if start >= limit {
            break;
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(fd, start as libc::off_t, libc::SEEK_HOLE) };
        if end < 0 {
            return Err(io::Error::last_os_error());
        }
        let end = (end as u64).min(limit);
        out.push((start, end));
        pos = end;
    }
    Ok(out)
}

/// Exclusive advisory lock on a file, released on drop. The source-side writer and a sync cycle take it so the
/// cycle reads a point-in-time image (the guest is paused for the cycle, as a snapshot would).
pub struct FileLock(File);

impl FileLock {
    pub fn exclusive(file: File) -> io::Result<FileLock> {
        loop {
            // SAFETY: flock on a valid fd.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(FileLock(file));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Takes the lock only if nobody holds it: `None` when another process (or file handle) does.
    pub fn try_exclusive(file: File) -> io::Result<Option<FileLock>> {
        loop {
            // SAFETY: flock on a valid fd.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Some(FileLock(file)));
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(None),
                _ => return Err(err),
            }
        }
    }

    pub fn file(&self) -> &File {
        &self.0
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: as above; closing the fd would release it too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the folder.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> io::Result<()> {
    replace_contents(path, bytes)?;
    sync_parent(path)
}

/// `write_atomic` without the folder's fsync: after a power cut `path` holds either the old bytes or the new,
/// whole. For a caller that syncs the folder itself later, or to which the old bytes are as safe as the new (a
/// table checked against a generation recorded elsewhere).
pub fn replace_contents(path: &std::path::Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
thread_local! {
    /// The folders this thread synced, so tests can check that a name change was made durable.
    pub(crate) static SYNCED_DIRS: std::cell::RefCell<Vec<std::path::PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Makes the creation, removal or renaming of names in `path`'s folder durable: a file's own fsync does not cover
/// its directory entry, so after a power cut a new file could be missing or a removed one back.
pub fn sync_parent(path: &std::path::Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    File::open(dir)?.sync_all()?;
    #[cfg(test)]
    SYNCED_DIRS.with(|s| s.borrow_mut().push(dir.to_path_buf()));
    Ok(())
}

/// Removes `path` (absent is fine) and makes the removal durable.
pub fn remove_durably(path: &std::path::Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_parent(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Peak resident set size of this process, in bytes.
pub fn peak_rss_bytes() -> u64 {
    // SAFETY: getrusage fills the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss as u64 * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_ranges_see_holes_and_punch_hole_makes_them() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::options().read(true).write(true).create(true).truncate(true).open(dir.path().join("d")).unwrap();
        f.set_len(8 << 20).unwrap();
        assert!(data_ranges(&f, 8 << 20).unwrap().is_empty());
        write_at(&f, &[1u8; 4096], 1 << 20).unwrap();
        write_at(&f, &[2u8; 4096], 5 << 20).unwrap();
        let r = data_ranges(&f, 8 << 20).unwrap();
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].0 <= 1 << 20 && r[0].1 >= (1 << 20) + 4096);
        punch_hole(&f, 0, 4 << 20).unwrap();
        let r = data_ranges(&f, 8 << 20).unwrap();
        assert_eq!(r.len(), 1, "{r:?}");
        let mut b = [9u8; 16];
        read_at(&f, &mut b, 1 << 20).unwrap();
        assert_eq!(b, [0u8; 16]);
        read_at(&f, &mut b, 100 << 20).unwrap(); // past the end reads zeros
        assert_eq!(b, [0u8; 16]);
    }
}
