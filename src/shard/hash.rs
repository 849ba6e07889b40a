//! The fixed hash behind rendezvous ownership.
//!
//! Ownership must be identical across releases, hosts and architectures: a change would move
//! workspaces (each move is a browser migration or a QR re-scan). So the hash is written out
//! here with fixed constants — FNV-1a 64 over the workspace id's bytes, finalised with
//! MurmurHash3's `fmix64`, then mixed with the shard id — and never uses `std`'s `Hasher`
//! or `RandomState`, whose output may change between Rust releases or per process.
//! `tests/data/shard_golden.json` pins the outputs; if that test fails, the hash changed.
//!
//! This is not a cryptographic hash: workspace ids are chosen by our own customers' systems
//! and the worst an adversary could do is put many of their own workspaces on one shard.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Separates the shard-id stream from the workspace stream (the golden ratio, as in splitmix64).
const SHARD_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// MurmurHash3's 64-bit finaliser: a bijection with full avalanche.
#[inline]
pub const fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// The 64-bit hash of a workspace id (computed once per lookup).
#[inline]
pub fn workspace_hash(ws: &str) -> u64 {
    let mut h = FNV_OFFSET;
    for b in ws.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    fmix64(h)
}

/// The 64-bit hash of the pair (workspace, shard), from the workspace's [`workspace_hash`].
#[inline]
pub const fn pair_hash(ws_hash: u64, shard: u32) -> u64 {
    fmix64(ws_hash ^ fmix64(shard as u64 ^ SHARD_SEED))
}

/// How many low bits of a pair hash [`unit_interval`] ignores.
pub const UNIT_SHIFT: u32 = 12;

/// Maps a hash to the open interval (0, 1): the top 52 bits, centred in their bucket (exactly
/// representable in an f64), so the result is never 0 or 1 and `ln` of it is finite and < 0.
#[inline]
pub fn unit_interval(h: u64) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << (64 - UNIT_SHIFT)) as f64;
    ((h >> UNIT_SHIFT) as f64 + 0.5) * SCALE
}

/// The weighted rendezvous score `-weight / ln(u)`: highest wins. With equal weights the order
/// of scores is the order of `h >> UNIT_SHIFT`, which [`super::ShardMap::owner`] uses as a fast path.
#[inline]
pub fn score(ws_hash: u64, shard: u32, weight: f64) -> f64 {
    -weight / unit_interval(pair_hash(ws_hash, shard)).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_values_never_change() {
        // FNV-1a 64 of the empty string is its offset basis; the others were computed by an
        // independent implementation (Python) of the same definition.
        assert_eq!(workspace_hash(""), fmix64(FNV_OFFSET));
        assert_eq!(workspace_hash("acme-42"), 0xd75c_ced5_30a9_416b);
        assert_eq!(
            pair_hash(workspace_hash("acme-42"), 3),
            0x752c_1ea5_5495_1905
        );
    }

    #[test]
    fn unit_interval_is_open() {
        for h in [0, 1, u64::MAX, u64::MAX - 1, 1 << 63] {
            let u = unit_interval(h);
            assert!(u > 0.0 && u < 1.0, "{h} -> {u}");
            assert!(score(h, 0, 1.0).is_finite());
        }
    }
}
