//! The access matrix: every (role, scope) × every read endpoint × every account of the sample
//! dataset, in scope and out of it → the expected status, and no out-of-scope account (code or
//! name) anywhere in any body. Gateway tokens and API keys do not stand in for each other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use http_contract::token_hash;
use jieneng::config::ServeConfig;
use query::sample;

const GATEWAY_TOKEN: &str = "gateway-token-0123456789abcdef";
const ALL: [&str; 4] = ["110108A001", "110108D002", "110102E003", "320102A004"];

struct Key {
    secret: &'static str,
    role: &'static str,
    /// The scope line of the config.
    scope: &'static str,
    /// Accounts the key may read, written out by hand rather than derived from the code.
    allowed: &'static [&'static str],
}

const KEYS: &[Key] = &[
    Key {
        secret: "admin-key-0123456789",
        role: "admin",
        scope: "",
        allowed: &ALL,
    },
    Key {
        secret: "officer-accounts-key-0123",
        role: "officer",
        scope: "accounts = [\"110108A001\"]",
        allowed: &["110108A001"],
    },
    Key {
        secret: "officer-county-key-0123",
        role: "officer",
        scope: "region = \"110108\"",
        allowed: &["110108A001", "110108D002"],
    },
    Key {
        secret: "officer-city-key-01234",
        role: "officer",
        scope: "region = \"1101\"",
        allowed: &["110108A001", "110108D002", "110102E003"],
    },
    Key {
        secret: "statistics-key-0123456",
        role: "statistics",
        scope: "",
        allowed: &ALL,
    },
    Key {
        secret: "statistics-js-key-01234",
        role: "statistics",
        scope: "region = \"32\"",
        allowed: &["320102A004"],
    },
];

fn config_text(data_dir: &std::path::Path) -> String {
    let mut t = format!(
        // No MQTT broker: tests run in parallel and the broker's default port is fixed.
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n\n[mqtt]\nenabled = false\n\n[[gateway]]\nid = \"gw-1\"\ntoken_sha256 = \"{}\"\n\n",
        data_dir.display().to_string(),
        token_hash(GATEWAY_TOKEN)
    );
    for a in sample::accounts() {
        t.push_str(&format!(
            "[[account]]\ncode = \"{}\"\nname_zh = \"{}\"\nname_en = \"{}\"\ninstitution_type = \"{}\"\n",
            a.code,
            a.name_zh,
            a.name_en,
            a.institution_type.name()
        ));
        if let Some(m2) = a.floor_area_m2 {
            t.push_str(&format!("floor_area_m2 = {m2:.1}\n"));
        }
        if let Some(h) = a.headcount {
            t.push_str(&format!("headcount = {h}\n"));
        }
        t.push('\n');
    }
    for (i, k) in KEYS.iter().enumerate() {
        t.push_str(&format!(
            "[[api_key]]\nname = \"key-{i}\"\nkey_sha256 = \"{}\"\nrole = \"{}\"\n{}\n\n",
            token_hash(k.secret),
            k.role,
            k.scope
        ));
    }
    t
}

fn day(y: i32, m: u32, d: u32) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn name_of(code: &str) -> String {
    sample::accounts()
        .into_iter()
        .find(|a| a.code.as_str() == code)
        .map(|a| a.name_zh)
        .unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Endpoint {
    ConsumptionJson,
    ConsumptionCsv,
    IndicatorsCsv,
    CarbonJson,
    CarbonCsv,
    SavingsJson,
    SavingsCsv,
    Accounts,
    Live,
    Meters,
    Alerts,
}

const ENDPOINTS: [Endpoint; 11] = [
    Endpoint::ConsumptionJson,
    Endpoint::ConsumptionCsv,
    Endpoint::IndicatorsCsv,
    Endpoint::CarbonJson,
    Endpoint::CarbonCsv,
    Endpoint::SavingsJson,
    Endpoint::SavingsCsv,
    Endpoint::Accounts,
    Endpoint::Live,
    Endpoint::Meters,
    Endpoint::Alerts,
];

fn url(base: &str, e: Endpoint, extra: &str) -> String {
    let period = "from=2026-01-01&to=2026-03-01";
    match e {
        Endpoint::ConsumptionJson => format!("{base}/api/v1/consumption?{period}{extra}"),
        Endpoint::ConsumptionCsv => format!("{base}/api/v1/consumption?{period}&format=csv{extra}"),
        Endpoint::IndicatorsCsv => {
            format!("{base}/api/v1/consumption?{period}&format=csv&table=indicators{extra}")
        }
        Endpoint::CarbonJson => format!("{base}/api/v1/carbon?{period}{extra}"),
        Endpoint::CarbonCsv => format!("{base}/api/v1/carbon?{period}&format=csv{extra}"),
        Endpoint::SavingsJson => format!("{base}/api/v1/savings?{period}{extra}"),
        Endpoint::SavingsCsv => format!("{base}/api/v1/savings?{period}&format=csv{extra}"),
        Endpoint::Accounts => format!("{base}/api/v1/accounts?{}", extra.trim_start_matches('&')),
        Endpoint::Live => format!("{base}/api/v1/live?{}", extra.trim_start_matches('&')),
        Endpoint::Meters => format!("{base}/api/v1/meters?{}", extra.trim_start_matches('&')),
        Endpoint::Alerts => format!("{base}/api/v1/alerts?{}", extra.trim_start_matches('&')),
    }
}

fn expected(k: &Key, e: Endpoint, account: Option<&str>) -> u16 {
    // The statistics system reads figures, not advice: no account list, no savings, none of
    // the dashboard's views of meters.
    if matches!(
        e,
        Endpoint::Accounts
            | Endpoint::SavingsJson
            | Endpoint::SavingsCsv
            | Endpoint::Live
            | Endpoint::Meters
            | Endpoint::Alerts
    ) && k.role == "statistics"
    {
        return 403;
    }
    match account {
        Some(a) if e != Endpoint::Accounts && !k.allowed.contains(&a) => 403,
        _ => 200,
    }
}

/// Accounts a body mentions, by code or by name.
fn mentioned(body: &str) -> BTreeSet<&'static str> {
    ALL.into_iter()
        .filter(|a| body.contains(a) || body.contains(&name_of(a)))
        .collect()
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "the matrix itself: every role and scope against every endpoint and account, one table"
)]
async fn access_matrix() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    // Only the two months asked for: every request reads every file, and debug builds are slow.
    sample::write_days(dir.path(), day(2026, 1, 1), day(2026, 3, 1)).unwrap();
    let config = ServeConfig::parse("access.toml", &config_text(dir.path())).unwrap();
    let server = jieneng::serve::start(&config).await.unwrap();
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    // One reading per account two hours ago, through the batch API, so the dashboard's views
    // (which look at recent days) have a meter of every account: offline by now.
    let two_hours_ago = chrono::Utc::now().timestamp_millis() - 2 * 3_600_000;
    let recent: Vec<serde_json::Value> = ALL
        .iter()
        .map(|a| {
            serde_json::json!({
                "ts": two_hours_ago, "account": a, "meter": "recent", "category": "01",
                "item": "01000", "quantity": "energy_import", "unit": "kWh", "value": 1.0,
                "quality": "good"
            })
        })
        .collect();
    let r = client
        .post(format!("{base}/api/v1/batches"))
        .bearer_auth(GATEWAY_TOKEN)
        .json(&serde_json::json!({ "version": 1, "gateway": "gw-1", "seq": 1, "readings": recent }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    // Every request made through `get`, for the audit trail's check at the end.
    let asked = std::sync::Mutex::new(Vec::<(String, String, u16)>::new());
    let get = |u: String, secret: &str| {
        let req = client.get(&u).bearer_auth(secret);
        let (secret, asked) = (secret.to_owned(), &asked);
        async move {
            let r = req.send().await.unwrap();
            let s = r.status().as_u16();
            asked.lock().unwrap().push((secret, u, s));
            (s, r.text().await.unwrap())
        }
    };
    let mut cells = 0;
    for k in KEYS {
        for e in ENDPOINTS {
            // No account named: everything in scope, nothing outside it.
            let (status, body) = get(url(&base, e, ""), k.secret).await;
            assert_eq!(status, expected(k, e, None), "{} {e:?}: {body}", k.secret);
            if status == 200 {
                let seen = mentioned(&body);
                let allowed: BTreeSet<&str> = k.allowed.iter().copied().collect();
                assert!(
                    seen.is_subset(&allowed),
                    "{} {e:?} leaks {seen:?}",
                    k.secret
                );
                // Not vacuous: every allowed account with data in the period shows up (the
                // savings CSV lists only opportunities, which not every account has).
                if e != Endpoint::SavingsCsv {
                    assert_eq!(seen, allowed, "{} {e:?}: {body}", k.secret);
                }
            }
            // A region wider than the scope is narrowed, never widened.
            let (status, body) = get(url(&base, e, "&region=11"), k.secret).await;
            if e != Endpoint::Accounts && status == 200 {
                let seen = mentioned(&body);
                assert!(
                    seen.iter()
                        .all(|a| k.allowed.contains(a) && a.starts_with("11")),
                    "{} {e:?} region=11 leaks {seen:?}",
                    k.secret
                );
            }
            for a in ALL {
                let (status, body) = get(url(&base, e, &format!("&account={a}")), k.secret).await;
                assert_eq!(
                    status,
                    expected(k, e, Some(a)),
                    "{} {e:?} {a}: {body}",
                    k.secret
                );
                if status == 200 {
                    let seen = mentioned(&body);
                    assert!(
                        seen.iter().all(|s| k.allowed.contains(s)),
                        "{} {e:?} {a} leaks {seen:?}",
                        k.secret
                    );
                } else {
                    assert!(mentioned(&body).iter().all(|s| *s == a), "{body}");
                }
                cells += 1;
            }
        }
        // Region roll-ups only sum accounts in scope.
        let (status, body) = get(
            url(&base, Endpoint::CarbonJson, "&group=province&category=01"),
            k.secret,
        )
        .await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let summed: usize = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["period"] == "2026-01")
            .map(|r| r["accounts"].as_u64().unwrap() as usize)
            .sum();
        assert_eq!(summed, k.allowed.len(), "{}: {body}", k.secret);
    }
    assert_eq!(cells, KEYS.len() * ENDPOINTS.len() * ALL.len());

    // The dashboard's meter status: two hours of silence is offline by default, online when
    // the limit is three hours; every offline meter is an alert.
    let admin = KEYS[0].secret;
    let meters = |q: &'static str| {
        let u = format!("{base}/api/v1/meters{q}");
        let req = client.get(u).bearer_auth(admin);
        async move {
            req.send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let status = |v: &serde_json::Value| -> Vec<(String, bool)> {
        v["meters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["account"].as_str().unwrap().to_owned(),
                    m["online"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let by_default = status(&meters("").await);
    assert_eq!(by_default.len(), ALL.len(), "{by_default:?}");
    assert!(
        by_default.iter().all(|(_, online)| !online),
        "{by_default:?}"
    );
    let lenient = status(&meters("?offline_after=10800").await);
    assert!(lenient.iter().all(|(_, online)| *online), "{lenient:?}");
    let (s, body) = get(format!("{base}/api/v1/meters?offline_after=0"), admin).await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("offline_after"), "{body}");
    let (_, body) = get(format!("{base}/api/v1/alerts"), admin).await;
    let alerts: serde_json::Value = serde_json::from_str(&body).unwrap();
    let offline: BTreeSet<&str> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "meter_offline")
        .map(|a| a["account"].as_str().unwrap())
        .collect();
    assert_eq!(offline, ALL.into_iter().collect(), "{body}");
    // No benchmark value is verified, so nothing is "over the constraint value".
    assert!(!body.contains("over_constraint"), "{body}");

    // Without a key, with an unknown one, or with a gateway token: 401 everywhere.
    for e in ENDPOINTS {
        let r = client.get(url(&base, e, "")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{e:?}");
        for secret in ["no-such-key-0123456789", GATEWAY_TOKEN] {
            let (status, body) = get(url(&base, e, ""), secret).await;
            assert_eq!(status, 401, "{e:?}: {body}");
        }
    }
    // An API key cannot post batches.
    let r = client
        .post(format!("{base}/api/v1/batches"))
        .bearer_auth(KEYS[0].secret)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Refusals are counted.
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("jieneng_rejects_total{reason=\"api_forbidden\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("jieneng_rejects_total{reason=\"api_unauthenticated\"}"),
        "{metrics}"
    );
    server.stop().await.unwrap();
    audit_trail_matches(dir.path(), &base, &asked.into_inner().unwrap());
}

/// The audit trail of the matrix run: the batch with its gateway, accounts and rows; every
/// request made through `get`, in order, with the key's name, role and scope, its status, a
/// reason when refused and rows when answered; and no secret anywhere in the file.
fn audit_trail_matches(data_dir: &std::path::Path, base: &str, asked: &[(String, String, u16)]) {
    let text = std::fs::read_to_string(data_dir.join("audit/audit.jsonl")).unwrap();
    for k in KEYS {
        assert!(!text.contains(k.secret), "a key in the audit trail");
    }
    assert!(!text.contains(GATEWAY_TOKEN), "a token in the audit trail");
    let entries: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries[0]["event"], "start");
    let batch = entries.iter().find(|e| e["event"] == "batch").unwrap();
    assert_eq!(batch["status"], 200, "{batch}");
    assert_eq!(batch["who"]["gateway"], "gw-1", "{batch}");
    assert_eq!(batch["rows"], ALL.len(), "{batch}");
    let mut accounts = ALL.to_vec();
    accounts.sort_unstable();
    assert_eq!(batch["accounts"], serde_json::json!(accounts), "{batch}");
    // The API key that tried to post a batch is named, and refused.
    assert!(
        entries.iter().any(|e| e["event"] == "batch"
            && e["status"] == 401
            && e["who"]["name"] == "key-0"
            && e["reason"] == "unauthenticated"),
        "no refused batch entry for key-0"
    );
    let reads: Vec<&serde_json::Value> = entries.iter().filter(|e| e["event"] == "read").collect();
    let mut at = 0;
    for (secret, url, status) in asked {
        let rest = url.strip_prefix(base).unwrap();
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let key = KEYS.iter().position(|k| k.secret == secret);
        let kind = match key {
            Some(_) => "api_key",
            None if secret == GATEWAY_TOKEN => "gateway",
            None => "unknown",
        };
        let found = reads[at..]
            .iter()
            .position(|e| {
                e["path"] == path
                    && e["query"] == query
                    && e["status"] == *status
                    && e["who"]["kind"] == kind
            })
            .unwrap_or_else(|| panic!("no audit entry for {secret}'s {url} ({status})"));
        let e = reads[at + found];
        at += found + 1;
        if let Some(i) = key {
            assert_eq!(e["who"]["name"], format!("key-{i}"), "{e}");
            assert_eq!(e["who"]["role"], KEYS[i].role, "{e}");
            assert!(e["who"]["scope"].is_string(), "{e}");
        } else if kind == "unknown" {
            assert_eq!(e["who"]["key_sha256_prefix"].as_str().unwrap().len(), 12);
        }
        if *status >= 400 {
            assert!(e["reason"].is_string(), "{e}");
        } else if !path.ends_with("/live")
            && !path.ends_with("/meters")
            && !path.ends_with("/alerts")
        {
            assert!(e["rows"].is_u64(), "{e}");
        }
    }
    assert!(asked.len() > 400, "only {} requests checked", asked.len());
}

#[tokio::test]
async fn carbon_pages_cover_every_row_once_and_csv_matches_json() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    sample::write_days(dir.path(), day(2025, 12, 1), day(2026, 3, 1)).unwrap();
    let config = ServeConfig::parse("paging.toml", &config_text(dir.path())).unwrap();
    let server = jieneng::serve::start(&config).await.unwrap();
    let base = format!(
        "http://{}/api/v1/carbon?from=2025-12-01&to=2026-03-01",
        server.addr
    );
    let client = reqwest::Client::new();
    let all: serde_json::Value = client
        .get(format!("{base}&limit=10000"))
        .bearer_auth(KEYS[0].secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let total = all["total"].as_u64().unwrap() as usize;
    // 4 accounts × 3 months electricity + 2 water accounts × 3 months.
    assert_eq!(total, 6 * 3);
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut u = format!("{base}&limit=5");
        if let Some(c) = &cursor {
            u.push_str(&format!("&cursor={c}"));
        }
        let page: serde_json::Value = client
            .get(u)
            .bearer_auth(KEYS[0].secret)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        paged.extend(page["rows"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(&paged, all["rows"].as_array().unwrap());
    // CSV by Accept header: one line per row plus the header, next cursor in a header.
    let r = client
        .get(format!("{base}&limit=7"))
        .bearer_auth(KEYS[0].secret)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("x-next-cursor"));
    let csv = r.text().await.unwrap();
    assert_eq!(csv.lines().count(), 8);
    assert!(csv.starts_with("account,region,period,"));
    // Bad parameters name themselves.
    for (q, needle) in [
        ("&granularity=week", "granularity"),
        ("&region=1", "region"),
        ("&cursor=zz", "cursor"),
        ("&limit=0", "limit"),
        ("&bogus=1", "bogus"),
    ] {
        let r = client
            .get(format!("{base}{q}"))
            .bearer_auth(KEYS[0].secret)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{q}");
        let body = r.text().await.unwrap();
        assert!(body.contains(needle), "{q}: {body}");
    }
    server.stop().await.unwrap();
}

#[test]
fn config_errors_name_the_line_and_key() {
    let text =
        "data_dir = \"d\"\n\n[[api_key]]\nname = \"x\"\nkey_sha256 = \"abc\"\nrole = \"admin\"\n";
    let e = ServeConfig::parse("s.toml", text).unwrap_err().to_string();
    assert!(
        e.contains("s.toml:3") && e.contains("api_key[0].key_sha256"),
        "{e}"
    );
    let text = "data_dir = \"d\"\n[[account]]\ncode = \"110108A001\"\nname_zh = \"甲\"\ninstitution_type = \"state_organ\"\n[[account]]\ncode = \"110108A002\"\nname_zh = \"乙\"\ninstitution_type = \"state_organ\"\nheadcount = 0\n";
    let e = ServeConfig::parse("s.toml", text).unwrap_err().to_string();
    assert!(
        e.contains("s.toml:6") && e.contains("account[1].headcount"),
        "{e}"
    );
    let e = ServeConfig::parse("s.toml", "data_dir = \"d\"\n[[account]]\ncode = \"110108A001\"\nname_zh = \"甲\"\ninstitution_type = \"ministry\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("institution_type") || e.contains("ministry"),
        "{e}"
    );
}
