//! The profiles shipped with jieneng, plus any loaded from a site's own directory.

use std::collections::BTreeMap;

use crate::profile::{Profile, ProfileError};

/// Built-in profiles, embedded so a gateway binary needs no files beside it.
const BUILTIN: &[(&str, &str)] = &[
    (
        "eastron/sdm630.toml",
        include_str!("../profiles/eastron/sdm630.toml"),
    ),
    (
        "chint/dtsu666.toml",
        include_str!("../profiles/chint/dtsu666.toml"),
    ),
];

/// Profiles by id (`vendor/model`).
#[derive(Debug, Clone, Default)]
pub struct Library {
    profiles: BTreeMap<String, Profile>,
}

impl Library {
    /// The built-in profiles. A built-in profile that fails to validate is a bug caught by the
    /// crate's tests, so it is reported rather than skipped.
    pub fn builtin() -> Result<Self, ProfileError> {
        let mut lib = Self::default();
        for (file, text) in BUILTIN {
            lib.add(Profile::parse(file, text)?);
        }
        Ok(lib)
    }

    /// Adds a profile, replacing one with the same id (a site may correct a built-in map).
    pub fn add(&mut self, p: Profile) {
        self.profiles.insert(p.id.clone(), p);
    }

    pub fn get(&self, id: &str) -> Result<&Profile, ProfileError> {
        self.profiles
            .get(&id.to_ascii_lowercase())
            .ok_or_else(|| ProfileError::Unknown(id.to_owned()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Ratios, decode_register};
    use crate::planner::{PlanLimits, plan_reads};

    /// Decodes `name` from a register dump `(address, word)` as the poller would.
    fn value(p: &Profile, name: &str, dump: &[(u16, u16)]) -> f64 {
        let r = p.register(name).unwrap();
        let words: Vec<u16> = r
            .span()
            .map(|a| {
                dump.iter()
                    .find(|(d, _)| u32::from(*d) == a)
                    .map(|(_, w)| *w)
                    .unwrap()
            })
            .collect();
        decode_register(r, p.word_order_of(r), &words, Ratios::default())
            .unwrap()
            .value
    }

    #[test]
    fn builtin_profiles_validate() {
        let lib = Library::builtin().unwrap();
        assert!(lib.iter().count() >= 2);
        assert!(lib.get("Eastron/SDM630").is_ok());
        assert!(matches!(lib.get("nope/x"), Err(ProfileError::Unknown(_))));
    }

    #[test]
    fn sdm630_fixture() {
        let lib = Library::builtin().unwrap();
        let p = lib.get("eastron/sdm630").unwrap();
        // Input registers as an SDM630 holds them: 1234.5 kWh imported, 2000 W, 230.1 V, 0.985 PF.
        let dump = [
            (0x0048, 0x449A),
            (0x0049, 0x5000),
            (0x0034, 0x44FA),
            (0x0035, 0x0000),
            (0x0000, 0x4366),
            (0x0001, 0x199A),
            (0x003E, 0x3F7C),
            (0x003F, 0x28F6),
        ];
        assert_eq!(value(p, "energy_import", &dump), 1234.5);
        assert_eq!(value(p, "power_total", &dump), 2.0); // W → kW
        assert!((value(p, "voltage_l1", &dump) - 230.1).abs() < 1e-4);
        assert!((value(p, "power_factor", &dump) - 0.985).abs() < 1e-6);
        // All 14 registers in two requests: 0x00..0x12 and 0x34..0x4C.
        let all: Vec<usize> = (0..p.registers.len()).collect();
        let plan = plan_reads(p, &all, PlanLimits::default());
        let got: Vec<_> = plan.requests.iter().map(|r| (r.start, r.count)).collect();
        assert_eq!(got, vec![(0x0000, 0x12), (0x0034, 0x18)]);
    }

    #[test]
    fn dtsu666_fixture() {
        let lib = Library::builtin().unwrap();
        let p = lib.get("chint/dtsu666").unwrap();
        // DTSU666 stores scaled numbers as floats: 2301.0 → 230.1 V, 15000 → 1500 W, 985 → 0.985.
        let dump = [
            (0x2006, 0x450F),
            (0x2007, 0xD000),
            (0x2012, 0x466A),
            (0x2013, 0x6000),
            (0x202A, 0x4476),
            (0x202B, 0x4000),
            (0x2044, 0x459C),
            (0x2045, 0x5000),
            (0x101E, 0x4587),
            (0x101F, 0x0A00),
        ];
        assert!((value(p, "voltage_l1", &dump) - 230.1).abs() < 1e-9);
        assert!((value(p, "power_total", &dump) - 1.5).abs() < 1e-12); // 1500 W → kW
        assert!((value(p, "power_factor", &dump) - 0.985).abs() < 1e-12);
        assert!((value(p, "frequency", &dump) - 50.02).abs() < 1e-9);
        assert_eq!(value(p, "energy_import", &dump), 4321.25);
    }
}
