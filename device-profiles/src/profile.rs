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
//! not_available = []            # raw patterns that mean "no value" (see below)
//! fraction_of = "volume_total"  # this register is the decimal fraction of another (see below)
//! ```
//!
//! Optional register keys added after the first release; both default to "absent", so older
//! files keep their meaning:
//!
//! - `not_available`: a list of sentinels the meter writes when it has no value. A register that
//!   holds one decodes to [`DecodeError::NotAvailable`](crate::decode::DecodeError) instead of a
//!   number (ABB meters, for example, answer all ones for a quantity the model lacks).
//!   - `"max"`: the type's largest value: all ones for `u16`/`u32`/`u64`, `0x7FFF…` for
//!     `i16`/`i32`/`i64`;
//!   - `"min"`: the smallest value of a signed type, `0x8000…`;
//!   - `"all_ones"`: every word `0xFFFF`, for integer and BCD types (for a signed type that is -1).
//!
//!   Float registers need none (a NaN is always "not available"); a sentinel that means nothing
//!   for the register's type is rejected.
//! - `fraction_of`: names the register this one completes. Flow and heat meters keep a total
//!   as an integer accumulator plus a float decimal fraction in a second register; the value is
//!   their sum (see [`decode_total`](crate::decode::decode_total)). The fraction must have the
//!   same quantity, unit and scale as its accumulator, no offset, and may not itself be completed.

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
    /// Raw patterns that mean the meter has no value for this register.
    #[serde(default)]
    pub not_available: Vec<Sentinel>,
    /// The register whose value this one completes (the decimal fraction of an accumulator).
    #[serde(default)]
    pub fraction_of: Option<String>,
}

/// A raw pattern a meter writes instead of a value it does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sentinel {
    /// The type's largest value: all ones if unsigned, `0x7FFF…` if signed.
    Max,
    /// The smallest value of a signed type, `0x8000…`.
    Min,
    /// Every word `0xFFFF`.
    AllOnes,
}

impl Sentinel {
    /// The assembled (big-endian) bits this sentinel stands for in a register of type `t`, or
    /// `None` if it means nothing for that type.
    pub fn bits(self, t: DataType) -> Option<u64> {
        use DataType::*;
        let ones = |words: u16| u64::MAX >> (64 - 16 * u32::from(words));
        match (self, t) {
            (Self::Max, U16 | U32 | U64) => Some(ones(t.words())),
            (Self::Max, I16 | I32 | I64) => Some(ones(t.words()) >> 1),
            (Self::Min, I16 | I32 | I64) => Some((ones(t.words()) >> 1) + 1),
            (Self::AllOnes, U16 | I16 | U32 | I32 | U64 | I64 | Bcd16 | Bcd32) => {
                Some(ones(t.words()))
            }
            _ => None,
        }
    }
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

    /// Whether this register only completes another (`fraction_of`) and is no value on its own.
    pub fn is_fraction(&self) -> bool {
        self.fraction_of.is_some()
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

/// `vendor/model` in lower case from a profile's file name (`eastron/sdm630.toml`).
fn profile_id(file: &str) -> String {
    file.trim_end_matches(".toml")
        .rsplit('/')
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("/")
        .to_ascii_lowercase()
}

/// The file as a whole: its format version, its request size, its forbidden ranges.
fn check_header(
    raw: &ProfileFile,
    invalid: &dyn Fn(Range<usize>, String, String) -> ProfileError,
) -> Result<(), ProfileError> {
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
    Ok(())
}

/// One register on its own: it fits the address space, its type suits its function, its
/// scale, unit and not-available sentinels make sense.
fn check_register(
    reg: &RegisterDef,
    bad: &dyn Fn(&str, String) -> ProfileError,
) -> Result<(), ProfileError> {
    if reg.span().end > 0x1_0000 {
        return Err(bad(
            "address",
            format!(
                "{:#06x} + {} words runs past 0xFFFF",
                reg.address,
                reg.data_type.words()
            ),
        ));
    }
    if reg.function.is_bits() != (reg.data_type == DataType::Bool) {
        return Err(bad(
            "type",
            format!(
                "type {:?} cannot be read with {}",
                reg.data_type, reg.function
            ),
        ));
    }
    if !reg.scale.is_finite() || reg.scale == 0.0 || !reg.offset.is_finite() {
        return Err(bad(
            "scale",
            "scale must be finite and non-zero, offset finite".into(),
        ));
    }
    if reg
        .unit
        .convert(1.0, reg.quantity.canonical_unit())
        .is_err()
    {
        return Err(bad(
            "unit",
            format!(
                "{} cannot measure {} (stored in {})",
                reg.unit,
                reg.quantity,
                reg.quantity.canonical_unit()
            ),
        ));
    }
    for s in &reg.not_available {
        if s.bits(reg.data_type).is_none() {
            return Err(bad(
                "not_available",
                format!(
                    "sentinel {s:?} means nothing for type {:?}{}",
                    reg.data_type,
                    if matches!(reg.data_type, DataType::F32 | DataType::F64) {
                        " (a float reports NaN, which is always not available)"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// What is wrong with a register's `fraction_of`, if anything: the register it completes
/// must exist, be another one, not be a fraction itself, and read the same quantity, unit and
/// scale.
fn fraction_problem(reg: &RegisterDef, registers: &[Spanned<RegisterDef>]) -> Option<String> {
    let target = reg.fraction_of.as_ref()?;
    match registers
        .iter()
        .map(|t| t.get_ref())
        .find(|t| &t.name == target)
    {
        None => Some(format!("no register named {target:?}")),
        Some(t) if t.name == reg.name => Some("a register cannot complete itself".into()),
        Some(t) if t.fraction_of.is_some() => Some(format!(
            "{target:?} is itself a fraction; fractions do not chain"
        )),
        Some(t)
            if t.quantity != reg.quantity
                || t.unit != reg.unit
                || t.scale != reg.scale
                || reg.offset != 0.0 =>
        {
            Some(format!(
                "a fraction needs the quantity, unit and scale of {target:?} \
                 ({} in {} ×{}) and no offset",
                t.quantity, t.unit, t.scale
            ))
        }
        Some(_) => None,
    }
}

/// The forbidden range a register's words overlap, if any, as an error message.
fn forbidden_overlap(reg: &RegisterDef, forbidden: &[Spanned<[u16; 2]>]) -> Option<String> {
    let span = reg.span();
    forbidden.iter().find_map(|f| {
        let [a, b] = *f.get_ref();
        let fr = u32::from(a)..u32::from(b) + 1;
        (span.start < fr.end && fr.start < span.end)
            .then(|| format!("overlaps forbidden range {a:#06x}..={b:#06x}"))
    })
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
        check_header(&raw, &invalid)?;
        let mut names = std::collections::HashSet::new();
        for (i, r) in raw.register.iter().enumerate() {
            let bad = |k: &str, message: String| {
                invalid(
                    r.span(),
                    format!("register[{i}].{k} ({})", r.get_ref().name),
                    message,
                )
            };
            let reg = r.get_ref();
            if !names.insert(reg.name.clone()) {
                return Err(bad("name", "duplicate register name".into()));
            }
            check_register(reg, &bad)?;
            if let Some(message) = fraction_problem(reg, &raw.register) {
                return Err(bad("fraction_of", message));
            }
            if let Some(message) = forbidden_overlap(reg, &raw.forbidden) {
                return Err(bad("address", message));
            }
        }
        Ok(Profile {
            id: profile_id(file),
            vendor: raw.vendor,
            model: raw.model,
            description: raw.description,
            word_order: raw.word_order,
            max_registers: *raw.max_registers.get_ref(),
            forbidden: raw.forbidden.into_iter().map(|f| f.into_inner()).collect(),
            ct_ratio_register: raw.ct_ratio_register.map(|s| s.into_inner()),
            pt_ratio_register: raw.pt_ratio_register.map(|s| s.into_inner()),
            registers: raw.register.into_iter().map(|r| r.into_inner()).collect(),
        })
    }

    pub fn register(&self, name: &str) -> Option<&RegisterDef> {
        self.registers.iter().find(|r| r.name == name)
    }

    /// The registers declared `fraction_of` the register `name`.
    pub fn fractions_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a RegisterDef> {
        self.registers
            .iter()
            .filter(move |r| r.fraction_of.as_deref() == Some(name))
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
    fn sentinels_stand_for_the_type_extremes() {
        use DataType::*;
        assert_eq!(Sentinel::Max.bits(U16), Some(0xFFFF));
        assert_eq!(Sentinel::Max.bits(U64), Some(u64::MAX));
        assert_eq!(Sentinel::Max.bits(I32), Some(0x7FFF_FFFF));
        assert_eq!(Sentinel::Min.bits(I16), Some(0x8000));
        assert_eq!(Sentinel::Min.bits(I64), Some(0x8000_0000_0000_0000));
        assert_eq!(Sentinel::AllOnes.bits(I32), Some(0xFFFF_FFFF));
        assert_eq!(Sentinel::AllOnes.bits(Bcd16), Some(0xFFFF));
        assert_eq!(Sentinel::Min.bits(U32), None);
        assert_eq!(Sentinel::Max.bits(Bcd32), None);
        assert_eq!(Sentinel::AllOnes.bits(F32), None);
        assert_eq!(Sentinel::Max.bits(Bool), None);
    }

    #[test]
    fn not_available_is_parsed_and_checked_against_the_type() {
        let text = MINIMAL.replace(
            "unit = \"Wh\"",
            "unit = \"Wh\"\nnot_available = [\"max\", \"all_ones\"]",
        );
        let p = Profile::parse("test/t1.toml", &text).unwrap();
        assert_eq!(
            p.registers[0].not_available,
            vec![Sentinel::Max, Sentinel::AllOnes]
        );
        // Files without the key keep their meaning.
        assert!(
            Profile::parse("test/t1.toml", MINIMAL).unwrap().registers[0]
                .not_available
                .is_empty()
        );

        let e = err(&MINIMAL.replace("unit = \"Wh\"", "unit = \"Wh\"\nnot_available = [\"min\"]"));
        assert!(
            e.starts_with("test/t1.toml:6: register[0].not_available (energy_import)"),
            "{e}"
        );
        assert!(e.contains("Min") && e.contains("U32"), "{e}");

        let e = err(&MINIMAL.replace(
            "type = \"u32\"\nunit = \"Wh\"",
            "type = \"f32\"\nunit = \"Wh\"\nnot_available = [\"all_ones\"]",
        ));
        assert!(
            e.contains("register[0].not_available") && e.contains("NaN"),
            "{e}"
        );

        let e = err(&MINIMAL.replace("unit = \"Wh\"", "unit = \"Wh\"\nnot_available = [\"nan\"]"));
        assert!(e.starts_with("test/t1.toml") && e.contains("nan"), "{e}");
    }

    const PAIR: &str = r#"format = 1
vendor = "Test"
model = "T1"
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
"#;

    #[test]
    fn fraction_of_links_a_fraction_to_its_accumulator() {
        let p = Profile::parse("test/t1.toml", PAIR).unwrap();
        let parts: Vec<_> = p.fractions_of("volume").map(|r| r.name.as_str()).collect();
        assert_eq!(parts, vec!["volume_fraction"]);
        assert!(p.register("volume_fraction").unwrap().is_fraction());
        assert!(!p.register("volume").unwrap().is_fraction());
        assert_eq!(p.fractions_of("volume_fraction").count(), 0);
    }

    #[test]
    fn fraction_of_errors_name_file_line_and_key() {
        let key = "test/t1.toml:14: register[1].fraction_of (volume_fraction)";
        let e = err(&PAIR.replace("fraction_of = \"volume\"", "fraction_of = \"volumen\""));
        assert!(e.starts_with(key) && e.contains("no register named"), "{e}");

        let e = err(&PAIR.replace(
            "fraction_of = \"volume\"",
            "fraction_of = \"volume_fraction\"",
        ));
        assert!(e.starts_with(key) && e.contains("itself"), "{e}");

        let e = err(&PAIR.replace("unit = \"m³\"\nfraction_of", "unit = \"L\"\nfraction_of"));
        assert!(e.starts_with(key) && e.contains("unit"), "{e}");

        let e = err(&PAIR.replace(
            "fraction_of = \"volume\"",
            "fraction_of = \"volume\"\noffset = 1.0",
        ));
        assert!(e.starts_with(key) && e.contains("offset"), "{e}");

        let chained = format!(
            "{PAIR}\n[[register]]\nname = \"x\"\nquantity = \"volume\"\nfunction = 3\naddress = 12\n\
             type = \"f32\"\nunit = \"m³\"\nfraction_of = \"volume_fraction\"\n"
        );
        let e = err(&chained);
        assert!(
            e.contains("register[2].fraction_of (x)") && e.contains("chain"),
            "{e}"
        );
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
