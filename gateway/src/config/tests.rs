use super::*;

const SITE: &str = r#"[gateway]
id = "gw-test"
spool_dir = "spool"
poll_interval = 5

[forward]
url = "http://127.0.0.1:9/api/v1/batches"
token = "0123456789abcdef0123"

[[account]]
code = "110108A001"
name = "区政府办公楼"
carbon_region = "national"

[[device]]
meter = "main"
account = "110108A001"
category = "01"
item = "01000"
profile = "eastron/sdm630"
source = { type = "modbus-tcp", host = "127.0.0.1", port = 1502, unit = 1 }
registers = ["energy_import", "power_total"]
"#;

fn parse(text: &str) -> Result<GatewayConfig, ConfigError> {
    GatewayConfig::parse("site.toml", text, Some(Path::new("/etc/jieneng")))
}

#[test]
fn parses_a_site() {
    let c = parse(SITE).unwrap();
    assert_eq!(c.gateway.spool_dir, Path::new("/etc/jieneng/spool"));
    assert_eq!(c.devices.len(), 1);
    let d = &c.devices[0];
    assert_eq!(d.registers.len(), 2);
    assert_eq!(d.poll_interval, Duration::from_secs(5));
    assert_eq!(
        c.selection(&d.account).carbon_region.as_deref(),
        Some("national")
    );
}

#[test]
fn errors_name_file_line_and_key() {
    let e = parse(&SITE.replace("item = \"01000\"", "item = \"02000\""))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("site.toml:15: device[0].item (110108A001/main)"),
        "{e}"
    );
    let e = parse(&SITE.replace("eastron/sdm630", "acme/x"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("device[0].profile") && e.contains("acme/x"),
        "{e}"
    );
    let e = parse(&SITE.replace("\"power_total\"", "\"power_totl\""))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("device[0].registers") && e.contains("power_totl"),
        "{e}"
    );
    let e = parse(&SITE.replace("account = \"110108A001\"", "account = \"11010A001\""))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("site.toml") && e.contains("11010A001") && e.contains("line 17"),
        "{e}"
    );
    let e = parse(&SITE.replace("poll_interval = 5", "poll_intervl = 5"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("poll_intervl"), "{e}");
    let e = parse(&SITE.replace("0123456789abcdef0123", "short"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("token") && e.contains(":8:"), "{e}");
    let dup = format!("{SITE}\n{}", &SITE[SITE.find("[[device]]").unwrap()..]);
    let e = parse(&dup).unwrap_err().to_string();
    assert!(e.contains("device[1].meter"), "{e}");
}

#[test]
fn example_configs_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("gateway") && name.ends_with(".toml") {
            GatewayConfig::load(&p).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 1, "no gateway example in {}", dir.display());
}

#[test]
fn fraction_registers_come_with_their_accumulator() {
    let site = SITE
        .replace(
            "category = \"01\"\nitem = \"01000\"",
            "category = \"04\"\nitem = \"04000\"",
        )
        .replace("eastron/sdm630", "tuf/tuf2000m")
        .replace("[\"energy_import\", \"power_total\"]", "[\"heat_forward\"]");
    let c = parse(&site).unwrap();
    let d = &c.devices[0];
    let names: Vec<&str> = d
        .registers
        .iter()
        .map(|&i| d.profile.registers[i].name.as_str())
        .collect();
    assert_eq!(names, ["heat_forward", "heat_forward_fraction"]);
}

#[test]
fn factors_are_overridable_from_the_site_config() {
    let site = SITE.replace(
        "[[account]]",
        "[[carbon_factor]]\nid = \"bj-guide-2025/grid\"\ncategory = \"01\"\nregion = \"11\"\nyear = 2025\nvalue = 0.6\nper = \"kWh\"\nsource = \"a provincial guide\"\n\n[[account]]",
    )
    .replace("carbon_region = \"national\"", "carbon_region = \"province\"");
    let c = parse(&site).unwrap();
    let a = &c.devices[0].account;
    let f = c
        .factors
        .carbon(
            a,
            reading_model::Category::Electricity,
            2026,
            c.selection(a),
        )
        .unwrap();
    assert_eq!((f.id, f.per_unit), ("bj-guide-2025/grid", 0.6));
    let bad = site.replace("value = 0.6", "value = -0.6");
    let e = parse(&bad).unwrap_err().to_string();
    assert!(
        e.contains("bj-guide-2025/grid") && e.contains("not negative"),
        "{e}"
    );
}

#[test]
fn meter_replacements_and_delta_limits() {
    // SITE ends with the device, so these lines belong to it.
    let site = format!(
        "{SITE}max_delta = {{ energy_import = 250.0 }}\n\n\
         [[device.replacement]]\nat = 2026-03-01T10:00:00+08:00\nregister = \"energy_import\"\n\
         old_final = 15234.5\nnew_start = 0.25\n\n\
         [[device.replacement]]\nat = 2026-01-05T00:00:00Z\nregister = \"energy_import\"\n\
         old_final = 800\nnew_start = 0\n"
    );
    let c = parse(&site).unwrap();
    let d = &c.devices[0];
    let energy = d.profile.register("energy_import").unwrap();
    let energy = d
        .profile
        .registers
        .iter()
        .position(|r| r.name == energy.name)
        .unwrap();
    assert_eq!(d.max_delta[energy], Some(250.0));
    assert_eq!(d.max_delta.iter().flatten().count(), 1);
    let r = &d.replacements[energy];
    // Oldest first, whatever the order in the file; 10:00+08:00 is 02:00Z.
    assert_eq!(r[0].at, 1_767_571_200_000);
    assert_eq!(
        (r[1].at, r[1].old_final, r[1].new_start),
        (1_772_330_400_000, 15234.5, 0.25)
    );

    // Errors name the line of the offending entry and its key.
    let line_of = |needle: &str, text: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap()
    };
    let bad = site.replace(
        "register = \"energy_import\"\nold_final = 800",
        "register = \"power_total\"\nold_final = 800",
    );
    let e = parse(&bad).unwrap_err().to_string();
    let line = line_of("2026-01-05", &bad) - 1;
    assert!(
        e.starts_with(&format!(
            "site.toml:{line}: device[0].replacement[1].register (110108A001/main)"
        )) && e.contains("not a cumulative quantity"),
        "{e}"
    );
    let bad = site.replace("2026-03-01T10:00:00+08:00", "2026-03-01T10:00:00");
    let e = parse(&bad).unwrap_err().to_string();
    assert!(
        e.contains("device[0].replacement[0].at") && e.contains("UTC offset"),
        "{e}"
    );
    let bad = site.replace("old_final = 15234.5", "old_final = -1");
    let e = parse(&bad).unwrap_err().to_string();
    assert!(e.contains("device[0].replacement[0].old_final"), "{e}");
    let bad = site.replace("2026-01-05T00:00:00Z", "2026-03-01T02:00:00Z");
    let e = parse(&bad).unwrap_err().to_string();
    assert!(e.contains("declared twice"), "{e}");
    let bad = site.replace("energy_import = 250.0", "energy_import = 0");
    let e = parse(&bad).unwrap_err().to_string();
    let line = line_of("max_delta", &bad);
    assert!(
        e.starts_with(&format!(
            "site.toml:{line}: device[0].max_delta.energy_import"
        )),
        "{e}"
    );
    let bad = site.replace("energy_import = 250.0", "energy_imprt = 250.0");
    let e = parse(&bad).unwrap_err().to_string();
    assert!(
        e.contains("max_delta.energy_imprt") && e.contains("no register"),
        "{e}"
    );
    let bad = site.replace("new_start = 0\n", "new_start = 0\nnew_reading = 1\n");
    let e = parse(&bad).unwrap_err().to_string();
    assert!(e.contains("new_reading"), "{e}");
}

#[test]
fn forward_urls_keep_tokens_off_the_network_in_clear_text() {
    let with = |url: &str, extra: &str| {
        parse(&SITE.replace(
            "url = \"http://127.0.0.1:9/api/v1/batches\"",
            &format!("url = \"{url}\"\n{extra}"),
        ))
    };
    let c = with(
        "https://ingest.example:8443/api/v1/batches",
        "ca_file = \"ca.pem\"",
    )
    .unwrap();
    assert_eq!(c.forward.mode, ForwardMode::Http);
    assert_eq!(
        c.forward.ca_file.as_deref(),
        Some(Path::new("/etc/jieneng/ca.pem"))
    );
    assert!(with("http://localhost:8080/api/v1/batches", "").is_ok());
    assert!(with("http://[::1]:8080/api/v1/batches", "").is_ok());
    let e = with("http://10.0.0.5:8080/api/v1/batches", "")
        .unwrap_err()
        .to_string();
    assert!(e.contains("url") && e.contains("clear text"), "{e}");

    let c = with("mqtts://ingest.example:8883", "mode = \"mqtt\"").unwrap();
    assert_eq!(c.forward.mode, ForwardMode::Mqtt);
    assert!(with("mqtt://127.0.0.1:1883", "mode = \"mqtt\"").is_ok());
    let e = with("mqtt://10.0.0.5:1883", "mode = \"mqtt\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("clear text"), "{e}");
    let e = with(
        "https://ingest.example:8443/api/v1/batches",
        "mode = \"mqtt\"",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("mqtts://"), "{e}");
    let e = with("mqtts://ingest.example", "mode = \"mqtt\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("port"), "{e}");
}

#[test]
fn devices_of_one_model_share_its_profile_and_threads_are_bounded() {
    let second = "\n[[device]]\nmeter = \"sub\"\naccount = \"110108A001\"\ncategory = \"01\"\n\
                  item = \"01000\"\nprofile = \"eastron/sdm630\"\n\
                  source = { type = \"modbus-tcp\", host = \"127.0.0.1\", port = 1503, unit = 1 }\n";
    let c = parse(&format!("{SITE}{second}")).unwrap();
    assert!(Arc::ptr_eq(&c.devices[0].profile, &c.devices[1].profile));
    assert_eq!(c.gateway.worker_threads, 1);
    let threads = |n: &str| {
        SITE.replace(
            "poll_interval = 5",
            &format!("poll_interval = 5\nworker_threads = {n}"),
        )
    };
    assert_eq!(parse(&threads("4")).unwrap().gateway.worker_threads, 4);
    let e = parse(&threads("0")).unwrap_err().to_string();
    assert!(
        e.contains("worker_threads") && e.contains("1 ..= 64"),
        "{e}"
    );
}

#[test]
fn reset_rules_default_from_the_interval_and_are_checked() {
    // SITE polls every 5 s: two intervals is less than the 60 s floor.
    let c = parse(SITE).unwrap();
    assert_eq!(
        c.devices[0].reset,
        ResetRule {
            reads: 3,
            after_ms: 60_000
        }
    );
    let c = parse(&format!("{SITE}reset = {{ reads = 5, after = 30 }}\n")).unwrap();
    assert_eq!(
        c.devices[0].reset,
        ResetRule {
            reads: 5,
            after_ms: 30_000
        }
    );
    let e = parse(&format!("{SITE}reset = {{ reads = 1 }}\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("device[0].reset.reads") && e.contains("2 ..= 1000"),
        "{e}"
    );
    let e = parse(&format!("{SITE}reset = {{ after = -1 }}\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("device[0].reset.after"), "{e}");
    let e = parse(&format!("{SITE}reset = {{ count = 3 }}\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("count"), "{e}");
}
