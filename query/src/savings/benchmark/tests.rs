use super::*;

fn acct(s: &str) -> AccountCode {
    AccountCode::parse(s).unwrap()
}

/// A test fixture, not a standard: round numbers chosen so results can be computed by hand.
const FIXTURE: &str = r#"
[[set]]
id = "test/office-kwh"
name = "测试"
name_en = "test fixture"
source = "unit-test fixture, not a standard"
unit = "kWh/(m²·a)"
exclude = ["heating"]
verified = true

[set.correction]
standard_hours = 2500.0
standard_area_per_person_m2 = 10.0
source = "fixture"
verified = true

[[set.type]]
id = "B-government"
name = "B类 党政机关办公建筑"
name_en = "class B government office"
building_class = "A"

[[set.value]]
type = "B-government"
climate_zones = ["hot_summer_cold_winter"]
constraint = 100.0
guide = 70.0

[[set.value]]
type = "B-government"
climate_zones = ["severe_cold", "cold"]
constraint = 80.0
guide = 60.0
verified = false

[[set]]
id = "test/quota-kgce"
name = "测试定额"
name_en = "test quota fixture"
source = "unit-test fixture, not a standard"
unit = "kgce/(m²·a)"
exclude = ["heating", "transport"]
verified = true

[set.electricity]
basis = "equivalent"
kgce_per_kwh = 0.31
source = "fixture"
verified = true

[[set.type]]
id = "government"
name = "党政机关"
name_en = "government"
building_class = "A"

[[set.value]]
type = "government"
constraint = 20.0
baseline = 15.0
guide = 10.0
"#;

fn sets() -> BenchmarkSets {
    BenchmarkSets::from_toml(FIXTURE).unwrap()
}

fn tables() -> FactorTables {
    FactorTables::builtin().unwrap()
}

fn office(kwh: f64) -> AccountEnergy {
    AccountEnergy {
        account: acct("420106A001"),
        year: 2025,
        floor_area_m2: 10_000.0,
        occupants: None,
        operating_hours: None,
        climate_zone: Some(ClimateZone::HotSummerColdWinter),
        consumption: [(Category::Electricity, kwh)].into(),
        heating: BTreeMap::new(),
        transport: BTreeMap::new(),
    }
}

#[test]
fn builtin_sets_parse_and_are_unverified_without_values() {
    let b = BenchmarkSets::builtin().unwrap();
    let ids: Vec<&str> = b.sets().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["db37t2672-2019/government", "gbt51161-2016/office"]
    );
    for s in b.sets() {
        assert!(!s.verified, "{} must stay unverified until checked", s.id);
        assert!(
            s.values.is_empty(),
            "{}: no unverified numbers are shipped",
            s.id
        );
    }
    // Comparing against them says so rather than inventing a rating.
    let set = b.get("gbt51161-2016/office").unwrap();
    let c = compare(
        set,
        "B-government",
        &office(1_200_000.0),
        &tables(),
        &FactorSelection::default(),
    )
    .unwrap();
    assert_eq!(c.rating, Rating::NoValues);
    assert!(c.to_guide.is_empty());
    assert_eq!(c.verification.label_en(), "UNVERIFIED");
    assert_eq!(c.measured, 120.0);
}

#[test]
fn kwh_set_rates_and_computes_potential() {
    let s = sets();
    let set = s.get("test/office-kwh").unwrap();
    // 1.2 GWh over 10 000 m² = 120 kWh/(m²·a), no correction data.
    let c = compare(
        set,
        "B-government",
        &office(1_200_000.0),
        &tables(),
        &FactorSelection::default(),
    )
    .unwrap();
    assert_eq!(c.measured, 120.0);
    assert_eq!((c.gamma1, c.gamma2, c.corrected), (1.0, 1.0, 120.0));
    assert_eq!(c.rating, Rating::AboveConstraint);
    assert_eq!(c.to_guide[&Category::Electricity], 500_000.0); // (120 − 70) × 10 000
    assert_eq!(c.to_constraint[&Category::Electricity], 200_000.0);
    // The set is verified but the correction could not be applied: unverified, with the reason.
    assert!(c.correction_missing);
    match &c.verification {
        Verification::Unverified { reasons } => {
            assert!(
                reasons.iter().any(|r| r.contains("correction")),
                "{reasons:?}"
            )
        }
        Verification::Verified => panic!("must not be verified"),
    }

    let c = compare(
        set,
        "B-government",
        &office(800_000.0),
        &tables(),
        &FactorSelection::default(),
    )
    .unwrap();
    assert_eq!(c.rating, Rating::AboveGuide);
    let c = compare(
        set,
        "B-government",
        &office(650_000.0),
        &tables(),
        &FactorSelection::default(),
    )
    .unwrap();
    assert_eq!(c.rating, Rating::AtOrBelowGuide);
    assert!(c.to_guide.is_empty());
}

#[test]
fn use_time_and_occupancy_correction() {
    let s = sets();
    let set = s.get("test/office-kwh").unwrap();
    let mut e = office(1_000_000.0);
    // Long hours (3500 h) and dense occupancy (8 m²/person) are corrected downward.
    e.operating_hours = Some(3500.0);
    e.occupants = Some(1250.0);
    let c = compare(
        set,
        "B-government",
        &e,
        &tables(),
        &FactorSelection::default(),
    )
    .unwrap();
    let g1 = 0.3 + 0.7 * 2500.0 / 3500.0; // 0.8
    let g2 = 0.7 + 0.3 * 8.0 / 10.0; // 0.94
    assert!((c.gamma1 - g1).abs() < 1e-12 && (c.gamma2 - g2).abs() < 1e-12);
    assert!((c.corrected - 100.0 * g1 * g2).abs() < 1e-9); // 75.2
    assert_eq!(c.rating, Rating::AboveGuide);
    // Metered saving to reach the guide: A × (E_oc − 70) / γ.
    let want = 10_000.0 * (100.0 * g1 * g2 - 70.0) / (g1 * g2);
    assert!((c.to_guide[&Category::Electricity] - want).abs() < 1e-6);
    assert!(c.verification.is_verified(), "{:?}", c.verification);
    assert!(!c.correction_missing);
}

#[test]
fn heating_is_excluded_and_other_energies_reported_as_not_counted() {
    let s = sets();
    let set = s.get("test/office-kwh").unwrap();
    let mut e = office(1_000_000.0);
    e.climate_zone = Some(ClimateZone::Cold);
    e.consumption.insert(Category::DistrictHeating, 3_000.0); // GJ
    e.consumption.insert(Category::Gas, 20_000.0);
    e.heating.insert(Category::Gas, 20_000.0); // a gas boiler for heating only
    e.consumption.insert(Category::Diesel, 500.0);
    e.operating_hours = Some(2500.0);
    e.occupants = Some(1000.0);
    let c = compare(
        set,
        "B-government",
        &e,
        &tables(),
        &FactorSelection::default(),
    )
    .unwrap();
    assert_eq!(c.measured, 100.0);
    assert_eq!(c.not_counted, vec![Category::Diesel]);
    assert_eq!((c.constraint, c.guide), (Some(80.0), Some(60.0)));
    assert_eq!(c.rating, Rating::AboveConstraint);
    // The cold-zone row is marked unverified in an otherwise verified set.
    assert!(!c.verification.is_verified());
}

#[test]
fn kgce_set_uses_its_electricity_basis_and_shares_the_potential() {
    let s = sets();
    let set = s.get("test/quota-kgce").unwrap();
    let mut e = office(500_000.0); // × 0.31 = 155 000 kgce
    e.consumption.insert(Category::Gas, 30_000.0); // × 1.33 = 39 900 kgce
    e.consumption.insert(Category::Gasoline, 10_000.0); // litres, all for vehicles
    e.transport.insert(Category::Gasoline, 10_000.0);
    let c = compare(
        set,
        "government",
        &e,
        &tables(),
        &FactorSelection::default(),
    )
    .unwrap();
    let total = 500_000.0 * 0.31 + 30_000.0 * 1.33;
    assert!((c.measured - total / 10_000.0).abs() < 1e-9); // 19.49
    assert_eq!(c.rating, Rating::AboveBaseline);
    assert!(c.verification.is_verified(), "{:?}", c.verification);
    // Cut to the guide: 10 000 × (19.49 − 10) kgce, shared 155 000 : 39 900.
    let cut = 10_000.0 * (total / 10_000.0 - 10.0);
    let kwh = c.to_guide[&Category::Electricity];
    let m3 = c.to_guide[&Category::Gas];
    assert!((kwh - cut * 500_000.0 / total).abs() < 1e-6);
    assert!((m3 - cut * 30_000.0 / total).abs() < 1e-6);
    assert!((kwh * 0.31 + m3 * 1.33 - cut).abs() < 1e-6);
    assert!(!c.to_guide.contains_key(&Category::Gasoline));
    assert!(c.to_constraint.is_empty());
}

#[test]
fn bad_sets_and_inputs_are_rejected() {
    let no_basis = FIXTURE.replace(
        "[set.electricity]\nbasis = \"equivalent\"\nkgce_per_kwh = 0.31\nsource = \"fixture\"\nverified = true\n",
        "",
    );
    assert!(matches!(
        BenchmarkSets::from_toml(&no_basis).unwrap_err(),
        BenchmarkError::Invalid { set, .. } if set == "test/quota-kgce"
    ));
    let reversed = FIXTURE.replace(
        "constraint = 100.0\nguide = 70.0",
        "constraint = 60.0\nguide = 70.0",
    );
    assert!(matches!(
        BenchmarkSets::from_toml(&reversed).unwrap_err(),
        BenchmarkError::Invalid { .. }
    ));
    let unknown_type = FIXTURE.replace(
        "type = \"government\"\nconstraint",
        "type = \"school\"\nconstraint",
    );
    assert!(matches!(
        BenchmarkSets::from_toml(&unknown_type).unwrap_err(),
        BenchmarkError::Invalid { .. }
    ));
    assert!(matches!(
        BenchmarkSets::from_toml("[[set]]\nid = 1").unwrap_err(),
        BenchmarkError::Parse(_)
    ));

    let s = sets();
    let set = s.get("test/office-kwh").unwrap();
    let t = tables();
    let sel = FactorSelection::default();
    assert!(matches!(
        compare(set, "A-commercial", &office(1.0), &t, &sel).unwrap_err(),
        BenchmarkError::UnknownType { .. }
    ));
    let mut school = office(1.0);
    school.account = acct("420106D001");
    assert!(matches!(
        compare(set, "B-government", &school, &t, &sel).unwrap_err(),
        BenchmarkError::WrongClass {
            expected: 'A',
            actual: 'D',
            ..
        }
    ));
    let mut no_area = office(1.0);
    no_area.floor_area_m2 = 0.0;
    assert!(matches!(
        compare(set, "B-government", &no_area, &t, &sel).unwrap_err(),
        BenchmarkError::Input {
            field: "floor area",
            ..
        }
    ));
    let mut nan = office(f64::NAN);
    nan.floor_area_m2 = 100.0;
    assert!(matches!(
        compare(set, "B-government", &nan, &t, &sel).unwrap_err(),
        BenchmarkError::Input {
            field: "electricity consumption",
            ..
        }
    ));
}

#[test]
fn overrides_replace_sets_by_id() {
    let verified_51161 = r#"
[[set]]
id = "gbt51161-2016/office"
name = "x"
name_en = "x"
source = "deployment's checked copy"
unit = "kWh/(m²·a)"
verified = true
[[set.type]]
id = "B-government"
name = "x"
name_en = "x"
building_class = "A"
[[set.value]]
type = "B-government"
constraint = 100.0
guide = 70.0
"#;
    let b = BenchmarkSets::builtin()
        .unwrap()
        .with_overrides(BenchmarkSets::from_toml(verified_51161).unwrap());
    let set = b.get("gbt51161-2016/office").unwrap();
    assert!(set.verified);
    let c = compare(
        set,
        "B-government",
        &office(900_000.0),
        &tables(),
        &FactorSelection::default(),
    )
    .unwrap();
    assert_eq!(c.rating, Rating::AboveGuide);
    assert!(c.verification.is_verified());
    assert_eq!(b.sets().count(), 2);
}
