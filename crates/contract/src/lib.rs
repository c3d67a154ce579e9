//! What harbour's edge and its regional origins must agree on, defined once: the signature and
//! the headers that carry it, the submissions path, the answer codes, the forwarded entry, the
//! receipt and its id, and the names of the environment variables both sides read; and what the
//! edge and the operations tools agree on: the layout of the edge's data points (`points`).

pub mod entry;
pub mod env;
pub mod http;
pub mod key;
pub mod points;
pub mod receipt;
pub mod response;
pub mod signature;
