//! Which accounts a report covers: filters on the account code, ANDed together. A request's own
//! filters and the caller's access scope are both filters, so a report can only narrow a scope.

use std::collections::BTreeSet;
use std::fmt;

use reading_model::AccountCode;
use serde::{Deserialize, Serialize};

/// An administrative-division prefix of account codes (GB/T 2260): 2 digits a province, 4 a
/// city (地级), 6 a county (县级).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("region {0:?}: expected 2 (province), 4 (city) or 6 (county) digits of a division code")]
pub struct RegionError(pub String);

impl Region {
    pub fn parse(s: &str) -> Result<Self, RegionError> {
        if matches!(s.len(), 2 | 4 | 6) && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(RegionError(s.to_owned()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn contains(&self, account: &AccountCode) -> bool {
        account.as_str().starts_with(&self.0)
    }
    /// Whether every account of `other` is in `self` (a county lies within its city).
    pub fn covers(&self, other: &Region) -> bool {
        other.0.starts_with(&self.0)
    }
    pub fn level(&self) -> &'static str {
        match self.0.len() {
            2 => "province",
            4 => "city",
            _ => "county",
        }
    }
}

impl TryFrom<String> for Region {
    type Error = RegionError;
    fn try_from(s: String) -> Result<Self, RegionError> {
        Self::parse(&s)
    }
}
impl From<Region> for String {
    fn from(r: Region) -> String {
        r.0
    }
}
impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One condition on the account code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Accounts(BTreeSet<AccountCode>),
    Region(Region),
}

impl Filter {
    pub fn matches(&self, account: &AccountCode) -> bool {
        match self {
            Self::Accounts(set) => set.contains(account),
            Self::Region(r) => r.contains(account),
        }
    }

    /// The SQL condition on column `account`. Account codes and regions are digits and one
    /// letter by construction, so quoting them is safe.
    pub(crate) fn sql(&self) -> String {
        match self {
            Self::Accounts(set) if set.is_empty() => "FALSE".into(),
            Self::Accounts(set) => format!(
                "account IN ({})",
                set.iter()
                    .map(|a| format!("'{a}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::Region(r) => format!("starts_with(account, '{r}')"),
        }
    }
}

/// All filters hold.
pub fn matches_all(filters: &[Filter], account: &AccountCode) -> bool {
    filters.iter().all(|f| f.matches(account))
}

pub(crate) fn sql_all(filters: &[Filter]) -> String {
    if filters.is_empty() {
        "TRUE".into()
    } else {
        filters
            .iter()
            .map(|f| format!("({})", f.sql()))
            .collect::<Vec<_>>()
            .join(" AND ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_nest() {
        let a = AccountCode::parse("110108A001").unwrap();
        let city = Region::parse("1101").unwrap();
        let county = Region::parse("110108").unwrap();
        assert!(city.contains(&a) && county.contains(&a));
        assert!(city.covers(&county) && !county.covers(&city));
        assert!(!Region::parse("3201").unwrap().contains(&a));
        for bad in ["1", "110", "11010", "1101080", "11a1", ""] {
            assert!(Region::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(sql_all(&[]), "TRUE");
        assert_eq!(
            Filter::Accounts(BTreeSet::new()).sql(),
            "FALSE",
            "an empty account list matches nothing"
        );
    }
}
