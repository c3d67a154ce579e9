//! A SQLite VFS over the system's (`unix`) that writes a commit's WAL frames with one `pwrite`.
//!
//! SQLite writes each WAL frame as two writes, its 24-byte header and its page: a commit of a
//! batch of submissions is some 40–80 system calls before its sync, each taking the file's lock
//! and updating its times. Here a WAL file holds the frames in memory while they follow each
//! other and writes them at once before anything else reads, syncs or sizes the file, so the
//! same bytes reach the file in the same order before the same sync.
//!
//! What is held can never be seen by another connection or outlive the write lock: SQLite
//! publishes a commit's frames through the wal-index (shared memory) with a memory barrier
//! between the header's two copies, and takes and releases every WAL lock, through the
//! *database* file. This VFS wraps database files too, and their barrier and lock calls write
//! what their connection's WAL holds first. So a commit is in the file before other readers can
//! find it (with or without its sync), and frames a rolled-back transaction spilled are written
//! (harmlessly, past the log's end) before another writer can take the lock.
//!
//! WAL files hold writes only once `coalesce` has been called for their connection; other files
//! (journals, temporary files) are the system VFS's own.

use std::ffi::{c_int, c_void, CStr};
use std::ptr::null_mut;
use std::sync::OnceLock;

use rusqlite::ffi::{self, sqlite3_file, sqlite3_int64, sqlite3_io_methods, sqlite3_vfs};
use rusqlite::{Connection, OpenFlags};

const VFS_NAME: &CStr = c"harbour-wal-writes";

/// Bytes held at most: past it they are written (a batch of 512 rows writes about 6 MiB).
const MOST_HELD: usize = 8 << 20;
/// Bytes written in one call: whole pages, under the system VFS's most (`unixWrite` masks a
/// length to 17 bits).
const MOST_WRITTEN_AT_ONCE: usize = 31 * 4096;

/// What every wrapped file starts with: SQLite's part, then the system VFS's file, which
/// follows the wrapper in the same allocation.
#[repr(C)]
struct Wrapped {
    base: sqlite3_file,
    system: *mut sqlite3_file,
}

/// A WAL file.
#[repr(C)]
struct WalFile {
    file: Wrapped,
    /// Its connection's database file, which writes what this holds before locks and barriers.
    db: *mut DbFile,
    coalescing: bool,
    /// A write of held bytes failed during the current write transaction: its commit must not
    /// be published (`db_shm_barrier`). Cleared when the write lock is released.
    failed: bool,
    /// Writes SQLite asked for, held ones included.
    asked: u64,
    /// Writes made to the system's file.
    made: u64,
    held: Vec<u8>,
    /// Where `held` starts in the file.
    at: sqlite3_int64,
}

/// A main database file.
#[repr(C)]
struct DbFile {
    file: Wrapped,
    /// Its connection's WAL file while open.
    wal: *mut WalFile,
}

/// Room before the system's file in each allocation, for either wrapper (a multiple of 16, so
/// the system's file is aligned).
const WRAPPER: usize = {
    let largest = if size_of::<WalFile>() > size_of::<DbFile>() {
        size_of::<WalFile>()
    } else {
        size_of::<DbFile>()
    };
    largest.next_multiple_of(16)
};

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

/// Holds `connection`'s WAL writes until they must reach the file, from now on. `false` (and
/// nothing changed) when its WAL is not open, it was not opened through `open`, or it locks
/// the file exclusively (its wal-index is then in its own memory: no barrier or lock call
/// would write what is held before the next read or sync).
pub fn coalesce(connection: &Connection) -> bool {
    let exclusive = connection
        .pragma_query_value(None, "locking_mode", |r| r.get::<_, String>(0))
        .map_or(true, |mode| mode.eq_ignore_ascii_case("exclusive"));
    if exclusive {
        return false;
    }
    let file = wal_file(connection);
    if file.is_null() {
        return false;
    }
    // SAFETY: `wal_file` returns only linked `WalFile`s of this connection, which (borrowed
    // here, on one thread) is not inside a call into SQLite.
    unsafe { (*file).coalescing = true };
    true
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

/// The connection's open WAL file if this VFS opened it and linked it to its database file,
/// else null.
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
    // Only `WalFile`s carry `WAL_METHODS` (a closed journal's methods are null).
    if !std::ptr::eq(methods, &WAL_METHODS) {
        return null_mut();
    }
    let wal: *mut WalFile = file.cast();
    // SAFETY: it is a `WalFile` (its methods say so).
    if unsafe { (*wal).db.is_null() } {
        return null_mut();
    }
    wal
}

/// Registers the VFS once (not as the default) over the system's `unix` VFS; its name.
fn registered() -> Result<&'static str, c_int> {
    static REGISTERED: OnceLock<Result<(), c_int>> = OnceLock::new();
    let outcome = REGISTERED.get_or_init(|| {
        // SAFETY: `sqlite3_vfs_find` initialises SQLite and returns the `unix` VFS, which lives
        // as long as the process (its functions other than `xOpen` ignore the VFS they are
        // given); ours copies it, points `pAppData` at it, and is leaked, so it outlives every
        // connection. Registering is thread-safe in SQLite.
        unsafe {
            let system = ffi::sqlite3_vfs_find(c"unix".as_ptr());
            if system.is_null() {
                return Err(ffi::SQLITE_ERROR);
            }
            let mut vfs: sqlite3_vfs = *system;
            vfs.pNext = null_mut();
            vfs.zName = VFS_NAME.as_ptr();
            vfs.pAppData = system.cast();
            vfs.szOsFile =
                c_int::try_from(WRAPPER).map_err(|_| ffi::SQLITE_ERROR)? + (*system).szOsFile;
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
    // VFS, and with `file` pointing at `szOsFile` (zeroed) bytes: room for the system's file, or
    // for a wrapper and the system's file after `WRAPPER` bytes. A WAL file's `name` is one
    // `sqlite3_database_file_object` takes: its database file is open (and wrapped) already.
    unsafe {
        let system: *mut sqlite3_vfs = (*vfs).pAppData.cast();
        let Some(system_open) = (*system).xOpen else {
            return ffi::SQLITE_ERROR;
        };
        let inner: *mut sqlite3_file = file.cast::<u8>().add(WRAPPER).cast();
        let wrapped = Wrapped {
            base: sqlite3_file {
                pMethods: std::ptr::null(),
            },
            system: inner,
        };
        let methods: &'static sqlite3_io_methods = if flags & ffi::SQLITE_OPEN_WAL != 0 {
            file.cast::<WalFile>().write(WalFile {
                file: wrapped,
                db: null_mut(),
                coalescing: false,
                failed: false,
                asked: 0,
                made: 0,
                held: Vec::new(),
                at: 0,
            });
            &WAL_METHODS
        } else if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
            file.cast::<DbFile>().write(DbFile {
                file: wrapped,
                wal: null_mut(),
            });
            &DB_METHODS
        } else {
            return system_open(system, name, file, flags, out_flags);
        };
        let code = system_open(system, name, inner, flags, out_flags);
        // SQLite closes a file whose open failed only if it has methods: the system's file
        // then needs its close, which ours forwards.
        if (*inner).pMethods.is_null() {
            return code;
        }
        (*file).pMethods = methods;
        if std::ptr::eq(methods, &WAL_METHODS) {
            let db = ffi::sqlite3_database_file_object(name);
            if !db.is_null() && std::ptr::eq((*db).pMethods, &DB_METHODS) {
                let (wal, db) = (file.cast::<WalFile>(), db.cast::<DbFile>());
                (*wal).db = db;
                (*db).wal = wal;
            }
        }
        code
    }
}

static WAL_METHODS: sqlite3_io_methods = sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(wal_close),
    xRead: Some(wal_read),
    xWrite: Some(wal_write),
    xTruncate: Some(wal_truncate),
    xSync: Some(wal_sync),
    xFileSize: Some(wal_file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(wal_file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

static DB_METHODS: sqlite3_io_methods = sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(db_close),
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
    xShmLock: Some(db_shm_lock),
    xShmBarrier: Some(db_shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// The wrapper behind a file SQLite calls one of our methods on.
///
/// # Safety
/// `file` carries `WAL_METHODS` or `DB_METHODS`, so `open_file` made it a `WalFile` or a
/// `DbFile`, both of which start with a `Wrapped`; SQLite calls a file's methods from one
/// thread at a time.
unsafe fn wrapped<'a>(file: *mut sqlite3_file) -> &'a mut Wrapped {
    // SAFETY: as the function's contract says.
    unsafe { &mut *file.cast::<Wrapped>() }
}

/// The `WalFile` behind a file carrying `WAL_METHODS`.
///
/// # Safety
/// As `wrapped`, for `WAL_METHODS`.
unsafe fn wal<'a>(file: *mut sqlite3_file) -> &'a mut WalFile {
    // SAFETY: as the function's contract says.
    unsafe { &mut *file.cast::<WalFile>() }
}

/// The `DbFile` behind a file carrying `DB_METHODS`.
///
/// # Safety
/// As `wrapped`, for `DB_METHODS`.
unsafe fn db<'a>(file: *mut sqlite3_file) -> &'a mut DbFile {
    // SAFETY: as the function's contract says.
    unsafe { &mut *file.cast::<DbFile>() }
}

impl Wrapped {
    /// The system file's methods (its open succeeded: `open_file` gave us methods only then).
    fn system_methods(&self) -> &'static sqlite3_io_methods {
        // SAFETY: the system's file stays open, with its methods, until our close.
        unsafe { &*(*self.system).pMethods }
    }
}

impl WalFile {
    /// Writes what is held, if anything. Nothing stays held after a failed write: those bytes
    /// belonged to a transaction that must now fail. The error is always `SQLITE_IOERR_WRITE`,
    /// which makes SQLite roll the whole transaction back (the system's `SQLITE_FULL` would undo
    /// only a statement when it reaches SQLite through a read), and the failure is remembered
    /// until the write lock is released, in case SQLite ignores it (`walLimitSize` ignores the
    /// file's size).
    fn write_held(&mut self) -> c_int {
        if self.held.is_empty() {
            return ffi::SQLITE_OK;
        }
        let mut code = ffi::SQLITE_IOERR_WRITE;
        if let Some(write) = self.file.system_methods().xWrite {
            let mut at = self.at;
            for piece in self.held.chunks(MOST_WRITTEN_AT_ONCE) {
                let length = piece.len() as c_int;
                // SAFETY: the system's file is open; `piece` is valid for its length, which is
                // at most what the system VFS writes in one call.
                code = unsafe { write(self.file.system, piece.as_ptr().cast(), length, at) };
                self.made += 1;
                if code != ffi::SQLITE_OK {
                    break;
                }
                at += sqlite3_int64::from(length);
            }
        }
        self.held.clear();
        if code != ffi::SQLITE_OK {
            self.failed = true;
            return ffi::SQLITE_IOERR_WRITE;
        }
        ffi::SQLITE_OK
    }
}

impl DbFile {
    /// This connection's WAL file, if open.
    fn wal(&mut self) -> Option<&mut WalFile> {
        // SAFETY: `wal` is linked only while that WAL file is open (its close unlinks it), and
        // both files belong to one connection, used by one thread at a time.
        unsafe { self.wal.as_mut() }
    }

    /// Writes what this connection's WAL holds.
    fn write_wal(&mut self) -> c_int {
        self.wal().map_or(ffi::SQLITE_OK, WalFile::write_held)
    }
}

/// Calls the system file's `$method` on the wrapped `$file` with `$args`; `$missing` if the
/// system's file has no such method.
macro_rules! forward {
    ($file:expr, $method:ident, $missing:expr $(, $arg:expr)*) => {{
        let file: &Wrapped = $file;
        match file.system_methods().$method {
            // SAFETY: the system's file is open and these are the arguments SQLite gave us.
            Some(method) => unsafe { method(file.system $(, $arg)*) },
            None => $missing,
        }
    }};
}

/// Defines methods that only call the system file's own.
macro_rules! plain {
    ($($name:ident: $method:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $missing:expr;)*) => {$(
        unsafe extern "C" fn $name(file: *mut sqlite3_file $(, $arg: $ty)*) -> $ret {
            // SAFETY: SQLite calls our methods only on files `open_file` wrapped.
            forward!(unsafe { wrapped(file) }, $method, $missing $(, $arg)*)
        }
    )*};
}

plain! {
    read: xRead(data: *mut c_void, amount: c_int, offset: sqlite3_int64) -> c_int
        = ffi::SQLITE_IOERR_READ;
    write: xWrite(data: *const c_void, amount: c_int, offset: sqlite3_int64) -> c_int
        = ffi::SQLITE_IOERR_WRITE;
    truncate: xTruncate(size: sqlite3_int64) -> c_int = ffi::SQLITE_IOERR_TRUNCATE;
    sync: xSync(flags: c_int) -> c_int = ffi::SQLITE_IOERR_FSYNC;
    file_size: xFileSize(size: *mut sqlite3_int64) -> c_int = ffi::SQLITE_IOERR_FSTAT;
    lock: xLock(level: c_int) -> c_int = ffi::SQLITE_IOERR_LOCK;
    unlock: xUnlock(level: c_int) -> c_int = ffi::SQLITE_IOERR_UNLOCK;
    check_reserved_lock: xCheckReservedLock(out: *mut c_int) -> c_int
        = ffi::SQLITE_IOERR_CHECKRESERVEDLOCK;
    file_control: xFileControl(op: c_int, arg: *mut c_void) -> c_int = ffi::SQLITE_NOTFOUND;
    sector_size: xSectorSize() -> c_int = 4096;
    device_characteristics: xDeviceCharacteristics() -> c_int = 0;
    shm_map: xShmMap(region: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int
        = ffi::SQLITE_IOERR_SHMMAP;
    shm_lock: xShmLock(offset: c_int, n: c_int, flags: c_int) -> c_int
        = ffi::SQLITE_IOERR_SHMLOCK;
    shm_barrier: xShmBarrier() -> () = ();
    shm_unmap: xShmUnmap(delete: c_int) -> c_int = ffi::SQLITE_OK;
    fetch: xFetch(offset: sqlite3_int64, amount: c_int, out: *mut *mut c_void) -> c_int
        = ffi::SQLITE_IOERR_READ;
    unfetch: xUnfetch(offset: sqlite3_int64, page: *mut c_void) -> c_int = ffi::SQLITE_OK;
}

/// Defines WAL methods that write what is held, then call the system file's own (the write's
/// error first).
macro_rules! after_held {
    ($($name:ident: $method:ident($($arg:ident: $ty:ty),*) = $missing:expr;)*) => {$(
        unsafe extern "C" fn $name(file: *mut sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: SQLite calls `WAL_METHODS` only on files `open_file` made `WalFile`s.
            let wal = unsafe { wal(file) };
            match wal.write_held() {
                ffi::SQLITE_OK => forward!(&wal.file, $method, $missing $(, $arg)*),
                code => code,
            }
        }
    )*};
}

after_held! {
    wal_read: xRead(data: *mut c_void, amount: c_int, offset: sqlite3_int64)
        = ffi::SQLITE_IOERR_READ;
    wal_truncate: xTruncate(size: sqlite3_int64) = ffi::SQLITE_IOERR_TRUNCATE;
    wal_sync: xSync(flags: c_int) = ffi::SQLITE_IOERR_FSYNC;
    wal_file_size: xFileSize(size: *mut sqlite3_int64) = ffi::SQLITE_IOERR_FSTAT;
    wal_file_control: xFileControl(op: c_int, arg: *mut c_void) = ffi::SQLITE_NOTFOUND;
}

unsafe extern "C" fn wal_close(file: *mut sqlite3_file) -> c_int {
    // SAFETY: SQLite calls `WAL_METHODS` only on files `open_file` made `WalFile`s.
    let wal = unsafe { wal(file) };
    let written = wal.write_held();
    // SAFETY: a linked database file is open: SQLite closes a connection's WAL before its
    // database file, and the database file's close unlinks it otherwise.
    if let Some(db) = unsafe { wal.db.as_mut() } {
        db.wal = null_mut();
    }
    let closed = forward!(&wal.file, xClose, ffi::SQLITE_OK);
    // SQLite frees the file's memory; the held buffer is ours to free.
    drop(std::mem::take(&mut wal.held));
    first_failure(written, closed)
}

/// The first of two results that is an error, or the second.
fn first_failure(first: c_int, then: c_int) -> c_int {
    if first != ffi::SQLITE_OK {
        first
    } else {
        then
    }
}

unsafe extern "C" fn wal_write(
    file: *mut sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite calls `WAL_METHODS` only on files `open_file` made `WalFile`s.
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
        return forward!(
            &wal.file,
            xWrite,
            ffi::SQLITE_IOERR_WRITE,
            data,
            amount,
            offset
        );
    }
    // SAFETY: SQLite passes `amount` readable bytes at `data`.
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), length) };
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
        let end = wal.at + wal.held.len() as sqlite3_int64;
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

unsafe extern "C" fn db_close(file: *mut sqlite3_file) -> c_int {
    // SAFETY: SQLite calls `DB_METHODS` only on files `open_file` made `DbFile`s.
    let db = unsafe { db(file) };
    let written = db.write_wal();
    if let Some(wal) = db.wal() {
        wal.db = null_mut();
    }
    first_failure(written, forward!(&db.file, xClose, ffi::SQLITE_OK))
}

/// Every WAL lock is taken and released here: what the WAL holds is written first, while this
/// connection still has whatever lock it is about to give up. A failed write refuses a lock
/// being taken; a lock being released is released all the same (SQLite ignores the result).
unsafe extern "C" fn db_shm_lock(
    file: *mut sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: SQLite calls `DB_METHODS` only on files `open_file` made `DbFile`s.
    let db = unsafe { db(file) };
    let written = db.write_wal();
    if written != ffi::SQLITE_OK && flags & ffi::SQLITE_SHM_UNLOCK == 0 {
        return written;
    }
    let locked = forward!(
        &db.file,
        xShmLock,
        ffi::SQLITE_IOERR_SHMLOCK,
        offset,
        n,
        flags
    );
    // The write lock (SQLite's WAL_WRITE_LOCK, the first) released: the transaction is over.
    if offset == 0 && flags == ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE {
        if let Some(wal) = db.wal() {
            wal.failed = false;
        }
    }
    first_failure(written, locked)
}

/// SQLite publishes a commit with this barrier between the wal-index header's two copies: what
/// the WAL holds is written first. The barrier cannot report an error, and going on after a
/// failed write (now, or earlier in this write transaction) would publish frames the file does
/// not have: the process stops instead.
unsafe extern "C" fn db_shm_barrier(file: *mut sqlite3_file) {
    // SAFETY: SQLite calls `DB_METHODS` only on files `open_file` made `DbFile`s.
    let db = unsafe { db(file) };
    let failed = db.wal().is_some_and(|wal| wal.failed);
    if failed || db.write_wal() != ffi::SQLITE_OK {
        eprintln!(
            "harbour-wal-writes: a WAL write failed before its commit was published; stopping"
        );
        std::process::abort();
    }
    forward!(&db.file, xShmBarrier, ())
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
        assert!(coalesce(&w));
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
    fn a_commit_without_a_sync_is_written_before_it_is_published() {
        let path = TempFile::new("normal");
        let w = writer(&path.0, "NORMAL");
        assert!(coalesce(&w));
        let other = Connection::open(&path.0).unwrap();
        let before = writes(&w).unwrap();
        for n in 0..20 {
            commit(&w, n * 20, 20, 300);
            assert_eq!(writes(&w).unwrap().held, 0);
            assert_eq!(count(&other), (n + 1) * 20);
        }
        let after = writes(&w).unwrap();
        assert!(after.made - before.made <= 20 + 2, "{after:?}");
        assert_eq!(integrity(&other), "ok");
    }

    #[test]
    fn a_connection_opened_otherwise_is_left_alone() {
        let path = TempFile::new("plain");
        let c = Connection::open(&path.0).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY);")
            .unwrap();
        assert!(!coalesce(&c));
        assert_eq!(writes(&c), None);
    }

    #[test]
    fn a_connection_that_locks_the_file_exclusively_holds_nothing() {
        let path = TempFile::new("exclusive");
        let c = open(&path.0, OpenFlags::default()).unwrap();
        c.pragma_update(None, "locking_mode", "EXCLUSIVE").unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY);")
            .unwrap();
        assert!(writes(&c).is_some(), "its WAL is one of this VFS's");
        assert!(!coalesce(&c));
    }

    #[test]
    fn a_transaction_past_the_bound_is_written_in_pieces() {
        let path = TempFile::new("big");
        let w = writer(&path.0, "FULL");
        assert!(coalesce(&w));
        let other = Connection::open(&path.0).unwrap();
        let before = writes(&w).unwrap();
        // About 12 MiB of pages in one commit.
        commit(&w, 0, 3000, 4000);
        let after = writes(&w).unwrap();
        assert!(after.made - before.made >= 2, "{after:?}");
        assert_eq!(count(&other), 3000);
        assert_eq!(integrity(&other), "ok");
    }

    #[test]
    fn what_a_rolled_back_transaction_spilled_is_written_before_another_writer_can_write() {
        let path = TempFile::new("spill");
        let w = writer(&path.0, "FULL");
        // A cache of 20 pages: a transaction of hundreds of pages spills frames into the WAL
        // before its commit.
        w.pragma_update(None, "cache_size", 20).unwrap();
        assert!(coalesce(&w));
        commit(&w, 0, 10, 300);
        // An empty log: the rollback then reads its pages back from the database file, so only
        // the release of the write lock can write what the spill left held.
        w.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        let other = Connection::open(&path.0).unwrap();
        let before = writes(&w).unwrap();
        let tx = w.unchecked_transaction().unwrap();
        for i in 0..400u64 {
            tx.execute(
                "INSERT INTO t (k, v) VALUES (?1, ?2)",
                (&(1_000_000 + i).to_be_bytes()[..], vec![1u8; 1000]),
            )
            .unwrap();
        }
        let spilled = writes(&w).unwrap();
        assert!(
            spilled.asked > before.asked && spilled.held > 0,
            "the transaction spilled frames, some held: {spilled:?}"
        );
        drop(tx);
        // The release of the write lock wrote them.
        assert_eq!(writes(&w).unwrap().held, 0);
        commit(&other, 2_000_000, 200, 300);
        commit(&w, 3_000_000, 200, 300);
        assert_eq!(count(&other), 410);
        assert_eq!(integrity(&other), "ok");
        drop((w, other));
        assert_eq!(integrity(&Connection::open(&path.0).unwrap()), "ok");
    }
}
