//! Identities: the 分户 account code of a building, meters within it, gateways.
//!
//! Each holds its text in an `Arc<str>`: a gateway stamps the same account and meter on tens of
//! thousands of readings a second, and cloning one is then a reference count, not an allocation.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::CodeError;

/// 建筑类别编码, the 7th character of an account code (GB/T building-energy guideline, 2008).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BuildingClass {
    Office,
    Mall,
    Hotel,
    Education,
    Medical,
    Sports,
    Mixed,
    Other,
}

impl BuildingClass {
    pub const ALL: [BuildingClass; 8] = [
        Self::Office,
        Self::Mall,
        Self::Hotel,
        Self::Education,
        Self::Medical,
        Self::Sports,
        Self::Mixed,
        Self::Other,
    ];

    pub fn letter(self) -> char {
        match self {
            Self::Office => 'A',
            Self::Mall => 'B',
            Self::Hotel => 'C',
            Self::Education => 'D',
            Self::Medical => 'E',
            Self::Sports => 'F',
            Self::Mixed => 'G',
            Self::Other => 'H',
        }
    }

    pub fn from_letter(c: char) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.letter() == c)
    }

    pub fn name_zh(self) -> &'static str {
        match self {
            Self::Office => "办公建筑",
            Self::Mall => "商场建筑",
            Self::Hotel => "宾馆饭店建筑",
            Self::Education => "文化教育建筑",
            Self::Medical => "医疗卫生建筑",
            Self::Sports => "体育建筑",
            Self::Mixed => "综合建筑",
            Self::Other => "其它建筑",
        }
    }

    pub fn name_en(self) -> &'static str {
        match self {
            Self::Office => "office",
            Self::Mall => "shopping mall",
            Self::Hotel => "hotel",
            Self::Education => "culture & education",
            Self::Medical => "medical & health",
            Self::Sports => "sports",
            Self::Mixed => "mixed use",
            Self::Other => "other",
        }
    }
}

/// A 分户 account: the 10-character building code — 6-digit GB/T 2260 administrative division,
/// building-class letter, 3-digit serial (e.g. `110108A001`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountCode(Arc<str>);

impl AccountCode {
    pub fn parse(s: &str) -> Result<Self, CodeError> {
        let b = s.as_bytes();
        let ok = b.len() == 10
            && b[..6].iter().all(u8::is_ascii_digit)
            && BuildingClass::from_letter(b[6] as char).is_some()
            && b[7..].iter().all(u8::is_ascii_digit)
            && &b[7..] != b"000";
        if ok {
            Ok(Self(Arc::from(s)))
        } else {
            Err(CodeError::Account(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 6-digit administrative division (GB/T 2260).
    pub fn division(&self) -> &str {
        &self.0[..6]
    }

    /// The 2-digit province prefix of the division, e.g. `11` for Beijing.
    pub fn province(&self) -> &str {
        &self.0[..2]
    }

    pub fn building_class(&self) -> BuildingClass {
        // Checked in `parse`; `Other` is only reachable through a broken invariant.
        BuildingClass::from_letter(self.0.as_bytes()[6] as char).unwrap_or(BuildingClass::Other)
    }
}

impl TryFrom<String> for AccountCode {
    type Error = CodeError;
    fn try_from(s: String) -> Result<Self, CodeError> {
        Self::parse(&s)
    }
}

impl From<AccountCode> for String {
    fn from(a: AccountCode) -> String {
        a.0.as_ref().to_owned()
    }
}

impl fmt::Display for AccountCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_id(kind: &'static str, s: &str) -> Result<(), CodeError> {
    let reason = if s.is_empty() {
        "must not be empty"
    } else if s.len() > 64 {
        "longer than 64 bytes"
    } else if !s
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
    {
        "only ASCII letters, digits and - _ . : are allowed"
    } else {
        return Ok(());
    };
    Err(CodeError::Id {
        kind,
        value: s.to_owned(),
        reason,
    })
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, CodeError> {
                check_id($kind, s)?;
                Ok(Self(Arc::from(s)))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = CodeError;
            fn try_from(s: String) -> Result<Self, CodeError> {
                check_id($kind, &s)?;
                Ok(Self(Arc::from(s)))
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0.as_ref().to_owned()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A meter, unique within its account (e.g. `main`, `ahu-3`, `L2-lighting`).
    MeterId,
    "meter id"
);
id_type!(
    /// A gateway, unique within a deployment; it signs its batches with its own token.
    GatewayId,
    "gateway id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_code_parts() {
        let a = AccountCode::parse("320100A008").unwrap();
        assert_eq!(a.division(), "320100");
        assert_eq!(a.province(), "32");
        assert_eq!(a.building_class(), BuildingClass::Office);
        assert_eq!(
            AccountCode::parse("110108E012").unwrap().building_class(),
            BuildingClass::Medical
        );
    }

    #[test]
    fn account_code_rejects_bad_shapes() {
        for bad in [
            "",
            "320100A00",
            "320100A0081",
            "32010XA008",
            "320100Z008",
            "320100A000",
            "320100a008",
        ] {
            assert!(AccountCode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_checked() {
        assert!(MeterId::parse("ahu-3.main_1").is_ok());
        assert!(MeterId::parse("").is_err());
        assert!(MeterId::parse("a b").is_err());
        assert!(GatewayId::parse(&"x".repeat(65)).is_err());
    }
}
