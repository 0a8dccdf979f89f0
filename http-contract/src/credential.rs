//! The secrets a running server accepts (gateway tokens, API keys), replaceable while it runs.
//!
//! Each entry is a secret's sha256 and what it grants, with an optional expiry. The set is
//! swapped whole ([`Credentials::replace`]) after the new server file has been validated, so a
//! request sees either the old set or the new one, never half of each; a reload that fails
//! validation leaves the old set in force. Expiry is checked at each use, so a key stops working
//! at its instant without a reload.

use std::collections::HashMap;
use std::sync::RwLock;

/// What a secret grants and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential<T> {
    pub grants: T,
    /// Unix milliseconds after which the secret is refused; `None` never expires.
    pub expires_ms: Option<i64>,
}

/// The outcome of presenting a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented<T> {
    Valid(T),
    /// Known, but past its expiry (the instant, for the refusal's message).
    Expired {
        expired_ms: i64,
    },
    Unknown,
}

/// sha256(secret) → credential, swappable as a whole.
#[derive(Debug)]
pub struct Credentials<T>(RwLock<HashMap<String, Credential<T>>>);

impl<T> Default for Credentials<T> {
    fn default() -> Self {
        Self(RwLock::new(HashMap::new()))
    }
}

impl<T: Clone> Credentials<T> {
    pub fn new(entries: impl IntoIterator<Item = (String, Credential<T>)>) -> Self {
        Self(RwLock::new(entries.into_iter().collect()))
    }

    /// The credential of the secret whose sha256 is `secret_sha256`, as of `now_ms`.
    pub fn present(&self, secret_sha256: &str, now_ms: i64) -> Presented<T> {
        let set = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match set.get(secret_sha256) {
            None => Presented::Unknown,
            Some(c) => match c.expires_ms {
                Some(at) if now_ms > at => Presented::Expired { expired_ms: at },
                _ => Presented::Valid(c.grants.clone()),
            },
        }
    }

    /// Whether some secret in force now grants what `wanted` accepts (a gateway whose token was
    /// revoked or expired has none).
    pub fn any_valid(&self, now_ms: i64, wanted: impl Fn(&T) -> bool) -> bool {
        let set = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        set.values()
            .any(|c| c.expires_ms.is_none_or(|at| now_ms <= at) && wanted(&c.grants))
    }

    /// Puts `entries` in force in place of the current set; returns how the set changed.
    pub fn replace(&self, entries: impl IntoIterator<Item = (String, Credential<T>)>) -> Change
    where
        T: PartialEq,
    {
        let new: HashMap<_, _> = entries.into_iter().collect();
        let mut set = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let change = Change {
            added: new.keys().filter(|k| !set.contains_key(*k)).count(),
            removed: set.keys().filter(|k| !new.contains_key(*k)).count(),
            changed: new
                .iter()
                .filter(|(k, v)| set.get(*k).is_some_and(|old| old != *v))
                .count(),
            now: new.len(),
        };
        *set = new;
        change
    }
}

/// How a [`Credentials::replace`] changed the set, for the reload's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Change {
    pub added: usize,
    pub removed: usize,
    /// Same secret, different grants or expiry.
    pub changed: usize,
    /// Entries in force now.
    pub now: usize,
}

/// An `expires = 2027-06-30T00:00:00+08:00` of a server file (a TOML offset date-time, or the
/// same as a string) as Unix milliseconds. A date-time without an offset is refused: the server's
/// clock is UTC and the deployment's is Beijing time, and guessing between them moves an expiry
/// by eight hours.
pub fn expiry_ms(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            format!(
                "{text:?} is not a date-time with an offset (e.g. 2027-06-30T00:00:00+08:00): {e}"
            )
        })
}

/// `expires` of a `[[gateway]]` or `[[api_key]]` entry: a TOML offset date-time
/// (`expires = 2027-06-30T00:00:00+08:00`) or the same text as a string, as Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry(pub i64);

impl<'de> serde::Deserialize<'de> for Expiry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Expiry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a date-time with an offset, e.g. 2027-06-30T00:00:00+08:00")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Expiry, E> {
                expiry_ms(v).map(Expiry).map_err(E::custom)
            }
            // The toml crate hands a date-time literal over as a one-entry map of its text.
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<Expiry, M::Error> {
                let Some((_, text)) = m.next_entry::<String, String>()? else {
                    return Err(serde::de::Error::custom("empty date-time"));
                };
                self.visit_str(&text)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// The current instant as Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(grants: &str, expires_ms: Option<i64>) -> Credential<String> {
        Credential {
            grants: grants.into(),
            expires_ms,
        }
    }

    #[test]
    fn a_secret_is_valid_until_its_expiry_then_expired() {
        let set = Credentials::new([("h1".to_owned(), c("gw-1", Some(1_000)))]);
        assert_eq!(set.present("h1", 1_000), Presented::Valid("gw-1".into()));
        assert_eq!(
            set.present("h1", 1_001),
            Presented::Expired { expired_ms: 1_000 }
        );
        assert_eq!(set.present("h2", 0), Presented::Unknown);
    }

    #[test]
    fn replace_swaps_the_whole_set_and_counts_the_change() {
        let set = Credentials::new([
            ("old".to_owned(), c("a", None)),
            ("kept".to_owned(), c("b", None)),
            ("moved".to_owned(), c("c", None)),
        ]);
        let change = set.replace([
            ("kept".to_owned(), c("b", None)),
            ("moved".to_owned(), c("d", None)),
            ("new".to_owned(), c("e", Some(5))),
        ]);
        assert_eq!(
            change,
            Change {
                added: 1,
                removed: 1,
                changed: 1,
                now: 3
            }
        );
        assert_eq!(set.present("old", 0), Presented::Unknown);
        assert_eq!(set.present("moved", 0), Presented::Valid("d".into()));
        assert_eq!(set.present("new", 0), Presented::Valid("e".into()));
    }

    #[derive(Debug, serde::Deserialize)]
    struct Entry {
        expires: Expiry,
    }

    #[test]
    fn expiry_reads_a_toml_date_time_or_a_string() {
        let lit: Entry = toml::from_str("expires = 2027-06-30T00:00:00+08:00").unwrap();
        let text: Entry = toml::from_str("expires = \"2027-06-30T00:00:00+08:00\"").unwrap();
        assert_eq!(lit.expires, Expiry(1_814_284_800_000));
        assert_eq!(text.expires, lit.expires);
        let local = toml::from_str::<Entry>("expires = 2027-06-30T00:00:00").unwrap_err();
        assert!(local.to_string().contains("offset"), "{local}");
    }

    #[test]
    fn expiry_needs_an_offset() {
        assert_eq!(
            expiry_ms("2027-06-30T00:00:00+08:00"),
            Ok(1_814_284_800_000)
        );
        assert_eq!(expiry_ms("2027-06-29T16:00:00Z"), Ok(1_814_284_800_000));
        assert!(expiry_ms("2027-06-30T00:00:00").is_err());
        assert!(expiry_ms("2027-06-30").is_err());
    }
}
