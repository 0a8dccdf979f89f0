//! Benchmarks of jieneng's hot paths live in `benches/` (`cargo bench -p jieneng-benches`).
//! This library holds the fixtures they share.

use device_profiles::decode::Ratios;
use device_profiles::{Library, Profile, encode_register};

/// A profile from the built-in library and, for each register, the words a meter holding
/// plausible values would answer.
pub fn register_dump(profile: &str) -> Option<(Profile, Vec<Vec<u16>>)> {
    let lib = Library::builtin().ok()?;
    let p = lib.get(profile).ok()?.clone();
    let words = p
        .registers
        .iter()
        .map(|r| {
            encode_register(r, p.word_order_of(r), 123.25, Ratios::default())
                .unwrap_or_else(|_| vec![0; usize::from(r.data_type.words())])
        })
        .collect();
    Some((p, words))
}
