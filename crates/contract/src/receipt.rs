//! Receipt ids: `{region}-{16 lowercase hex digits}`. Origins derive the digits from a row's
//! number under a key of their store (a keyed permutation: uniformly spread to anyone without
//! the key); the edge draws a bot's decoy from a CSPRNG (`id`), so a decoy cannot be told from a
//! real receipt and an id says nothing about how many entries exist or which came first.

use harbour_policy::text::push_hex_u64;

/// A receipt id of `region` from 64 bits that look random to whoever reads the id.
pub fn id(region: &str, entropy: u64) -> String {
    let mut id = String::with_capacity(region.len() + 17);
    id.push_str(region);
    id.push('-');
    push_hex_u64(&mut id, entropy, 16);
    id
}

/// Whether `id` has the shape of a receipt id of `region`.
pub fn is_id_of(region: &str, id: &str) -> bool {
    id.strip_prefix(region)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hex| {
            hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_one_shape() {
        assert_eq!(id("eu", 0xabc), "eu-0000000000000abc");
        assert!(is_id_of("eu", &id("eu", u64::MAX)));
        assert!(!is_id_of("eu", "eu-0000000001"));
        assert!(!is_id_of("eu", "cn-0123456789abcdef"));
        assert!(!is_id_of("eu", "eu-0123456789ABCDEF"));
    }
}
