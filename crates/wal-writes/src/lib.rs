//! A SQLite VFS over the system's (`unix`) that writes a commit's WAL frames with one `pwrite`.
//!
//! SQLite writes each WAL frame as two writes, its 24-byte header and its page: a commit of a
//! batch of submissions is some 40–80 system calls before its sync, each taking the file's lock
//! and updating its times. Here the frames of a WAL file are held in memory while they follow
//! each other and written at once before anything else touches the file (its sync above all), so
//! the same bytes reach the file in the same order before the same sync.
//!
//! Only files SQLite opens as WAL files are wrapped, and they only hold writes once `coalesce`
//! has been called for their connection; everything else is the system VFS's own. `coalesce`
//! requires what makes holding safe: `synchronous=FULL` (a commit syncs its frames before it
//! publishes them to other connections, so nothing held is ever visible to another reader) and
//! `cache_spill` off (no frames written before the commit that could be left held when a
//! transaction rolls back and another connection writes the log).

use std::ffi::{c_int, c_void, CStr};
use std::ptr::null_mut;
use std::sync::OnceLock;

use rusqlite::ffi::{self, sqlite3_file, sqlite3_int64, sqlite3_io_methods, sqlite3_vfs};
use rusqlite::{Connection, OpenFlags};

const VFS_NAME: &CStr = c"harbour-wal-writes";

/// Bytes held at most: past it they are written (a batch of 512 rows writes about 6 MiB).
const MOST_HELD: usize = 8 << 20;
/// Bytes the system VFS writes in one call, at most (`unixWrite` masks a length to 17 bits).
const MOST_WRITTEN_AT_ONCE: usize = 0x1_ffff;

/// A WAL file: SQLite's part, then ours; the system VFS's file follows in the same allocation.
#[repr(C)]
struct WalFile {
    base: sqlite3_file,
    system: *mut sqlite3_file,
    coalescing: bool,
    /// Writes SQLite asked for, held ones included.
    asked: u64,
    /// Writes made to the system's file.
    made: u64,
    held: Vec<u8>,
    /// Where `held` starts in the file.
    at: sqlite3_int64,
}

/// How many writes a connection's WAL file was asked for, and how many it made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Writes {
    pub asked: u64,
    pub made: u64,
    /// Bytes held now.
    pub held: usize,
}

/// Opens `path` through this VFS (registered on first use), with `flags`.
pub fn open(path: &std::path::Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    let name = registered().map_err(|code| {
        rusqlite::Error::SqliteFailure(
            ffi::Error::new(code),
            Some("registering the WAL-writes VFS".into()),
        )
    })?;
    Connection::open_with_flags_and_vfs(path, flags, name)
}

/// Holds `connection`'s WAL writes until they must reach the file, from now on. Turns its
/// `cache_spill` off first. `false` (and nothing changed) when the connection does not sync its
/// commits (`synchronous` below FULL), when its WAL is not open, or when it was not opened
/// through `open`. The connection's `synchronous` must not be lowered afterwards.
pub fn coalesce(connection: &Connection) -> rusqlite::Result<bool> {
    let synchronous: i64 = connection.pragma_query_value(None, "synchronous", |r| r.get(0))?;
    if synchronous < 2 {
        return Ok(false);
    }
    let file = wal_file(connection);
    if file.is_null() {
        return Ok(false);
    }
    connection.pragma_update(None, "cache_spill", false)?;
    // SAFETY: `wal_file` returns only files opened by `open_file`, which are `WalFile`s, and the
    // connection (borrowed here, used by one thread) is not inside a call into SQLite.
    unsafe { (*file).coalescing = true };
    Ok(true)
}

/// The counts of `connection`'s WAL file, if it is one of this VFS's.
pub fn writes(connection: &Connection) -> Option<Writes> {
    let file = wal_file(connection);
    if file.is_null() {
        return None;
    }
    // SAFETY: as in `coalesce`.
    let file = unsafe { &*file };
    Some(Writes {
        asked: file.asked,
        made: file.made,
        held: file.held.len(),
    })
}

/// The connection's open WAL file if this VFS opened it, else null.
fn wal_file(connection: &Connection) -> *mut WalFile {
    let mut file: *mut sqlite3_file = null_mut();
    // SAFETY: `handle` is the connection's open `sqlite3*`; SQLITE_FCNTL_JOURNAL_POINTER stores
    // the pager's journal file (in WAL mode its WAL file) into the `sqlite3_file*` it is given.
    let code = unsafe {
        ffi::sqlite3_file_control(
            connection.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_JOURNAL_POINTER,
            (&mut file as *mut *mut sqlite3_file).cast(),
        )
    };
    if code != ffi::SQLITE_OK || file.is_null() {
        return null_mut();
    }
    // SAFETY: a non-null file from SQLite is a live `sqlite3_file`.
    let methods = unsafe { (*file).pMethods };
    // Only `WalFile`s carry `METHODS` (a closed journal's methods are null).
    if !std::ptr::eq(methods, &METHODS) {
        return null_mut();
    }
    file.cast()
}

/// Registers the VFS once (not as the default); its name.
fn registered() -> Result<&'static str, c_int> {
    static REGISTERED: OnceLock<Result<(), c_int>> = OnceLock::new();
    let outcome = REGISTERED.get_or_init(|| {
        // SAFETY: `sqlite3_vfs_find` initialises SQLite and returns the default VFS, which lives
        // as long as the process; ours copies it, points `pAppData` at it, and is leaked, so it
        // outlives every connection. Registering is thread-safe in SQLite.
        unsafe {
            let system = ffi::sqlite3_vfs_find(std::ptr::null());
            if system.is_null() {
                return Err(ffi::SQLITE_ERROR);
            }
            let mut vfs: sqlite3_vfs = *system;
            vfs.pNext = null_mut();
            vfs.zName = VFS_NAME.as_ptr();
            vfs.pAppData = system.cast();
            vfs.szOsFile = c_int::try_from(size_of::<WalFile>()).map_err(|_| ffi::SQLITE_ERROR)?
                + (*system).szOsFile;
            vfs.xOpen = Some(open_file);
            match ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 0) {
                ffi::SQLITE_OK => Ok(()),
                code => Err(code),
            }
        }
    });
    match outcome {
        Ok(()) => VFS_NAME.to_str().map_err(|_| ffi::SQLITE_ERROR),
        Err(code) => Err(*code),
    }
}

unsafe extern "C" fn open_file(
    vfs: *mut sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite calls this with the VFS `registered` made, whose `pAppData` is the system
    // VFS, and with `file` pointing at `szOsFile` bytes: enough for the system's file, or for a
    // `WalFile` followed by it (`WalFile`'s size keeps the system's file aligned).
    unsafe {
        let system: *mut sqlite3_vfs = (*vfs).pAppData.cast();
        let Some(system_open) = (*system).xOpen else {
            return ffi::SQLITE_ERROR;
        };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return system_open(system, name, file, flags, out_flags);
        }
        let wal: *mut WalFile = file.cast();
        let inner: *mut sqlite3_file = file.cast::<u8>().add(size_of::<WalFile>()).cast();
        wal.write(WalFile {
            base: sqlite3_file {
                pMethods: std::ptr::null(),
            },
            system: inner,
            coalescing: false,
            asked: 0,
            made: 0,
            held: Vec::new(),
            at: 0,
        });
        let code = system_open(system, name, inner, flags, out_flags);
        // SQLite closes a file whose open failed only if it has methods: the system's file then
        // needs its close, which ours forwards.
        if !(*inner).pMethods.is_null() {
            (*wal).base.pMethods = &METHODS;
        }
        code
    }
}

static METHODS: sqlite3_io_methods = sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// The `WalFile` behind a file SQLite calls one of `METHODS` on.
///
/// # Safety
/// `file` carries `METHODS`, so `open_file` made it a `WalFile`; SQLite calls a file's methods
/// from one thread at a time.
unsafe fn wal<'a>(file: *mut sqlite3_file) -> &'a mut WalFile {
    // SAFETY: as the function's contract says.
    unsafe { &mut *file.cast::<WalFile>() }
}

impl WalFile {
    /// The system file's methods (its open succeeded: `open_file` gave us methods only then).
    fn system_methods(&self) -> &'static sqlite3_io_methods {
        // SAFETY: the system's file stays open, with its methods, until our `close`.
        unsafe { &*(*self.system).pMethods }
    }

    /// Writes what is held, if anything. Nothing stays held after a failed write: those bytes
    /// belonged to a commit that now fails.
    fn write_held(&mut self) -> c_int {
        if self.held.is_empty() {
            return ffi::SQLITE_OK;
        }
        let Some(write) = self.system_methods().xWrite else {
            self.held.clear();
            return ffi::SQLITE_IOERR_WRITE;
        };
        let mut code = ffi::SQLITE_OK;
        let mut at = self.at;
        for piece in self.held.chunks(MOST_WRITTEN_AT_ONCE) {
            let length = piece.len() as c_int;
            // SAFETY: the system's file is open; `piece` is valid for its length, which is at
            // most what the system VFS writes in one call.
            code = unsafe { write(self.system, piece.as_ptr().cast(), length, at) };
            self.made += 1;
            if code != ffi::SQLITE_OK {
                break;
            }
            at += sqlite3_int64::from(length);
        }
        self.held.clear();
        code
    }
}

/// Calls the system file's `$method` with `$args` after writing what is held (when `$first` is
/// `write_held`), or at once.
macro_rules! forward {
    ($file:ident, $method:ident, $missing:expr $(, $arg:expr)*) => {{
        match $file.system_methods().$method {
            // SAFETY: the system's file is open and these are the arguments SQLite gave us.
            Some(method) => unsafe { method($file.system $(, $arg)*) },
            None => $missing,
        }
    }};
}

/// Writes what is held, then calls the system file's `$method`; the write's error first.
macro_rules! after_held {
    ($file:ident, $method:ident, $missing:expr $(, $arg:expr)*) => {{
        // SAFETY: SQLite calls `METHODS` only on files `open_file` made `WalFile`s.
        let file = unsafe { wal($file) };
        match file.write_held() {
            ffi::SQLITE_OK => forward!(file, $method, $missing $(, $arg)*),
            code => code,
        }
    }};
}

unsafe extern "C" fn close(file: *mut sqlite3_file) -> c_int {
    // SAFETY: SQLite calls `METHODS` only on files `open_file` made `WalFile`s.
    let wal = unsafe { wal(file) };
    let written = wal.write_held();
    let closed = forward!(wal, xClose, ffi::SQLITE_OK);
    // SQLite frees the file's memory; the held buffer is ours to free.
    drop(std::mem::take(&mut wal.held));
    if written != ffi::SQLITE_OK {
        written
    } else {
        closed
    }
}

unsafe extern "C" fn write(
    file: *mut sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite calls `METHODS` only on files `open_file` made `WalFile`s.
    let wal = unsafe { wal(file) };
    wal.asked += 1;
    let Ok(length) = usize::try_from(amount) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    if !wal.coalescing || length > MOST_WRITTEN_AT_ONCE {
        let code = wal.write_held();
        if code != ffi::SQLITE_OK {
            return code;
        }
        wal.made += 1;
        return forward!(wal, xWrite, ffi::SQLITE_IOERR_WRITE, data, amount, offset);
    }
    // SAFETY: SQLite passes `amount` readable bytes at `data`.
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), length) };
    let end = wal.at + wal.held.len() as sqlite3_int64;
    if !wal.held.is_empty() {
        // Rewrites of a frame still held (a page written twice in one commit, or its
        // checksums redone) land in place; the next frame extends the run.
        let inside = offset
            .checked_sub(wal.at)
            .and_then(|start| usize::try_from(start).ok())
            .and_then(|start| wal.held.get_mut(start..start.checked_add(length)?));
        if let Some(place) = inside {
            place.copy_from_slice(bytes);
            return ffi::SQLITE_OK;
        }
        if offset == end && wal.held.len() + length <= MOST_HELD {
            wal.held.extend_from_slice(bytes);
            return ffi::SQLITE_OK;
        }
        let code = wal.write_held();
        if code != ffi::SQLITE_OK {
            return code;
        }
    }
    wal.at = offset;
    wal.held.extend_from_slice(bytes);
    ffi::SQLITE_OK
}

unsafe extern "C" fn read(
    file: *mut sqlite3_file,
    data: *mut c_void,
    amount: c_int,
    offset: sqlite3_int64,
) -> c_int {
    after_held!(file, xRead, ffi::SQLITE_IOERR_READ, data, amount, offset)
}

unsafe extern "C" fn truncate(file: *mut sqlite3_file, size: sqlite3_int64) -> c_int {
    after_held!(file, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size)
}

unsafe extern "C" fn sync(file: *mut sqlite3_file, flags: c_int) -> c_int {
    after_held!(file, xSync, ffi::SQLITE_IOERR_FSYNC, flags)
}

unsafe extern "C" fn file_size(file: *mut sqlite3_file, size: *mut sqlite3_int64) -> c_int {
    after_held!(file, xFileSize, ffi::SQLITE_IOERR_FSTAT, size)
}

unsafe extern "C" fn lock(file: *mut sqlite3_file, level: c_int) -> c_int {
    after_held!(file, xLock, ffi::SQLITE_IOERR_LOCK, level)
}

unsafe extern "C" fn unlock(file: *mut sqlite3_file, level: c_int) -> c_int {
    after_held!(file, xUnlock, ffi::SQLITE_IOERR_UNLOCK, level)
}

unsafe extern "C" fn check_reserved_lock(file: *mut sqlite3_file, out: *mut c_int) -> c_int {
    after_held!(
        file,
        xCheckReservedLock,
        ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
        out
    )
}

unsafe extern "C" fn file_control(file: *mut sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    after_held!(file, xFileControl, ffi::SQLITE_NOTFOUND, op, arg)
}

unsafe extern "C" fn sector_size(file: *mut sqlite3_file) -> c_int {
    // SAFETY: SQLite calls `METHODS` only on files `open_file` made `WalFile`s.
    let wal = unsafe { wal(file) };
    forward!(wal, xSectorSize, 4096)
}

unsafe extern "C" fn device_characteristics(file: *mut sqlite3_file) -> c_int {
    // SAFETY: SQLite calls `METHODS` only on files `open_file` made `WalFile`s.
    let wal = unsafe { wal(file) };
    forward!(wal, xDeviceCharacteristics, 0)
}

unsafe extern "C" fn shm_map(
    file: *mut sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    after_held!(
        file,
        xShmMap,
        ffi::SQLITE_IOERR_SHMMAP,
        region,
        size,
        extend,
        out
    )
}

unsafe extern "C" fn shm_lock(
    file: *mut sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    after_held!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags)
}

unsafe extern "C" fn shm_barrier(file: *mut sqlite3_file) {
    // SAFETY: SQLite calls `METHODS` only on files `open_file` made `WalFile`s.
    let wal = unsafe { wal(file) };
    forward!(wal, xShmBarrier, ())
}

unsafe extern "C" fn shm_unmap(file: *mut sqlite3_file, delete: c_int) -> c_int {
    after_held!(file, xShmUnmap, ffi::SQLITE_OK, delete)
}

unsafe extern "C" fn fetch(
    file: *mut sqlite3_file,
    offset: sqlite3_int64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    after_held!(
        file,
        xFetch,
        {
            // SAFETY: `out` is where SQLite takes the mapped page from; null: "read it instead".
            unsafe { *out = null_mut() };
            ffi::SQLITE_OK
        },
        offset,
        amount,
        out
    )
}

unsafe extern "C" fn unfetch(
    file: *mut sqlite3_file,
    offset: sqlite3_int64,
    page: *mut c_void,
) -> c_int {
    after_held!(file, xUnfetch, ffi::SQLITE_OK, offset, page)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    /// A database path in a fresh directory, removed with it.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str) -> TempFile {
            let dir = std::env::temp_dir().join(format!(
                "harbour-wal-writes-{name}-{}-{:?}",
                std::process::id(),
                std::time::SystemTime::now()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempFile(dir.join("db.sqlite"))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn writer(path: &Path, synchronous: &str) -> Connection {
        let c = open(path, OpenFlags::default()).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.pragma_update(None, "synchronous", synchronous).unwrap();
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, k BLOB UNIQUE, v BLOB);",
        )
        .unwrap();
        c
    }

    /// Inserts `rows` rows with keys spread over the index and `size`-byte values.
    fn commit(c: &Connection, first: u64, rows: u64, size: usize) {
        let tx = c.unchecked_transaction().unwrap();
        for i in first..first + rows {
            let key = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes();
            tx.execute(
                "INSERT INTO t (k, v) VALUES (?1, ?2)",
                (&key[..], vec![7u8; size]),
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    fn count(c: &Connection) -> u64 {
        c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    fn integrity(c: &Connection) -> String {
        c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_synced_commit_is_one_write_and_other_connections_see_it() {
        let path = TempFile::new("synced");
        let w = writer(&path.0, "FULL");
        assert!(coalesce(&w).unwrap());
        let other = Connection::open(&path.0).unwrap();
        let before = writes(&w).unwrap();
        let commits = 60;
        for n in 0..commits {
            commit(&w, n * 20, 20, 300);
            assert_eq!(writes(&w).unwrap().held, 0, "nothing held after a commit");
            assert_eq!(count(&other), (n + 1) * 20);
            if n % 10 == 9 {
                let busy: i64 = other
                    .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get(0))
                    .unwrap();
                assert_eq!(busy, 0);
            }
        }
        let after = writes(&w).unwrap();
        let (asked, made) = (after.asked - before.asked, after.made - before.made);
        // Each commit writes several frames (two writes each) and, after a restart, the header.
        assert!(asked >= 6 * commits, "{asked} writes asked for");
        assert!(
            made <= commits + 6,
            "{made} writes made for {commits} commits"
        );
        assert_eq!(integrity(&w), "ok");
        drop((w, other));
        let reopened = Connection::open(&path.0).unwrap();
        assert_eq!(count(&reopened), commits * 20);
        assert_eq!(integrity(&reopened), "ok");
    }

    #[test]
    fn a_connection_that_does_not_sync_its_commits_holds_nothing() {
        let path = TempFile::new("normal");
        let w = writer(&path.0, "NORMAL");
        assert!(!coalesce(&w).unwrap());
        commit(&w, 0, 50, 300);
        let counts = writes(&w).unwrap();
        assert!(counts.asked > 0);
        assert_eq!(counts.asked, counts.made);
    }

    #[test]
    fn a_connection_opened_otherwise_is_left_alone() {
        let path = TempFile::new("plain");
        let c = Connection::open(&path.0).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY);")
            .unwrap();
        assert!(!coalesce(&c).unwrap());
        assert_eq!(writes(&c), None);
    }

    #[test]
    fn a_transaction_past_the_bound_is_written_in_pieces_and_a_rollback_holds_nothing() {
        let path = TempFile::new("big");
        let w = writer(&path.0, "FULL");
        assert!(coalesce(&w).unwrap());
        let other = Connection::open(&path.0).unwrap();
        let before = writes(&w).unwrap();
        // About 12 MiB of pages in one commit.
        commit(&w, 0, 3000, 4000);
        let after = writes(&w).unwrap();
        assert!(after.made - before.made >= 2);
        assert_eq!(count(&other), 3000);
        // Without spilling, a transaction rolled back wrote (and holds) nothing, so another
        // connection's commits cannot be overwritten by it later.
        let tx = w.unchecked_transaction().unwrap();
        tx.execute("INSERT INTO t (k, v) VALUES (x'01', x'02')", [])
            .unwrap();
        drop(tx);
        assert_eq!(writes(&w).unwrap(), after);
        commit(&other, 10_000, 100, 300);
        commit(&w, 20_000, 100, 300);
        assert_eq!(count(&other), 3200);
        assert_eq!(integrity(&other), "ok");
    }
}
