//! 分类 / 分项 energy codes of the 2008 building-energy data-collection guideline.
//!
//! A 5-character energy code is `CC I S1 S2`: 2-digit category, 分项 letter (`0` = the whole
//! category), 一级子项 digit, 二级子项 letter. The names of items and sub-items are data
//! ([`ItemCatalog`]), because implementations disagree beyond the first levels (DOMAIN.md §10).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::CodeError;
use crate::unit::Unit;

/// The 13 分类 energy categories (2-digit codes `01`..`13`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Category {
    Electricity,
    Water,
    Gas,
    DistrictHeating,
    DistrictCooling,
    Other,
    Coal,
    Lpg,
    ManufacturedGas,
    Gasoline,
    Kerosene,
    Diesel,
    Renewable,
}

impl Category {
    pub const ALL: [Category; 13] = [
        Self::Electricity,
        Self::Water,
        Self::Gas,
        Self::DistrictHeating,
        Self::DistrictCooling,
        Self::Other,
        Self::Coal,
        Self::Lpg,
        Self::ManufacturedGas,
        Self::Gasoline,
        Self::Kerosene,
        Self::Diesel,
        Self::Renewable,
    ];

    /// The 2-digit code, `01` electricity … `13` renewable.
    pub fn code(self) -> &'static str {
        match self {
            Self::Electricity => "01",
            Self::Water => "02",
            Self::Gas => "03",
            Self::DistrictHeating => "04",
            Self::DistrictCooling => "05",
            Self::Other => "06",
            Self::Coal => "07",
            Self::Lpg => "08",
            Self::ManufacturedGas => "09",
            Self::Gasoline => "10",
            Self::Kerosene => "11",
            Self::Diesel => "12",
            Self::Renewable => "13",
        }
    }

    pub fn parse(s: &str) -> Result<Self, CodeError> {
        Self::ALL
            .into_iter()
            .find(|c| c.code() == s)
            .ok_or_else(|| CodeError::Category(s.to_owned()))
    }

    pub fn name_zh(self) -> &'static str {
        match self {
            Self::Electricity => "电",
            Self::Water => "水",
            Self::Gas => "燃气",
            Self::DistrictHeating => "集中供热量",
            Self::DistrictCooling => "集中供冷量",
            Self::Other => "其它能源",
            Self::Coal => "煤",
            Self::Lpg => "液化石油气",
            Self::ManufacturedGas => "人工煤气",
            Self::Gasoline => "汽油",
            Self::Kerosene => "煤油",
            Self::Diesel => "柴油",
            Self::Renewable => "可再生能源",
        }
    }

    pub fn name_en(self) -> &'static str {
        match self {
            Self::Electricity => "electricity",
            Self::Water => "water",
            Self::Gas => "natural gas",
            Self::DistrictHeating => "district heating",
            Self::DistrictCooling => "district cooling",
            Self::Other => "other energy",
            Self::Coal => "coal",
            Self::Lpg => "LPG",
            Self::ManufacturedGas => "manufactured gas",
            Self::Gasoline => "gasoline",
            Self::Kerosene => "kerosene",
            Self::Diesel => "diesel",
            Self::Renewable => "renewable energy",
        }
    }

    /// The canonical unit consumption of this category is stored in.
    pub fn consumption_unit(self) -> Unit {
        match self {
            Self::Electricity | Self::Renewable => Unit::KilowattHour,
            Self::Water | Self::Gas | Self::ManufacturedGas => Unit::CubicMetre,
            Self::DistrictHeating | Self::DistrictCooling => Unit::Gigajoule,
            Self::Coal | Self::Lpg => Unit::Kilogram,
            Self::Gasoline | Self::Kerosene | Self::Diesel => Unit::Litre,
            // 其它能源 is reported directly in standard coal.
            Self::Other => Unit::KilogramCoalEquivalent,
        }
    }

    /// The 5-character code of the whole category, e.g. `01000`.
    pub fn total_code(self) -> EnergyCode {
        EnergyCode(*b"00000").with_category(self)
    }

    /// Only electricity is split into 分项 items in the guideline.
    pub fn has_items(self) -> bool {
        self == Self::Electricity
    }
}

impl TryFrom<String> for Category {
    type Error = CodeError;
    fn try_from(s: String) -> Result<Self, CodeError> {
        Self::parse(&s)
    }
}

impl From<Category> for String {
    fn from(c: Category) -> String {
        c.code().to_owned()
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A 5-character energy (item) code: `01A10`, `01B1A`, `02000`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnergyCode([u8; 5]);

impl EnergyCode {
    pub fn parse(s: &str) -> Result<Self, CodeError> {
        let err = || CodeError::EnergyCode(s.to_owned());
        let b: [u8; 5] = s.as_bytes().try_into().map_err(|_| err())?;
        Category::parse(&s[..2]).map_err(|_| err())?;
        let (item, s1, s2) = (b[2], b[3], b[4]);
        let item_ok = item == b'0' || item.is_ascii_uppercase();
        let s1_ok = s1.is_ascii_digit() && (item != b'0' || s1 == b'0');
        // A second-level letter needs a first-level digit above it.
        let s2_ok = s2 == b'0' || (s2.is_ascii_uppercase() && s1 != b'0');
        if item_ok && s1_ok && s2_ok {
            Ok(Self(b))
        } else {
            Err(err())
        }
    }

    /// Parses `s` and checks that it belongs to `category`.
    pub fn parse_in(s: &str, category: Category) -> Result<Self, CodeError> {
        let code = Self::parse(s)?;
        if code.category() == category {
            Ok(code)
        } else {
            Err(CodeError::ItemCategory {
                code: s.to_owned(),
                category: category.code().to_owned(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII bytes pass `parse`.
        std::str::from_utf8(&self.0).unwrap_or("00000")
    }

    pub fn category(&self) -> Category {
        Category::parse(&self.as_str()[..2]).unwrap_or(Category::Other)
    }

    fn with_category(mut self, c: Category) -> Self {
        self.0[..2].copy_from_slice(c.code().as_bytes());
        self
    }

    /// 0 = whole category, 1 = 分项, 2 = 一级子项, 3 = 二级子项.
    pub fn level(&self) -> u8 {
        match (self.0[2], self.0[3], self.0[4]) {
            (b'0', _, _) => 0,
            (_, b'0', _) => 1,
            (_, _, b'0') => 2,
            _ => 3,
        }
    }

    /// The code one level up the tree (`01B1A` → `01B10` → `01B00` → `01000`); `None` at the top.
    pub fn parent(&self) -> Option<EnergyCode> {
        let mut b = self.0;
        match self.level() {
            0 => return None,
            1 => b[2] = b'0',
            2 => b[3] = b'0',
            _ => b[4] = b'0',
        }
        Some(Self(b))
    }

    /// Whether `self` is `ancestor` or lies below it in the item tree.
    pub fn is_within(&self, ancestor: &EnergyCode) -> bool {
        let mut cur = Some(*self);
        while let Some(c) = cur {
            if c == *ancestor {
                return true;
            }
            cur = c.parent();
        }
        false
    }
}

impl fmt::Debug for EnergyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnergyCode({})", self.as_str())
    }
}

impl fmt::Display for EnergyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for EnergyCode {
    type Error = CodeError;
    fn try_from(s: String) -> Result<Self, CodeError> {
        Self::parse(&s)
    }
}

impl From<EnergyCode> for String {
    fn from(c: EnergyCode) -> String {
        c.as_str().to_owned()
    }
}

/// One named node of the item tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemEntry {
    pub code: EnergyCode,
    pub zh: String,
    pub en: String,
    /// False where implementations disagree on the code → name mapping (DOMAIN.md §10):
    /// a deployment should confirm or override it.
    #[serde(default = "yes")]
    pub verified: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    item: Vec<ItemEntry>,
}

/// Names of the 分项 items and sub-items; built-in from the 2008 guideline, overridable per deployment.
#[derive(Debug, Clone)]
pub struct ItemCatalog {
    entries: BTreeMap<EnergyCode, ItemEntry>,
}

const BUILTIN_ITEMS: &str = include_str!("../data/items.toml");

impl ItemCatalog {
    /// The catalogue of the 2008 guideline (electricity items and sub-items, category totals).
    pub fn builtin() -> Self {
        // The embedded file is checked by a unit test; an empty catalogue is the only fallback.
        let file: CatalogFile =
            toml::from_str(BUILTIN_ITEMS).unwrap_or(CatalogFile { item: vec![] });
        let mut entries: BTreeMap<_, _> = file.item.into_iter().map(|e| (e.code, e)).collect();
        for c in Category::ALL {
            entries.entry(c.total_code()).or_insert_with(|| ItemEntry {
                code: c.total_code(),
                zh: c.name_zh().to_owned(),
                en: c.name_en().to_owned(),
                verified: true,
            });
        }
        Self { entries }
    }

    /// Replaces or adds names, e.g. a deployment's own D 特殊用电 sub-items.
    pub fn with_overrides(mut self, overrides: impl IntoIterator<Item = ItemEntry>) -> Self {
        for e in overrides {
            self.entries.insert(e.code, e);
        }
        self
    }

    pub fn get(&self, code: &EnergyCode) -> Option<&ItemEntry> {
        self.entries.get(code)
    }

    /// The name of a code, falling back to the nearest named ancestor (`01B1Z` → 冷热站).
    pub fn name(&self, code: &EnergyCode) -> (&str, &str) {
        let mut cur = Some(*code);
        while let Some(c) = cur {
            if let Some(e) = self.entries.get(&c) {
                return (&e.zh, &e.en);
            }
            cur = c.parent();
        }
        ("未知", "unknown")
    }

    pub fn entries(&self) -> impl Iterator<Item = &ItemEntry> {
        self.entries.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_thirteen_categories_round_trip() {
        let codes: Vec<_> = Category::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(
            codes,
            [
                "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13"
            ]
        );
        for c in Category::ALL {
            assert_eq!(Category::parse(c.code()).unwrap(), c);
        }
        assert_eq!(Category::DistrictHeating.name_zh(), "集中供热量");
        assert!(Category::parse("14").is_err());
        assert!(Category::parse("00").is_err());
    }

    #[test]
    fn energy_code_structure() {
        let c = EnergyCode::parse("01B1A").unwrap();
        assert_eq!(c.category(), Category::Electricity);
        assert_eq!(c.level(), 3);
        assert_eq!(c.parent().unwrap().as_str(), "01B10");
        assert_eq!(c.parent().unwrap().parent().unwrap().as_str(), "01B00");
        assert!(c.is_within(&EnergyCode::parse("01000").unwrap()));
        assert!(!c.is_within(&EnergyCode::parse("01A00").unwrap()));
        assert_eq!(Category::Water.total_code().as_str(), "02000");
        for bad in [
            "01", "1A000", "01a00", "010A0", "0100A", "01A0B", "14000", "01A1a",
        ] {
            assert!(EnergyCode::parse(bad).is_err(), "{bad}");
        }
        assert!(EnergyCode::parse_in("01A10", Category::Water).is_err());
    }

    #[test]
    fn builtin_catalogue_has_guideline_items() {
        let toml_ok: Result<CatalogFile, _> = toml::from_str(BUILTIN_ITEMS);
        assert!(toml_ok.is_ok(), "{toml_ok:?}");
        let cat = ItemCatalog::builtin();
        let name = |s| cat.name(&EnergyCode::parse(s).unwrap()).0.to_owned();
        assert_eq!(name("01A00"), "照明插座用电");
        assert_eq!(name("01A10"), "照明与插座");
        assert_eq!(name("01A20"), "走廊与应急");
        assert_eq!(name("01A30"), "室外景观照明");
        assert_eq!(name("01B00"), "空调用电");
        assert_eq!(name("01B10"), "冷热站");
        assert_eq!(name("01B20"), "空调末端");
        assert_eq!(name("01C00"), "动力用电");
        assert_eq!(name("01C10"), "电梯");
        assert_eq!(name("01C20"), "水泵");
        assert_eq!(name("01C30"), "通风机");
        assert_eq!(name("01D00"), "特殊用电");
        assert_eq!(name("01D10"), "信息中心");
        assert_eq!(name("02000"), "水");
        // Unknown sub-items fall back to the nearest named parent.
        assert_eq!(name("01B1Z"), "冷热站");
        // Sub-items where implementations disagree are marked unverified.
        let d20 = cat.get(&EnergyCode::parse("01D20").unwrap()).unwrap();
        assert!(!d20.verified);
        assert!(
            cat.get(&EnergyCode::parse("01D10").unwrap())
                .unwrap()
                .verified
        );
    }
}
