//! Helpers shared by the unit tests.

/// A xorshift64 generator: the same numbers from the same seed on every machine, so that generated
/// test cases are the same in every run.
pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
