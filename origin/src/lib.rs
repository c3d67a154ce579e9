//! harbour's reference regional origin: the service a region runs to receive submissions.
//!
//! It trusts nothing on the wire: every submission must carry a valid signature from harbour
//! made with this region's key, a timestamp inside the allowed window, a body matching its
//! digest, and this region's tag (another region's tag is refused with 421 Misdirected Request).
//! Storage is idempotent on (campaign, idempotency key): a replay gets the first receipt back; the
//! same key with different fields is a conflict (409).

pub mod in_flight;
pub mod store;
pub mod verify;
