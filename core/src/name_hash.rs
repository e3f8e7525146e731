//! A fast hash for names the proxy's configuration and its origins bound:
//! the keys' names in the doorman's map, metric label sets natively.

use std::hash::Hasher;

/// Hashes names: a multiply-rotate over eight bytes at a time, then a
/// finaliser. For maps whose keys clients cannot choose freely (key names
/// come from the operator's keys document; metric labels are bounded), so
/// SipHash's defence against chosen collisions buys nothing there — and it
/// was a sixth of what a limited request cost the doorman.
#[derive(Default)]
pub struct NameHasher(u64);

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
        // The length too, so that padding with zeros changes the hash.
        self.0 =
            (self.0.rotate_left(5) ^ bytes.len() as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u8(&mut self, byte: u8) {
        self.write(&[byte]);
    }

    fn finish(&self) -> u64 {
        // A product's bits see only the input's lower bits: murmur3's
        // finaliser spreads every bit over the whole word (the map takes
        // its index from the low bits).
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, BuildHasherDefault};

    use crate::auth::KeyName;

    /// The names' hashes spread over a map's buckets, whichever byte of a name
    /// differs (the map's index is the hash's low bits).
    #[test]
    fn key_names_spread_over_the_buckets() {
        let hasher = BuildHasherDefault::<super::NameHasher>::default();
        for names in [
            (0..1000).map(|i| format!("key-{i:03}")).collect::<Vec<_>>(),
            (0..1000).map(|i| format!("{i:03}-team")).collect(),
            (0..1000)
                .map(|i| format!("a-long-shared-prefix-{i}"))
                .collect(),
        ] {
            let buckets: std::collections::HashSet<u64> = names
                .iter()
                .map(|name| hasher.hash_one(KeyName::new(name)) & 0xfff)
                .collect();
            // 1,000 names into 4,096 buckets at random fill about 890.
            assert!(
                buckets.len() > 850,
                "{} buckets for {:?}…",
                buckets.len(),
                &names[..2]
            );
        }
    }

    /// Names that differ only by trailing zero bytes hash apart (each word is
    /// padded with zeros).
    #[test]
    fn a_names_length_is_hashed() {
        let hasher = BuildHasherDefault::<super::NameHasher>::default();
        assert_ne!(
            hasher.hash_one(KeyName::new("team")),
            hasher.hash_one(KeyName::new("team\0"))
        );
    }
}
