//! The profiles shipped with jieneng, plus any loaded from a site's own directory.

use std::collections::BTreeMap;

use crate::profile::{Profile, ProfileError};

/// Built-in profiles, embedded so a gateway binary needs no files beside it.
const BUILTIN: &[(&str, &str)] = &[
    (
        "sensor/xy-md02.toml",
        include_str!("../profiles/sensor/xy-md02.toml"),
    ),
    (
        "eastron/sdm630.toml",
        include_str!("../profiles/eastron/sdm630.toml"),
    ),
    (
        "chint/dtsu666.toml",
        include_str!("../profiles/chint/dtsu666.toml"),
    ),
    (
        "eastron/sdm120.toml",
        include_str!("../profiles/eastron/sdm120.toml"),
    ),
    (
        "eastron/sdm230.toml",
        include_str!("../profiles/eastron/sdm230.toml"),
    ),
    (
        "chint/ddsu666.toml",
        include_str!("../profiles/chint/ddsu666.toml"),
    ),
    (
        "acrel/adl400.toml",
        include_str!("../profiles/acrel/adl400.toml"),
    ),
    (
        "acrel/dtsd1352.toml",
        include_str!("../profiles/acrel/dtsd1352.toml"),
    ),
    (
        "acrel/adw300.toml",
        include_str!("../profiles/acrel/adw300.toml"),
    ),
    (
        "schneider/iem3255.toml",
        include_str!("../profiles/schneider/iem3255.toml"),
    ),
    ("abb/b23.toml", include_str!("../profiles/abb/b23.toml")),
    (
        "carlogavazzi/em24.toml",
        include_str!("../profiles/carlogavazzi/em24.toml"),
    ),
    (
        "tuf/tuf2000m.toml",
        include_str!("../profiles/tuf/tuf2000m.toml"),
    ),
    (
        "arad/octave.toml",
        include_str!("../profiles/arad/octave.toml"),
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
    use crate::decode::{DecodeError, Ratios, decode_total};
    use crate::planner::{PlanLimits, plan_reads};

    /// Decodes `name` (plus any `fraction_of` companions) from a register dump `(address, word)`
    /// as the poller would hold it.
    fn value_with(
        p: &Profile,
        name: &str,
        dump: &[(u16, u16)],
        ratios: Ratios,
    ) -> Result<f64, DecodeError> {
        let words = |r: &crate::profile::RegisterDef| -> Option<Vec<u16>> {
            r.span()
                .map(|a| {
                    dump.iter()
                        .find(|(d, _)| u32::from(*d) == a)
                        .map(|(_, w)| *w)
                })
                .collect()
        };
        decode_total(p, name, words, ratios).map(|v| v.value)
    }

    fn value(p: &Profile, name: &str, dump: &[(u16, u16)]) -> f64 {
        value_with(p, name, dump, Ratios::default()).unwrap()
    }

    fn close(got: f64, want: f64, tol: f64) -> bool {
        (got - want).abs() <= tol
    }

    /// The (start, count) of each request when every register of `p` is read.
    fn plan(p: &Profile) -> Vec<(u16, u16)> {
        let all: Vec<usize> = (0..p.registers.len()).collect();
        plan_reads(p, &all, PlanLimits::default())
            .requests
            .iter()
            .map(|r| (r.start, r.count))
            .collect()
    }

    fn profile(id: &str) -> Profile {
        Library::builtin().unwrap().get(id).unwrap().clone()
    }

    #[test]
    fn builtin_profiles_validate() {
        let lib = Library::builtin().unwrap();
        assert_eq!(lib.iter().count(), BUILTIN.len());
        assert!(lib.get("Eastron/SDM630").is_ok());
        assert!(matches!(lib.get("nope/x"), Err(ProfileError::Unknown(_))));
    }

    #[test]
    fn builtin_files_cite_their_source() {
        for (file, text) in BUILTIN {
            let header: String = text
                .lines()
                .take_while(|l| l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(header.contains("Source:"), "{file}: no `# Source:` header");
            assert!(
                header.contains("DOMAIN.md"),
                "{file}: header does not place it in DOMAIN.md"
            );
        }
    }

    /// The reading model keeps one value per (meter channel, quantity, time): two registers of a
    /// profile with the same quantity and phase would collide, unless one is only a fraction.
    #[test]
    fn builtin_registers_are_distinct_channels() {
        for p in Library::builtin().unwrap().iter() {
            let mut seen = std::collections::HashSet::new();
            for r in p.registers.iter().filter(|r| !r.is_fraction()) {
                assert!(
                    seen.insert((r.quantity, r.phase as u8)),
                    "{}: {} repeats {} on {:?}",
                    p.id,
                    r.name,
                    r.quantity,
                    r.phase
                );
            }
        }
    }

    #[test]
    fn builtin_plans_read_every_register_once() {
        for p in Library::builtin().unwrap().iter() {
            let all: Vec<usize> = (0..p.registers.len()).collect();
            let plan = plan_reads(p, &all, PlanLimits::default());
            let mut seen = vec![0; p.registers.len()];
            for q in &plan.requests {
                assert!(q.count <= p.max_registers, "{}: {q:?}", p.id);
                for &i in &q.registers {
                    seen[i] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{}: {seen:?}", p.id);
        }
    }

    #[test]
    fn sdm630_fixture() {
        let p = profile("eastron/sdm630");
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
        assert_eq!(value(&p, "energy_import", &dump), 1234.5);
        assert_eq!(value(&p, "power_total", &dump), 2.0); // W → kW
        assert!((value(&p, "voltage_l1", &dump) - 230.1).abs() < 1e-4);
        assert!((value(&p, "power_factor", &dump) - 0.985).abs() < 1e-6);
        // All 14 registers in two requests: 0x00..0x12 and 0x34..0x4C.
        assert_eq!(plan(&p), vec![(0x0000, 0x12), (0x0034, 0x18)]);
    }

    #[test]
    fn dtsu666_fixture() {
        let p = profile("chint/dtsu666");
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
        assert!((value(&p, "voltage_l1", &dump) - 230.1).abs() < 1e-9);
        assert!((value(&p, "power_total", &dump) - 1.5).abs() < 1e-12); // 1500 W → kW
        assert!((value(&p, "power_factor", &dump) - 0.985).abs() < 1e-12);
        assert!((value(&p, "frequency", &dump) - 50.02).abs() < 1e-9);
        assert_eq!(value(&p, "energy_import", &dump), 4321.25);
    }

    /// SDM120 and SDM230 share the Eastron single-phase float map.
    fn eastron_single_phase(id: &str) {
        let p = profile(id);
        // float32 big-endian: 229.75 V = 0x4365C000, 5.25 A = 0x40A80000, 1150.5 W = 0x448FD000,
        // PF 0.96 ≈ 0x3F75C28F, 49.98 Hz ≈ 0x4247EB85, 12345.5 kWh = 0x4640E600,
        // 10.25 kWh = 0x41240000.
        let dump = [
            (0x0000, 0x4365),
            (0x0001, 0xC000),
            (0x0006, 0x40A8),
            (0x0007, 0x0000),
            (0x000C, 0x448F),
            (0x000D, 0xD000),
            (0x001E, 0x3F75),
            (0x001F, 0xC28F),
            (0x0046, 0x4247),
            (0x0047, 0xEB85),
            (0x0048, 0x4640),
            (0x0049, 0xE600),
            (0x004A, 0x4124),
            (0x004B, 0x0000),
        ];
        assert_eq!(value(&p, "voltage", &dump), 229.75);
        assert_eq!(value(&p, "current", &dump), 5.25);
        assert!(close(value(&p, "power_active", &dump), 1.1505, 1e-12)); // W → kW
        assert!(close(value(&p, "power_factor", &dump), 0.96, 1e-6));
        assert!(close(value(&p, "frequency", &dump), 49.98, 1e-5));
        assert_eq!(value(&p, "energy_import", &dump), 12345.5);
        assert_eq!(value(&p, "energy_export", &dump), 10.25);
        // V..PF in one request (0x00..0x20); Hz and the energies in a second (0x46..0x4C).
        assert_eq!(plan(&p), vec![(0x0000, 0x20), (0x0046, 6)]);
    }

    #[test]
    fn xy_md02_fixture() {
        let lib = Library::builtin().unwrap();
        let p = lib.get("sensor/xy-md02").unwrap();
        // 0xFFB5 = -75 → -7.5 °C on a winter morning.
        assert!((value(p, "temperature", &[(0x0001, 0xFFB5)]) + 7.5).abs() < 1e-9);
    }

    #[test]
    fn sdm120_fixture() {
        eastron_single_phase("eastron/sdm120");
    }

    #[test]
    fn sdm230_fixture() {
        eastron_single_phase("eastron/sdm230");
    }

    #[test]
    fn ddsu666_fixture() {
        let p = profile("chint/ddsu666");
        // 230.5 V = 0x43668000, 3.125 A = 0x40480000, 0.72 kW ≈ 0x3F3851EC, 50 Hz = 0x42480000,
        // 4321.25 kWh = 0x45870A00.
        let dump = [
            (0x2000, 0x4366),
            (0x2001, 0x8000),
            (0x2002, 0x4048),
            (0x2003, 0x0000),
            (0x2004, 0x3F38),
            (0x2005, 0x51EC),
            (0x200E, 0x4248),
            (0x200F, 0x0000),
            (0x4000, 0x4587),
            (0x4001, 0x0A00),
        ];
        assert_eq!(value(&p, "voltage", &dump), 230.5);
        assert_eq!(value(&p, "current", &dump), 3.125);
        assert!(close(value(&p, "power_active", &dump), 0.72, 1e-7)); // stored in kW
        assert_eq!(value(&p, "frequency", &dump), 50.0);
        assert_eq!(value(&p, "energy_import", &dump), 4321.25);
        let unverified: Vec<_> = p
            .registers
            .iter()
            .filter(|r| !r.verified)
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(
            unverified,
            vec!["power_reactive", "power_factor", "energy_export"]
        );
        assert_eq!(plan(&p), vec![(0x2000, 0x10), (0x4000, 0x0C)]);
    }

    #[test]
    fn adl400_fixture() {
        let p = profile("acrel/adl400");
        // Primary-side floats: 231.5 V = 0x43678000, 100.25 A = 0x42C88000, 69.5 kW = 0x428B0000,
        // PF 0.95 ≈ 0x3F733333, 49.99 Hz ≈ 0x4247F5C3. Energy uint32 in 0.1 kWh:
        // 1234567 = 0x0012D687 → 123456.7 kWh; 89 → 8.9 kWh.
        let dump = [
            (0x0800, 0x4367),
            (0x0801, 0x8000),
            (0x080C, 0x42C8),
            (0x080D, 0x8000),
            (0x081A, 0x428B),
            (0x081B, 0x0000),
            (0x0832, 0x3F73),
            (0x0833, 0x3333),
            (0x0834, 0x4247),
            (0x0835, 0xF5C3),
            (0x084C, 0x0012),
            (0x084D, 0xD687),
            (0x0856, 0x0000),
            (0x0857, 0x0059),
        ];
        assert_eq!(value(&p, "voltage_l1", &dump), 231.5);
        assert_eq!(value(&p, "current_l1", &dump), 100.25);
        assert_eq!(value(&p, "power_total", &dump), 69.5);
        assert!(close(value(&p, "power_factor", &dump), 0.95, 1e-6));
        assert!(close(value(&p, "frequency", &dump), 49.99, 1e-5));
        assert!(close(value(&p, "energy_import", &dump), 123_456.7, 1e-6));
        assert!(close(value(&p, "energy_export", &dump), 8.9, 1e-9));
        // Primary values need no ratio: a configured CT does not multiply them again.
        let ct = Ratios { ct: 40.0, pt: 1.0 };
        assert_eq!(value_with(&p, "current_l1", &dump, ct).unwrap(), 100.25);
        assert_eq!(
            (p.pt_ratio_register, p.ct_ratio_register),
            (Some(0x008D), Some(0x008E))
        );
        assert!(!p.register("power_l3").unwrap().verified);
        // Instantaneous block 0x0800..0x0836, energies 0x084C..0x0858 (the gap is 22 registers).
        assert_eq!(plan(&p), vec![(0x0800, 0x36), (0x084C, 0x0C)]);
    }

    #[test]
    fn dtsd1352_fixture() {
        let p = profile("acrel/dtsd1352");
        // Secondary-side integers on a 10:1 PT and a 200/5 A CT.
        let ratios = Ratios { ct: 40.0, pt: 10.0 };
        let dump = [
            (0x0061, 0x0901), // 2305 → 230.5 V secondary
            (0x0064, 0x00FA), // 250 → 2.50 A secondary
            (0x0077, 0x1388), // 5000 → 50.00 Hz
            (0x016A, 0xFFFF), // int32 -1234 → -1.234 kW secondary (exporting)
            (0x016B, 0xFB2E),
            (0x017F, 0x03D9), // 985 → 0.985
            (0x000A, 0x0001), // uint32 123456 → 1234.56 kWh secondary
            (0x000B, 0xE240),
        ];
        let v = |name| value_with(&p, name, &dump, ratios).unwrap();
        assert!(close(v("voltage_l1"), 2305.0, 1e-9)); // ×PT
        assert!(close(v("current_l1"), 100.0, 1e-9)); // ×CT
        assert!(close(v("power_total"), -493.6, 1e-9)); // ×PT×CT
        assert!(close(v("energy_import"), 493_824.0, 1e-6)); // ×PT×CT
        assert!(close(v("frequency"), 50.0, 1e-12)); // no ratio
        assert!(close(v("power_factor"), 0.985, 1e-12));
        // Without configured ratios the secondary values come through unchanged.
        assert!(close(value(&p, "energy_import", &dump), 1234.56, 1e-9));
        // Energies, the V/I/Hz block, and the power block.
        assert_eq!(
            plan(&p),
            vec![(0x000A, 0x0C), (0x0061, 0x17), (0x0164, 0x1C)]
        );
    }

    #[test]
    fn adw300_fixture() {
        let p = profile("acrel/adw300");
        // Decimal addresses: 20 = 0x14, 26 = 0x1A, 36 = 0x24, 62 = 0x3E, 64 = 0x40.
        let dump = [
            (20, 0x08FD), // 2301 → 230.1 V
            (26, 0x04D2), // 1234 → 12.34 A
            (36, 0xFFFF), // int32 -1500 W → -1.5 kW
            (37, 0xFA24),
            (62, 0x0001), // int32 77160 → 771.60 kWh
            (63, 0x2D68),
            (64, 0x0000), // 5 → 0.05 kWh
            (65, 0x0005),
        ];
        assert!(close(value(&p, "voltage_l1", &dump), 230.1, 1e-9));
        assert!(close(value(&p, "current_l1", &dump), 12.34, 1e-9));
        assert!(close(value(&p, "power_total", &dump), -1.5, 1e-12));
        assert!(close(value(&p, "energy_import", &dump), 771.6, 1e-9));
        assert!(close(value(&p, "energy_export", &dump), 0.05, 1e-12));
        assert_eq!(plan(&p), vec![(20, 18), (62, 4)]);
    }

    #[test]
    fn iem3255_fixture() {
        let p = profile("schneider/iem3255");
        // PDU address = manual − 1. 12.5 A = 0x41480000, 230.25 V = 0x43664000,
        // 8.625 kW = 0x410A0000, 50 Hz = 0x42480000; INT64 Wh: 123456789 = 0x075BCD15,
        // 41152263 = 0x0273EF07.
        let dump = [
            (2999, 0x4148),
            (3000, 0x0000),
            (3027, 0x4366),
            (3028, 0x4000),
            (3059, 0x410A),
            (3060, 0x0000),
            (3109, 0x4248),
            (3110, 0x0000),
            (3203, 0x0000),
            (3204, 0x0000),
            (3205, 0x075B),
            (3206, 0xCD15),
            (3207, 0x0000),
            (3208, 0x0000),
            (3209, 0x0000),
            (3210, 0x0000),
            (3517, 0x0000),
            (3518, 0x0000),
            (3519, 0x0273),
            (3520, 0xEF07),
        ];
        assert_eq!(value(&p, "current_l1", &dump), 12.5);
        assert_eq!(value(&p, "voltage_l1", &dump), 230.25);
        assert_eq!(value(&p, "power_total", &dump), 8.625); // stored in kW
        assert_eq!(value(&p, "frequency", &dump), 50.0);
        assert!(close(value(&p, "energy_import", &dump), 123_456.789, 1e-9)); // Wh → kWh
        assert_eq!(value(&p, "energy_export", &dump), 0.0);
        assert!(close(
            value(&p, "energy_import_l1", &dump),
            41_152.263,
            1e-9
        ));
        // I, V, P, Hz, energies and per-phase energies are blocks more than 16 apart.
        assert_eq!(
            plan(&p),
            vec![
                (2999, 6),
                (3027, 6),
                (3053, 8),
                (3109, 2),
                (3203, 8),
                (3517, 12)
            ]
        );
    }

    #[test]
    fn b23_fixture() {
        let p = profile("abb/b23");
        let dump = [
            (0x5000, 0x0000), // uint64 1234567 ×0.01 → 12345.67 kWh
            (0x5001, 0x0000),
            (0x5002, 0x0012),
            (0x5003, 0xD687),
            (0x5004, 0xFFFF), // all FF: this B23 has no export counter
            (0x5005, 0xFFFF),
            (0x5006, 0xFFFF),
            (0x5007, 0xFFFF),
            (0x5B00, 0x0000), // uint32 2304 ×0.1 → 230.4 V
            (0x5B01, 0x0900),
            (0x5B0C, 0x0000), // uint32 1050 ×0.01 → 10.50 A
            (0x5B0D, 0x041A),
            (0x5B14, 0x0001), // int32 123456 ×0.01 W → 1.23456 kW
            (0x5B15, 0xE240),
            (0x5B18, 0x7FFF), // int32 7FFFFFFF: not available
            (0x5B19, 0xFFFF),
            (0x5B2C, 0x138A), // 5002 → 50.02 Hz
            (0x5B3A, 0xFC18), // int16 -1000 → -1.000
        ];
        assert!(close(value(&p, "energy_import", &dump), 12_345.67, 1e-9));
        assert!(close(value(&p, "voltage_l1", &dump), 230.4, 1e-9));
        assert!(close(value(&p, "current_l1", &dump), 10.5, 1e-9));
        assert!(close(value(&p, "power_total", &dump), 1.23456, 1e-12));
        assert!(close(value(&p, "frequency", &dump), 50.02, 1e-9));
        assert!(close(value(&p, "power_factor", &dump), -1.0, 1e-12));
        for name in ["energy_export", "power_l2"] {
            assert!(
                matches!(
                    value_with(&p, name, &dump, Ratios::default()),
                    Err(DecodeError::NotAvailable { .. })
                ),
                "{name}"
            );
        }
        // Energy totals, per-phase energies, and the instantaneous block 0x5B00..0x5B3B.
        assert_eq!(plan(&p), vec![(0x5000, 8), (0x5460, 12), (0x5B00, 0x3B)]);
    }

    #[test]
    fn em24_fixture() {
        let p = profile("carlogavazzi/em24");
        // INT32 low word first: 2308 = 0x00000904, -25000 = 0xFFFF9E58, 1234567 = 0x0012D687.
        let dump = [
            (0x00, 0x0904), // 230.8 V
            (0x01, 0x0000),
            (0x28, 0x9E58), // -2500.0 W → -2.5 kW
            (0x29, 0xFFFF),
            (0x35, 0x03DE), // 990 → 0.99
            (0x37, 0x01F4), // 500 → 50.0 Hz
            (0x42, 0xD687), // 123456.7 kWh
            (0x43, 0x0012),
        ];
        assert!(close(value(&p, "voltage_l1", &dump), 230.8, 1e-9));
        assert!(close(value(&p, "power_total", &dump), -2.5, 1e-12));
        assert!(close(value(&p, "power_factor", &dump), 0.99, 1e-12));
        assert!(close(value(&p, "frequency", &dump), 50.0, 1e-12));
        assert!(close(value(&p, "energy_import", &dump), 123_456.7, 1e-6));
        assert!(!p.register("energy_export").unwrap().verified);
        // No hole is wider than 16 registers, so one read of 0x00..0x5E covers the map.
        assert_eq!(plan(&p), vec![(0x00, 0x5E)]);
    }

    #[test]
    fn tuf2000m_fixture() {
        let p = profile("tuf/tuf2000m");
        // REAL4/LONG low word first. 12.5 = 0x41480000; 0.36 ≈ 0x3EB851EC; 123456 = 0x0001E240;
        // 0.75 = 0x3F400000; 789 = 0x00000315; 0.5 = 0x3F000000.
        let dump = [
            (0, 0x0000), // REG 1-2 flow 12.5 m³/h
            (1, 0x4148),
            (2, 0x51EC), // REG 3-4 energy flow 0.36 GJ/h = 100 kW
            (3, 0x3EB8),
            (8, 0xE240), // REG 9-10 positive accumulator 123456
            (9, 0x0001),
            (10, 0x0000), // REG 11-12 fraction 0.75
            (11, 0x3F40),
            (16, 0x0315), // REG 17-18 positive energy accumulator 789
            (17, 0x0000),
            (18, 0x0000), // REG 19-20 fraction 0.5
            (19, 0x3F00),
        ];
        assert_eq!(value(&p, "flow", &dump), 12.5);
        assert!(close(value(&p, "heat_power", &dump), 100.0, 1e-4));
        assert_eq!(value(&p, "volume_forward", &dump), 123_456.75); // m³, integer + fraction
        assert_eq!(value(&p, "heat_forward", &dump), 789.5); // GJ, integer + fraction
        // The fraction alone is just the fraction.
        assert_eq!(value(&p, "volume_forward_fraction", &dump), 0.75);
        assert_eq!(plan(&p), vec![(0, 20)]);
    }

    #[test]
    fn octave_fixture() {
        let p = profile("arad/octave");
        // IEEE-754 doubles, bytes least significant first ("HG FE DC BA"):
        // 12345.678 = 0x40C81CD6C8B43958 → bytes 58 39 B4 C8 D6 1C C8 40;
        // -3.5 = 0xC00C000000000000 → bytes 00 00 00 00 00 00 0C C0.
        let dump = [
            (0x18, 0x5839),
            (0x19, 0xB4C8),
            (0x1A, 0xD61C),
            (0x1B, 0xC840),
            (0x29, 0x0000),
            (0x2A, 0x0000),
            (0x2B, 0x0000),
            (0x2C, 0x0CC0),
        ];
        assert_eq!(value(&p, "volume_forward", &dump), 12_345.678);
        assert_eq!(value(&p, "flow", &dump), -3.5);
        assert!(p.registers.iter().all(|r| !r.verified));
        assert_eq!(plan(&p), vec![(0x18, 21)]);
    }
}
