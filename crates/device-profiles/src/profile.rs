//! The profile format (version 1): one TOML file per meter model.
//!
//! ```toml
//! format = 1
//! vendor = "Eastron"
//! model = "SDM630"
//! word_order = "big"            # ABCD (default) or "little" (CDAB: low word first)
//! max_registers = 125           # per request, ≤ 125
//! forbidden = [[0x0100, 0x01FF]] # inclusive ranges the meter must never be asked for
//!
//! [[register]]
//! name = "energy_import"
//! quantity = "energy_import"
//! function = 4                  # 1 coils, 2 discrete inputs, 3 holding, 4 input registers
//! address = 0x0048              # 0-based PDU address
//! type = "f32"                  # u16 i16 u32 i32 u64 i64 f32 f64 bcd16 bcd32
//! unit = "kWh"                  # unit after scale and offset
//! scale = 1.0
//! offset = 0.0
//! phase = "total"
//! ratio = "none"                # "ct", "pt" or "ct_pt": multiply by the configured ratios
//! verified = true               # false: taken from a secondary source, check on a real meter
//! ```

use std::fmt;
use std::ops::Range;

use reading_model::{Quantity, Unit};
use serde::Deserialize;
use toml::Spanned;

/// A profile failed to parse or validate; names the file, line and key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}:{line}: {key}: {message}")]
    Invalid {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
    #[error("no profile named {0:?} (see `jieneng-gateway profiles`)")]
    Unknown(String),
}

/// Modbus read function codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FunctionCode {
    Coils = 1,
    DiscreteInputs = 2,
    Holding = 3,
    Input = 4,
}

impl FunctionCode {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Coils and discrete inputs are bits; registers are 16-bit words.
    pub fn is_bits(self) -> bool {
        matches!(self, Self::Coils | Self::DiscreteInputs)
    }
}

impl fmt::Display for FunctionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FC{:02}", self.code())
    }
}

impl<'de> Deserialize<'de> for FunctionCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            1 => Ok(Self::Coils),
            2 => Ok(Self::DiscreteInputs),
            3 => Ok(Self::Holding),
            4 => Ok(Self::Input),
            n => Err(serde::de::Error::custom(format!(
                "function code {n} is not a read function (1, 2, 3 or 4)"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    Bcd16,
    Bcd32,
}

impl DataType {
    /// Width in 16-bit registers (or in bits, for `bool` on coils).
    pub fn words(self) -> u16 {
        match self {
            Self::Bool | Self::U16 | Self::I16 | Self::Bcd16 => 1,
            Self::U32 | Self::I32 | Self::F32 | Self::Bcd32 => 2,
            Self::U64 | Self::I64 | Self::F64 => 4,
        }
    }

    /// The value at which an unsigned integer counter wraps to zero, if it is a counter type.
    pub fn wrap_at(self) -> Option<f64> {
        match self {
            Self::U16 => Some(65_536.0),
            Self::U32 => Some(4_294_967_296.0),
            Self::U64 => Some(18_446_744_073_709_551_616.0),
            Self::Bcd16 => Some(10_000.0),
            Self::Bcd32 => Some(100_000_000.0),
            _ => None,
        }
    }
}

/// Order of the 16-bit words of a multi-word value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WordOrder {
    /// High word first (ABCD).
    #[default]
    Big,
    /// Low word first (CDAB).
    Little,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Phase {
    #[default]
    #[serde(rename = "total")]
    Total,
    L1,
    L2,
    L3,
    N,
}

/// Which instrument-transformer ratio a secondary-side register must be multiplied by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RatioKind {
    #[default]
    None,
    Ct,
    Pt,
    CtPt,
}

/// One register (or bit) of a profile.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterDef {
    pub name: String,
    pub quantity: Quantity,
    pub function: FunctionCode,
    pub address: u16,
    #[serde(rename = "type")]
    pub data_type: DataType,
    pub unit: Unit,
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    #[serde(default)]
    pub phase: Phase,
    #[serde(default)]
    pub ratio: RatioKind,
    /// Overrides the profile's word order for this register.
    #[serde(default)]
    pub word_order: Option<WordOrder>,
    /// Swap the two bytes of every word (rare; some gateways' "BADC").
    #[serde(default)]
    pub byte_swap: bool,
    #[serde(default = "yes")]
    pub verified: bool,
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

impl RegisterDef {
    /// The address range this register occupies.
    pub fn span(&self) -> Range<u32> {
        let start = u32::from(self.address);
        start..start + u32::from(self.data_type.words())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    format: Spanned<u32>,
    vendor: String,
    model: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    word_order: WordOrder,
    #[serde(default = "max_regs")]
    max_registers: Spanned<u16>,
    #[serde(default)]
    forbidden: Vec<Spanned<[u16; 2]>>,
    /// Registers that hold the CT and PT ratios, when the meter stores them.
    #[serde(default)]
    ct_ratio_register: Option<Spanned<u16>>,
    #[serde(default)]
    pt_ratio_register: Option<Spanned<u16>>,
    register: Vec<Spanned<RegisterDef>>,
}

fn max_regs() -> Spanned<u16> {
    Spanned::new(0..0, 125)
}

/// A validated profile: registers fit in the address space, none overlaps a forbidden range,
/// names are unique.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// `vendor/model` in lower case, e.g. `eastron/sdm630`: how configs refer to it.
    pub id: String,
    pub vendor: String,
    pub model: String,
    pub description: String,
    pub word_order: WordOrder,
    pub max_registers: u16,
    pub forbidden: Vec<[u16; 2]>,
    pub ct_ratio_register: Option<u16>,
    pub pt_ratio_register: Option<u16>,
    pub registers: Vec<RegisterDef>,
}

pub const FORMAT_VERSION: u32 = 1;

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl Profile {
    /// Parses and validates a profile; `file` is used in error messages and, without its
    /// extension, as the id (`eastron/sdm630.toml` → `eastron/sdm630`).
    pub fn parse(file: &str, text: &str) -> Result<Self, ProfileError> {
        let raw: ProfileFile = toml::from_str(text).map_err(|e| ProfileError::Parse {
            file: file.to_owned(),
            message: e.to_string().trim_end().replace('\n', " | "),
        })?;
        let invalid = |span: Range<usize>, key: String, message: String| ProfileError::Invalid {
            file: file.to_owned(),
            line: line_of(text, span.start),
            key,
            message,
        };
        if *raw.format.get_ref() != FORMAT_VERSION {
            return Err(invalid(
                raw.format.span(),
                "format".into(),
                format!(
                    "format {} is not supported (expected {FORMAT_VERSION})",
                    raw.format.get_ref()
                ),
            ));
        }
        let max = *raw.max_registers.get_ref();
        if !(1..=125).contains(&max) {
            return Err(invalid(
                raw.max_registers.span(),
                "max_registers".into(),
                format!("{max} is outside 1..=125 (the Modbus limit for one read)"),
            ));
        }
        for (i, f) in raw.forbidden.iter().enumerate() {
            let [a, b] = *f.get_ref();
            if a > b {
                return Err(invalid(
                    f.span(),
                    format!("forbidden[{i}]"),
                    format!("range start {a:#06x} is after its end {b:#06x}"),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, r) in raw.register.iter().enumerate() {
            let key = |k: &str| format!("register[{i}].{k} ({})", r.get_ref().name);
            let reg = r.get_ref();
            if !names.insert(reg.name.clone()) {
                return Err(invalid(
                    r.span(),
                    key("name"),
                    "duplicate register name".into(),
                ));
            }
            if reg.span().end > 0x1_0000 {
                return Err(invalid(
                    r.span(),
                    key("address"),
                    format!(
                        "{:#06x} + {} words runs past 0xFFFF",
                        reg.address,
                        reg.data_type.words()
                    ),
                ));
            }
            if reg.function.is_bits() != (reg.data_type == DataType::Bool) {
                return Err(invalid(
                    r.span(),
                    key("type"),
                    format!(
                        "type {:?} cannot be read with {}",
                        reg.data_type, reg.function
                    ),
                ));
            }
            if !reg.scale.is_finite() || reg.scale == 0.0 || !reg.offset.is_finite() {
                return Err(invalid(
                    r.span(),
                    key("scale"),
                    "scale must be finite and non-zero, offset finite".into(),
                ));
            }
            if reg
                .unit
                .convert(1.0, reg.quantity.canonical_unit())
                .is_err()
            {
                return Err(invalid(
                    r.span(),
                    key("unit"),
                    format!(
                        "{} cannot measure {} (stored in {})",
                        reg.unit,
                        reg.quantity,
                        reg.quantity.canonical_unit()
                    ),
                ));
            }
            for f in &raw.forbidden {
                let [a, b] = *f.get_ref();
                let fr = u32::from(a)..u32::from(b) + 1;
                let span = reg.span();
                if span.start < fr.end && fr.start < span.end {
                    return Err(invalid(
                        r.span(),
                        key("address"),
                        format!("overlaps forbidden range {a:#06x}..={b:#06x}"),
                    ));
                }
            }
        }
        let id = file
            .trim_end_matches(".toml")
            .rsplit('/')
            .take(2)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("/")
            .to_ascii_lowercase();
        Ok(Profile {
            id,
            vendor: raw.vendor,
            model: raw.model,
            description: raw.description,
            word_order: raw.word_order,
            max_registers: max,
            forbidden: raw.forbidden.into_iter().map(|f| f.into_inner()).collect(),
            ct_ratio_register: raw.ct_ratio_register.map(|s| s.into_inner()),
            pt_ratio_register: raw.pt_ratio_register.map(|s| s.into_inner()),
            registers: raw.register.into_iter().map(|r| r.into_inner()).collect(),
        })
    }

    pub fn register(&self, name: &str) -> Option<&RegisterDef> {
        self.registers.iter().find(|r| r.name == name)
    }

    /// The word order that applies to a register.
    pub fn word_order_of(&self, r: &RegisterDef) -> WordOrder {
        r.word_order.unwrap_or(self.word_order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"format = 1
vendor = "Test"
model = "T1"
forbidden = [[0x0100, 0x01FF]]

[[register]]
name = "energy_import"
quantity = "energy_import"
function = 3
address = 0x0010
type = "u32"
unit = "Wh"
"#;

    #[test]
    fn parses_a_minimal_profile() {
        let p = Profile::parse("test/t1.toml", MINIMAL).unwrap();
        assert_eq!(p.id, "test/t1");
        assert_eq!(p.max_registers, 125);
        let r = &p.registers[0];
        assert_eq!(
            (r.function, r.address, r.data_type),
            (FunctionCode::Holding, 0x10, DataType::U32)
        );
        assert_eq!(r.scale, 1.0);
        assert!(r.verified);
    }

    fn err(text: &str) -> String {
        Profile::parse("test/t1.toml", text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = err(&MINIMAL.replace("address = 0x0010", "address = 0x0180"));
        assert!(
            e.starts_with("test/t1.toml:6: register[0].address (energy_import)"),
            "{e}"
        );
        assert!(e.contains("forbidden"), "{e}");

        let e = err(&MINIMAL.replace("function = 3", "function = 5"));
        assert!(
            e.contains("test/t1.toml") && e.contains("line 9") && e.contains("not a read function"),
            "{e}"
        );

        let e = err(&MINIMAL.replace("unit = \"Wh\"", "unit = \"V\""));
        assert!(
            e.contains("register[0].unit") && e.contains("cannot measure energy_import"),
            "{e}"
        );

        let e = err(&MINIMAL.replace("format = 1", "format = 2"));
        assert!(e.starts_with("test/t1.toml:1: format"), "{e}");

        let e = err(&format!("{MINIMAL}bogus = 1\n"));
        assert!(e.contains("bogus"), "{e}");

        let e = err(&MINIMAL.replace("type = \"u32\"", "type = \"bool\""));
        assert!(e.contains("register[0].type"), "{e}");

        let e = err(&MINIMAL.replace("forbidden = [[0x0100, 0x01FF]]", "max_registers = 200"));
        assert!(e.contains("max_registers") && e.contains(":4:"), "{e}");
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let dup = format!(
            "{MINIMAL}\n{}",
            &MINIMAL[MINIMAL.find("[[register]]").unwrap()..]
        );
        assert!(err(&dup).contains("duplicate"));
    }
}
