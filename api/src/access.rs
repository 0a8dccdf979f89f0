//! API keys for people and systems, separate from the gateways' batch tokens: a key has a role
//! and, for officers (and optionally the statistics system), a scope of account codes or one
//! region prefix. The server stores only the key's sha256.
//!
//! | role | consumption | carbon | savings | accounts, live, meters, alerts |
//! |---|---|---|---|---|
//! | admin | all accounts | all | all | all |
//! | officer | its scope | its scope | its scope | its scope |
//! | statistics | its scope (all when unscoped) | same | refused | refused |
//!
//! The statistics system reads figures for the statistics forms; savings analysis is advice to
//! the institutions' energy officers, not part of that reporting, and the dashboard's views of
//! meters are for the people who run the buildings.
//!
//! A request that names an account outside the scope is refused (403); a region is intersected
//! with the scope, so no row outside it is ever returned.

use std::collections::BTreeSet;

use http_contract::credential::{Change, Credential, Credentials, Expiry, Presented};

use query::report::scope::{Filter, Region};
use reading_model::AccountCode;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Officer,
    Statistics,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Officer => "officer",
            Self::Statistics => "statistics",
        }
    }
}

/// What a handler does, for the permission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ReadConsumption,
    ReadCarbon,
    ReadSavings,
    ReadAccounts,
    /// The dashboard's views of meters: live power, meter status, alerts.
    ReadStatus,
}

/// One `[[api_key]]` of the server config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Who holds the key, for logs.
    pub name: String,
    /// SHA-256 of the key, lowercase hex (`jieneng token-hash <key>`).
    pub key_sha256: String,
    pub role: Role,
    #[serde(default)]
    pub accounts: Vec<AccountCode>,
    #[serde(default)]
    pub region: Option<Region>,
    /// When the key stops working (a TOML offset date-time); keys are added, rotated and
    /// revoked by editing the file and reloading (SIGHUP), without a restart.
    #[serde(default)]
    pub expires: Option<Expiry>,
}

impl ApiKeyConfig {
    /// Checks one entry; the error names the key at fault.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((k.to_owned(), m.to_owned()));
        if self.key_sha256.len() != 64
            || !self
                .key_sha256
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return bad("key_sha256", "expected 64 lowercase hex digits");
        }
        let scoped = !self.accounts.is_empty() || self.region.is_some();
        if !self.accounts.is_empty() && self.region.is_some() {
            return bad("region", "give either accounts or region, not both");
        }
        match self.role {
            Role::Admin if scoped => {
                bad("role", "an admin key is not scoped; remove accounts/region")
            }
            Role::Officer if !scoped => bad("role", "an officer key needs accounts or a region"),
            _ => Ok(()),
        }
    }
}

/// Where a key may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Accounts(BTreeSet<AccountCode>),
    Region(Region),
}

impl std::fmt::Display for Scope {
    /// `all`, the account codes joined by `,`, or `region:<prefix>` (for logs and the audit).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::Accounts(s) => {
                let codes: Vec<&str> = s.iter().map(AccountCode::as_str).collect();
                f.write_str(&codes.join(","))
            }
            Self::Region(r) => write!(f, "region:{}", r.as_str()),
        }
    }
}

impl Scope {
    pub fn contains(&self, a: &AccountCode) -> bool {
        match self {
            Self::All => true,
            Self::Accounts(s) => s.contains(a),
            Self::Region(r) => r.contains(a),
        }
    }

    /// The report filter that keeps rows inside the scope.
    pub fn filter(&self) -> Option<Filter> {
        match self {
            Self::All => None,
            Self::Accounts(s) => Some(Filter::Accounts(s.clone())),
            Self::Region(r) => Some(Filter::Region(r.clone())),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    pub scope: Scope,
}

impl Caller {
    pub fn may(&self, action: Action) -> bool {
        !matches!(
            (self.role, action),
            (
                Role::Statistics,
                Action::ReadAccounts | Action::ReadSavings | Action::ReadStatus
            )
        )
    }
}

/// sha256(key) → caller, replaced whole on a reload.
#[derive(Debug, Default)]
pub struct Keys(Credentials<Caller>);

impl Keys {
    pub fn new(keys: &[ApiKeyConfig]) -> Self {
        Self(Credentials::new(Self::entries(keys)))
    }

    pub fn present(&self, key_sha256: &str, now_ms: i64) -> Presented<Caller> {
        self.0.present(key_sha256, now_ms)
    }

    pub fn replace(&self, keys: &[ApiKeyConfig]) -> Change {
        self.0.replace(Self::entries(keys))
    }

    fn entries(keys: &[ApiKeyConfig]) -> impl Iterator<Item = (String, Credential<Caller>)> + '_ {
        keys.iter().map(|k| {
            let scope = match (&k.region, k.accounts.is_empty()) {
                (Some(r), _) => Scope::Region(r.clone()),
                (None, false) => Scope::Accounts(k.accounts.iter().cloned().collect()),
                (None, true) => Scope::All,
            };
            (
                k.key_sha256.clone(),
                Credential {
                    grants: Caller {
                        name: k.name.clone(),
                        role: k.role,
                        scope,
                    },
                    expires_ms: k.expires.map(|e| e.0),
                },
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(role: Role, accounts: &[&str], region: Option<&str>) -> ApiKeyConfig {
        ApiKeyConfig {
            name: "k".into(),
            key_sha256: "a".repeat(64),
            role,
            accounts: accounts
                .iter()
                .map(|a| AccountCode::parse(a).unwrap())
                .collect(),
            region: region.map(|r| Region::parse(r).unwrap()),
            expires: None,
        }
    }

    #[test]
    fn roles_and_scopes_are_checked() {
        assert!(key(Role::Admin, &[], None).validate().is_ok());
        assert!(key(Role::Admin, &[], Some("11")).validate().is_err());
        assert!(key(Role::Officer, &[], None).validate().is_err());
        assert!(
            key(Role::Officer, &["110108A001"], Some("11"))
                .validate()
                .is_err()
        );
        assert!(key(Role::Officer, &["110108A001"], None).validate().is_ok());
        assert!(key(Role::Statistics, &[], None).validate().is_ok());
        assert!(key(Role::Statistics, &[], Some("32")).validate().is_ok());
        let mut k = key(Role::Admin, &[], None);
        k.key_sha256 = "A".repeat(64);
        assert_eq!(k.validate().unwrap_err().0, "key_sha256");
    }
}
