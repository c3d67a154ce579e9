//! How a forward travels: one `POST` to the region's submissions path, its idempotency key and
//! its signature as headers, the entry as the body (`entry`).

/// Where an origin takes submissions, below its base URL.
pub const SUBMISSIONS_PATH: &str = "/v1/submissions";
/// The only method of a forward.
pub const METHOD: &str = "POST";
/// `t=<timestamp ms>,r=<region>,v1=<HMAC>`: see `signature`.
pub const HEADER_SIGNATURE: &str = "x-harbour-signature";
/// The entry's idempotency key: the visitor's, or one derived from the entry's content.
pub const HEADER_IDEMPOTENCY_KEY: &str = "idempotency-key";
