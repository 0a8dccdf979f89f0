//! Ranking among peers: accounts of the same institution type ordered by energy intensity
//! (e.g. kgce/(m²·a) or kWh/(m²·a); the caller chooses, all items of a ranking share it).
//!
//! Rank 1 is the lowest intensity (the best performer); equal intensities share a rank
//! (competition ranking, "1224"). The peer median is the reference for the gap: an account above
//! its group's median could save `(intensity − median) × floor area` a year by reaching it.

use std::collections::BTreeMap;

use reading_model::AccountCode;

/// One account's intensity and the peer group it is ranked in (the institution type from the
/// accounts configuration, or any grouping key the caller chooses).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerIntensity<G> {
    pub account: AccountCode,
    pub group: G,
    pub intensity: f64,
    pub floor_area_m2: f64,
}

/// An account's place among its peers.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked<G> {
    pub account: AccountCode,
    pub group: G,
    pub intensity: f64,
    /// 1 = lowest intensity in the group.
    pub rank: usize,
    /// Accounts in the group.
    pub of: usize,
    /// Share of peers with a strictly lower intensity, 0 (best) … <1.
    pub share_better: f64,
    pub group_median: f64,
    /// `max(0, intensity − median) × floor area`: the yearly amount (intensity unit × m²) the
    /// account would save by reaching the median.
    pub gap_to_median: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RankingError {
    #[error("ranking: account {account}: {field} is {value}, must be a finite number ≥ 0")]
    Input {
        account: AccountCode,
        field: &'static str,
        value: f64,
    },
    #[error("ranking: account {0} appears twice")]
    Duplicate(AccountCode),
}

/// Ranks accounts within their groups. Output is ordered by group, then rank, then account code.
pub fn rank_by_intensity<G: Ord + Clone>(
    items: &[PeerIntensity<G>],
) -> Result<Vec<Ranked<G>>, RankingError> {
    let mut groups: BTreeMap<G, Vec<&PeerIntensity<G>>> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for i in items {
        for (field, value) in [("intensity", i.intensity), ("floor area", i.floor_area_m2)] {
            if !value.is_finite() || value < 0.0 {
                return Err(RankingError::Input {
                    account: i.account.clone(),
                    field,
                    value,
                });
            }
        }
        if !seen.insert(&i.account) {
            return Err(RankingError::Duplicate(i.account.clone()));
        }
        groups.entry(i.group.clone()).or_default().push(i);
    }
    let mut out = Vec::with_capacity(items.len());
    for (group, mut members) in groups {
        members.sort_by(|a, b| {
            a.intensity
                .total_cmp(&b.intensity)
                .then_with(|| a.account.cmp(&b.account))
        });
        let n = members.len();
        let median = if n % 2 == 1 {
            members[n / 2].intensity
        } else {
            (members[n / 2 - 1].intensity + members[n / 2].intensity) / 2.0
        };
        for m in &members {
            let better = members.iter().filter(|o| o.intensity < m.intensity).count();
            out.push(Ranked {
                account: m.account.clone(),
                group: group.clone(),
                intensity: m.intensity,
                rank: better + 1,
                of: n,
                share_better: better as f64 / n as f64,
                group_median: median,
                gap_to_median: (m.intensity - median).max(0.0) * m.floor_area_m2,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum Kind {
        Government,
        School,
    }

    fn p(code: &str, group: Kind, intensity: f64) -> PeerIntensity<Kind> {
        PeerIntensity {
            account: AccountCode::parse(code).unwrap(),
            group,
            intensity,
            floor_area_m2: 1000.0,
        }
    }

    #[test]
    fn ranks_within_groups_with_ties() {
        let r = rank_by_intensity(&[
            p("110101A001", Kind::Government, 12.0),
            p("110101A002", Kind::Government, 8.0),
            p("110101D001", Kind::School, 5.0),
            p("110101A003", Kind::Government, 12.0),
            p("110101A004", Kind::Government, 20.0),
        ])
        .unwrap();
        let gov: Vec<(&str, usize, f64)> = r
            .iter()
            .filter(|x| x.group == Kind::Government)
            .map(|x| (x.account.as_str(), x.rank, x.gap_to_median))
            .collect();
        // Median of 8, 12, 12, 20 = 12; the 20 account is 8 × 1000 above it.
        assert_eq!(
            gov,
            vec![
                ("110101A002", 1, 0.0),
                ("110101A001", 2, 0.0),
                ("110101A003", 2, 0.0),
                ("110101A004", 4, 8000.0),
            ]
        );
        let school = r.iter().find(|x| x.group == Kind::School).unwrap();
        assert_eq!((school.rank, school.of, school.group_median), (1, 1, 5.0));
        let worst = r
            .iter()
            .find(|x| x.account.as_str() == "110101A004")
            .unwrap();
        assert_eq!(worst.share_better, 0.75);
    }

    #[test]
    fn bad_input() {
        assert!(matches!(
            rank_by_intensity(&[p("110101A001", Kind::School, f64::NAN)]).unwrap_err(),
            RankingError::Input {
                field: "intensity",
                ..
            }
        ));
        assert!(matches!(
            rank_by_intensity(&[
                p("110101A001", Kind::School, 1.0),
                p("110101A001", Kind::Government, 2.0)
            ])
            .unwrap_err(),
            RankingError::Duplicate(_)
        ));
        assert!(rank_by_intensity::<Kind>(&[]).unwrap().is_empty());
    }
}
