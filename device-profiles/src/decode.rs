//! Register words → values in canonical units, and the inverse for simulators and fixtures.

use reading_model::Unit;

use crate::profile::{DataType, Profile, RatioKind, RegisterDef, WordOrder};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("register {name} @ {address:#06x}: expected {expected} words, got {got}")]
    Length {
        name: String,
        address: u16,
        expected: usize,
        got: usize,
    },
    #[error("register {name} @ {address:#06x}: word {word:#06x} is not BCD")]
    Bcd {
        name: String,
        address: u16,
        word: u16,
    },
    #[error(
        "register {name} @ {address:#06x}: the meter reports no value (NaN or a not-available sentinel)"
    )]
    NotAvailable { name: String, address: u16 },
    #[error("no register named {name:?} in the profile")]
    UnknownRegister { name: String },
    #[error("register {name} @ {address:#06x}: no words were read for it")]
    Missing { name: String, address: u16 },
    #[error("register {name}: value {value} cannot be encoded as {data_type:?}")]
    Encode {
        name: String,
        value: f64,
        data_type: DataType,
    },
}

/// A decoded register: the raw number the meter holds and the value in the canonical unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodedValue {
    /// The number as stored, before scale, offset, ratio and unit conversion.
    pub raw: f64,
    pub value: f64,
    pub unit: Unit,
}

/// CT and PT ratios of an installation (1 when the meter reports primary values).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratios {
    pub ct: f64,
    pub pt: f64,
}

impl Default for Ratios {
    fn default() -> Self {
        Self { ct: 1.0, pt: 1.0 }
    }
}

impl Ratios {
    fn factor(&self, kind: RatioKind) -> f64 {
        match kind {
            RatioKind::None => 1.0,
            RatioKind::Ct => self.ct,
            RatioKind::Pt => self.pt,
            RatioKind::CtPt => self.ct * self.pt,
        }
    }
}

/// Words in the register's order → one big-endian integer of `n` words.
fn assemble(words: &[u16], order: WordOrder, byte_swap: bool) -> u64 {
    let fix = |w: u16| if byte_swap { w.swap_bytes() } else { w };
    let mut acc = 0u64;
    match order {
        WordOrder::Big => {
            for &w in words {
                acc = (acc << 16) | u64::from(fix(w));
            }
        }
        WordOrder::Little => {
            for &w in words.iter().rev() {
                acc = (acc << 16) | u64::from(fix(w));
            }
        }
    }
    acc
}

fn bcd(mut bits: u64, digits: u32) -> Option<u64> {
    let mut v = 0u64;
    let mut mul = 1u64;
    for _ in 0..digits {
        let d = bits & 0xF;
        if d > 9 {
            return None;
        }
        v += d * mul;
        mul *= 10;
        bits >>= 4;
    }
    Some(v)
}

/// The raw number held by a register's words, in the register's own type.
pub fn raw_value(reg: &RegisterDef, order: WordOrder, words: &[u16]) -> Result<f64, DecodeError> {
    let n = usize::from(reg.data_type.words());
    if words.len() != n {
        return Err(DecodeError::Length {
            name: reg.name.clone(),
            address: reg.address,
            expected: n,
            got: words.len(),
        });
    }
    let bits = assemble(words, order, reg.byte_swap);
    let na = || DecodeError::NotAvailable {
        name: reg.name.clone(),
        address: reg.address,
    };
    if reg
        .not_available
        .iter()
        .any(|s| s.bits(reg.data_type) == Some(bits))
    {
        return Err(na());
    }
    let v = match reg.data_type {
        DataType::Bool => f64::from(u8::from(bits != 0)),
        DataType::U16 => bits as u16 as f64,
        DataType::I16 => bits as u16 as i16 as f64,
        DataType::U32 => bits as u32 as f64,
        DataType::I32 => bits as u32 as i32 as f64,
        DataType::U64 => bits as f64,
        DataType::I64 => bits as i64 as f64,
        DataType::F32 => f64::from(f32::from_bits(bits as u32)),
        DataType::F64 => f64::from_bits(bits),
        DataType::Bcd16 | DataType::Bcd32 => {
            let digits = u32::from(reg.data_type.words()) * 4;
            bcd(bits, digits).ok_or_else(|| DecodeError::Bcd {
                name: reg.name.clone(),
                address: reg.address,
                word: words
                    .iter()
                    .copied()
                    .find(|w| bcd(u64::from(*w), 4).is_none())
                    .unwrap_or(0),
            })? as f64
        }
    };
    if !v.is_finite() {
        return Err(na());
    }
    Ok(v)
}

/// Decodes a register's words into its value in the canonical unit of its quantity.
pub fn decode_register(
    reg: &RegisterDef,
    order: WordOrder,
    words: &[u16],
    ratios: Ratios,
) -> Result<DecodedValue, DecodeError> {
    let raw = raw_value(reg, order, words)?;
    let scaled = (raw * reg.scale + reg.offset) * ratios.factor(reg.ratio);
    let canonical = reg.quantity.canonical_unit();
    // Validated in `Profile::parse`: the register's unit measures its quantity.
    let value = reg.unit.convert(scaled, canonical).unwrap_or(f64::NAN);
    Ok(DecodedValue {
        raw,
        value,
        unit: canonical,
    })
}

/// Decodes the register `name` of `profile` together with the registers declared
/// `fraction_of` it, as one value: an accumulator plus its decimal fraction. `words` returns the
/// words read for a register (from the poller's responses); a register without `fraction_of`
/// companions decodes exactly as [`decode_register`] would. `raw` is the sum of the raw numbers,
/// which validation guarantees share a unit and scale.
pub fn decode_total<W: AsRef<[u16]>>(
    profile: &Profile,
    name: &str,
    words: impl Fn(&RegisterDef) -> Option<W>,
    ratios: Ratios,
) -> Result<DecodedValue, DecodeError> {
    let one = |reg: &RegisterDef| {
        let w = words(reg).ok_or_else(|| DecodeError::Missing {
            name: reg.name.clone(),
            address: reg.address,
        })?;
        decode_register(reg, profile.word_order_of(reg), w.as_ref(), ratios)
    };
    let main = profile
        .register(name)
        .ok_or_else(|| DecodeError::UnknownRegister {
            name: name.to_owned(),
        })?;
    let mut total = one(main)?;
    for fraction in profile.fractions_of(name) {
        let part = one(fraction)?;
        total.raw += part.raw;
        total.value += part.value;
    }
    Ok(total)
}

/// Encodes a value in the canonical unit into the register words a meter would hold.
/// Integers are rounded to the nearest step of `scale`.
pub fn encode_register(
    reg: &RegisterDef,
    order: WordOrder,
    value: f64,
    ratios: Ratios,
) -> Result<Vec<u16>, DecodeError> {
    let bad = || DecodeError::Encode {
        name: reg.name.clone(),
        value,
        data_type: reg.data_type,
    };
    let in_unit = reg
        .quantity
        .canonical_unit()
        .convert(value, reg.unit)
        .map_err(|_| bad())?;
    let raw = (in_unit / ratios.factor(reg.ratio) - reg.offset) / reg.scale;
    let int = |lo: f64, hi: f64| -> Result<u64, DecodeError> {
        let r = raw.round();
        if r.is_finite() && r >= lo && r <= hi {
            Ok(r as i64 as u64)
        } else {
            Err(bad())
        }
    };
    let bits: u64 = match reg.data_type {
        DataType::Bool => u64::from(raw != 0.0),
        DataType::U16 => int(0.0, 65_535.0)?,
        DataType::I16 => int(-32_768.0, 32_767.0)? & 0xFFFF,
        DataType::U32 => int(0.0, 4_294_967_295.0)?,
        DataType::I32 => int(-2_147_483_648.0, 2_147_483_647.0)? & 0xFFFF_FFFF,
        DataType::U64 => {
            let r = raw.round();
            if r.is_finite() && r >= 0.0 {
                r as u64
            } else {
                return Err(bad());
            }
        }
        DataType::I64 => {
            let r = raw.round();
            if r.is_finite() {
                r as i64 as u64
            } else {
                return Err(bad());
            }
        }
        DataType::F32 => u64::from((raw as f32).to_bits()),
        DataType::F64 => raw.to_bits(),
        DataType::Bcd16 | DataType::Bcd32 => {
            let digits = u32::from(reg.data_type.words()) * 4;
            let mut n = int(0.0, 10f64.powi(digits as i32) - 1.0)?;
            let mut b = 0u64;
            for i in 0..digits {
                b |= (n % 10) << (4 * i);
                n /= 10;
            }
            b
        }
    };
    let n = usize::from(reg.data_type.words());
    let fix = |w: u16| if reg.byte_swap { w.swap_bytes() } else { w };
    let mut words: Vec<u16> = (0..n)
        .rev()
        .map(|i| fix((bits >> (16 * i)) as u16))
        .collect();
    if order == WordOrder::Little {
        words.reverse();
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{FunctionCode, Phase, Sentinel};
    use reading_model::Quantity;

    fn reg(t: DataType, unit: Unit, scale: f64) -> RegisterDef {
        RegisterDef {
            name: "r".into(),
            quantity: Quantity::EnergyImport,
            function: FunctionCode::Holding,
            address: 0,
            data_type: t,
            unit,
            scale,
            offset: 0.0,
            phase: Phase::Total,
            ratio: RatioKind::None,
            word_order: None,
            byte_swap: false,
            verified: true,
            not_available: Vec::new(),
            fraction_of: None,
        }
    }

    fn dec(r: &RegisterDef, o: WordOrder, w: &[u16]) -> f64 {
        decode_register(r, o, w, Ratios::default()).unwrap().value
    }

    #[test]
    fn float32_big_and_little_word_order() {
        // 1234.5f32 = 0x449A5000.
        let r = reg(DataType::F32, Unit::KilowattHour, 1.0);
        assert_eq!(dec(&r, WordOrder::Big, &[0x449A, 0x5000]), 1234.5);
        assert_eq!(dec(&r, WordOrder::Little, &[0x5000, 0x449A]), 1234.5);
    }

    #[test]
    fn integers_scale_and_units() {
        let r = reg(DataType::U32, Unit::KilowattHour, 0.01);
        assert!((dec(&r, WordOrder::Big, &[0x0001, 0x86A0]) - 1000.0).abs() < 1e-9);
        let r = reg(DataType::I64, Unit::WattHour, 1.0);
        assert_eq!(dec(&r, WordOrder::Big, &[0, 0, 0x000F, 0x4240]), 1000.0);
        let mut r = reg(DataType::I16, Unit::Kilowatt, 0.001);
        r.quantity = Quantity::PowerActive;
        assert!((dec(&r, WordOrder::Big, &[0xFC18]) + 1.0).abs() < 1e-12);
        let r = reg(DataType::Bcd32, Unit::KilowattHour, 0.01);
        assert!((dec(&r, WordOrder::Big, &[0x0012, 0x3456]) - 1234.56).abs() < 1e-9);
        assert!(matches!(
            decode_register(&r, WordOrder::Big, &[0x00A2, 0], Ratios::default()),
            Err(DecodeError::Bcd { .. })
        ));
    }

    #[test]
    fn ratios_and_errors() {
        let mut r = reg(DataType::U32, Unit::KilowattHour, 0.01);
        r.ratio = RatioKind::CtPt;
        let v =
            decode_register(&r, WordOrder::Big, &[0, 100], Ratios { ct: 40.0, pt: 10.0 }).unwrap();
        assert!((v.value - 400.0).abs() < 1e-9);
        assert_eq!(v.raw, 100.0);
        assert!(matches!(
            decode_register(&r, WordOrder::Big, &[0], Ratios::default()),
            Err(DecodeError::Length { .. })
        ));
        let f = reg(DataType::F32, Unit::KilowattHour, 1.0);
        assert!(matches!(
            decode_register(&f, WordOrder::Big, &[0x7FC0, 0], Ratios::default()),
            Err(DecodeError::NotAvailable { .. })
        ));
    }

    #[test]
    fn sentinels_decode_to_not_available() {
        let na = |r: &RegisterDef, w: &[u16]| {
            matches!(
                decode_register(r, WordOrder::Big, w, Ratios::default()),
                Err(DecodeError::NotAvailable { .. })
            )
        };
        // ABB: an unsigned 64-bit counter of all ones is "no value", not 1.8e17 kWh.
        let mut r = reg(DataType::U64, Unit::KilowattHour, 0.01);
        assert!(!na(&r, &[0xFFFF; 4]));
        r.not_available = vec![Sentinel::Max];
        assert!(na(&r, &[0xFFFF; 4]));
        assert!((dec(&r, WordOrder::Big, &[0, 0, 0x0001, 0x86A0]) - 1000.0).abs() < 1e-9);

        // Signed: max is 0x7FFF…, min is 0x8000…; -1 stays a value unless all_ones is listed.
        let mut r = reg(DataType::I32, Unit::Kilowatt, 0.01);
        r.quantity = Quantity::PowerActive;
        r.not_available = vec![Sentinel::Max];
        assert!(na(&r, &[0x7FFF, 0xFFFF]));
        assert!(!na(&r, &[0x8000, 0x0000]));
        assert!((dec(&r, WordOrder::Big, &[0xFFFF, 0xFFFF]) + 0.01).abs() < 1e-12);
        r.not_available = vec![Sentinel::Min];
        assert!(na(&r, &[0x8000, 0x0000]));
        r.not_available = vec![Sentinel::AllOnes];
        assert!(na(&r, &[0xFFFF, 0xFFFF]));

        // Word order applies before the comparison.
        let mut r = reg(DataType::I16, Unit::One, 0.001);
        r.quantity = Quantity::PowerFactor;
        r.not_available = vec![Sentinel::Max];
        assert!(na(&r, &[0x7FFF]));

        // BCD all ones is "no value" rather than a malformed-BCD error when declared.
        let mut r = reg(DataType::Bcd16, Unit::KilowattHour, 1.0);
        assert!(matches!(
            decode_register(&r, WordOrder::Big, &[0xFFFF], Ratios::default()),
            Err(DecodeError::Bcd { .. })
        ));
        r.not_available = vec![Sentinel::AllOnes];
        assert!(na(&r, &[0xFFFF]));
    }

    #[test]
    fn decode_total_adds_the_fraction_to_its_accumulator() {
        let p = Profile::parse(
            "test/flow.toml",
            r#"format = 1
vendor = "Test"
model = "Flow"
word_order = "little"

[[register]]
name = "volume"
quantity = "volume"
function = 3
address = 8
type = "i32"
unit = "m³"

[[register]]
name = "volume_fraction"
quantity = "volume"
function = 3
address = 10
type = "f32"
unit = "m³"
fraction_of = "volume"

[[register]]
name = "flow"
quantity = "flow"
function = 3
address = 0
type = "f32"
unit = "m³/h"
"#,
        )
        .unwrap();
        // Low word first: 123456 = 0x0001_E240; 0.5f32 = 0x3F00_0000.
        let dump = [(8u16, 0xE240u16), (9, 0x0001), (10, 0x0000), (11, 0x3F00)];
        let words = |r: &RegisterDef| -> Option<Vec<u16>> {
            r.span()
                .map(|a| {
                    dump.iter()
                        .find(|(d, _)| u32::from(*d) == a)
                        .map(|(_, w)| *w)
                })
                .collect()
        };
        let v = decode_total(&p, "volume", words, Ratios::default()).unwrap();
        assert_eq!(
            (v.raw, v.value, v.unit),
            (123_456.5, 123_456.5, Unit::CubicMetre)
        );
        assert!(matches!(
            decode_total(&p, "flow", words, Ratios::default()),
            Err(DecodeError::Missing { address: 0, .. })
        ));
        assert!(matches!(
            decode_total(&p, "nope", words, Ratios::default()),
            Err(DecodeError::UnknownRegister { .. })
        ));
    }

    #[test]
    fn encode_inverts_decode() {
        for (t, scale, v) in [
            (DataType::F32, 1.0, 1234.5),
            (DataType::U32, 0.01, 98_765.43),
            (DataType::I32, 0.1, -12.3),
            (DataType::U64, 0.01, 1e9),
            (DataType::I64, 1.0, 42.0),
            (DataType::F64, 1.0, 0.1),
            (DataType::Bcd32, 0.01, 999_999.99),
            (DataType::U16, 1.0, 65_535.0),
        ] {
            for order in [WordOrder::Big, WordOrder::Little] {
                let mut r = reg(t, Unit::KilowattHour, scale);
                r.quantity = Quantity::EnergyImport;
                if t == DataType::I32 {
                    r.quantity = Quantity::PowerActive;
                    r.unit = Unit::Kilowatt;
                }
                let w = encode_register(&r, order, v, Ratios::default()).unwrap();
                let back = dec(&r, order, &w);
                assert!(
                    (back - v).abs() <= scale / 2.0 + 1e-9,
                    "{t:?} {order:?} {v} -> {back}"
                );
            }
        }
        let r = reg(DataType::U16, Unit::KilowattHour, 1.0);
        assert!(encode_register(&r, WordOrder::Big, 70_000.0, Ratios::default()).is_err());
    }
}
