//! harbour's reference regional origin: the service a region runs to receive submissions.
//!
//! It trusts nothing on the wire: every submission must carry a valid signature from harbour
//! made with this region's key (checked before anything else), this region's tag (another
//! region's is refused with 421 Misdirected Request), a timestamp inside the allowed window and
//! a body matching its digest. Storage (SQLite embedded, or PostgreSQL shared by the region's
//! hosts) is idempotent on (campaign, idempotency key): a replay gets the first receipt back; the
//! same key with different fields is a conflict (409); a campaign with `one_entry_per` takes one
//! entry per person (409 `already_entered`). Receipt ids are the rows' numbers under a key of the
//! store (`receipt`): unique, and unreadable without the key.
//!
//! Each row keeps the record of consent (the notice's locale and version). The origin deletes
//! its region's expired entries itself (`retention`); what else is done with a region's entries
//! (access, erasure, withdrawal of marketing consent, export, draws) is `harbour-entries`, run in
//! the region against its store (`entries`, over `store::records` and `draw`). What it did second
//! by second is on its operations listener (`seconds`), for the live view of a broadcast.

pub mod draw;
pub mod entries;
pub mod in_flight;
pub mod listener;
pub mod person;
pub mod receipt;
pub mod retention;
pub mod seconds;
pub mod server;
pub mod store;
pub mod verify;
