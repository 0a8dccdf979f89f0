use proptest::prelude::*;
use reading_model::{Quantity, Unit};

use super::*;
use crate::profile::{DataType, Phase, RatioKind, RegisterDef, WordOrder};

fn profile(
    regs: Vec<(FunctionCode, u16, DataType)>,
    forbidden: Vec<[u16; 2]>,
    max: u16,
) -> Profile {
    Profile {
        id: "t/t".into(),
        vendor: "t".into(),
        model: "t".into(),
        description: String::new(),
        word_order: WordOrder::Big,
        max_registers: max,
        forbidden,
        ct_ratio_register: None,
        pt_ratio_register: None,
        registers: regs
            .into_iter()
            .enumerate()
            .map(|(i, (function, address, data_type))| RegisterDef {
                name: format!("r{i}"),
                quantity: Quantity::Voltage,
                function,
                address,
                data_type,
                unit: Unit::Volt,
                scale: 1.0,
                offset: 0.0,
                phase: Phase::Total,
                ratio: RatioKind::None,
                word_order: None,
                byte_swap: false,
                verified: true,
                not_available: Vec::new(),
                fraction_of: None,
            })
            .collect(),
    }
}

#[test]
fn contiguous_registers_become_one_request() {
    let p = profile(
        (0..30)
            .map(|i| (FunctionCode::Input, i * 2, DataType::F32))
            .collect(),
        vec![],
        125,
    );
    let plan = plan_reads(&p, &(0..30).collect::<Vec<_>>(), PlanLimits::default());
    assert_eq!(plan.requests.len(), 1);
    assert_eq!((plan.requests[0].start, plan.requests[0].count), (0, 60));
}

#[test]
fn splits_on_function_gap_limit_and_forbidden() {
    let p = profile(
        vec![
            (FunctionCode::Holding, 0, DataType::U16),
            (FunctionCode::Holding, 10, DataType::U16),
            (FunctionCode::Holding, 100, DataType::U32),
            (FunctionCode::Input, 0, DataType::F32),
            (FunctionCode::Holding, 110, DataType::U16),
        ],
        vec![[105, 106]],
        125,
    );
    let plan = plan_reads(
        &p,
        &[0, 1, 2, 3, 4],
        PlanLimits {
            max_registers: 125,
            max_gap: 16,
        },
    );
    let got: Vec<_> = plan
        .requests
        .iter()
        .map(|r| (r.function, r.start, r.count))
        .collect();
    assert_eq!(
        got,
        vec![
            (FunctionCode::Holding, 0, 11),
            (FunctionCode::Holding, 100, 2),
            (FunctionCode::Holding, 110, 1),
            (FunctionCode::Input, 0, 2),
        ]
    );
}

/// Registers, forbidden ranges, the profile's register limit and the plan's gap limit.
type Case = (Vec<(FunctionCode, u16, DataType)>, Vec<[u16; 2]>, u16, u16);

fn arb_case() -> impl Strategy<Value = Case> {
    let f = prop_oneof![Just(FunctionCode::Holding), Just(FunctionCode::Input)];
    let t = prop_oneof![
        Just(DataType::U16),
        Just(DataType::F32),
        Just(DataType::U64)
    ];
    let forb = prop::collection::vec((0u16..1000, 0u16..20).prop_map(|(a, l)| [a, a + l]), 0..4);
    (
        prop::collection::vec((f, 0u16..1000, t), 1..60),
        forb,
        4u16..=125,
        0u16..40,
    )
        .prop_map(|(regs, forbidden, max, gap)| {
            // Keep only registers that do not overlap a forbidden range (the profile validator
            // rejects the others).
            let regs = regs
                .into_iter()
                .filter(|(_, a, t)| {
                    let (s, e) = (u32::from(*a), u32::from(*a) + u32::from(t.words()));
                    !forbidden
                        .iter()
                        .any(|[fa, fb]| s < u32::from(*fb) + 1 && u32::from(*fa) < e)
                })
                .collect();
            (regs, forbidden, max, gap)
        })
}

proptest! {
    #[test]
    fn every_register_read_once_within_limits((regs, forbidden, max, gap) in arb_case()) {
        let p = profile(regs, forbidden.clone(), max);
        let all: Vec<usize> = (0..p.registers.len()).collect();
        let plan = plan_reads(&p, &all, PlanLimits { max_registers: 125, max_gap: gap });
        let mut seen = vec![0u32; p.registers.len()];
        for q in &plan.requests {
            prop_assert!(q.count >= 1 && q.count <= max, "count {} over limit {}", q.count, max);
            let (s, e) = (u32::from(q.start), u32::from(q.start) + u32::from(q.count));
            for [a, b] in &forbidden {
                prop_assert!(!(s < u32::from(*b) + 1 && u32::from(*a) < e), "request {s}..{e} touches forbidden {a}..={b}");
            }
            for &i in &q.registers {
                seen[i] += 1;
                let r = &p.registers[i];
                prop_assert_eq!(r.function, q.function);
                prop_assert!(r.span().start >= s && r.span().end <= e);
            }
        }
        prop_assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
    }
}
