//! The JSON encoding of a batch (wire format v1, [`reading_model::Batch`]).
//!
//! The fast path is serde straight into `Batch`. Only when that fails is the body parsed again,
//! loosely, to find the first row and field at fault — serde alone says "line 1, column 4711",
//! which is no help to whoever wrote the client.

use reading_model::{
    AccountCode, Batch, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Unit,
    WIRE_VERSION,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{DecodeError, check_envelope, clip};

/// The fields of a v1 reading; the first eight are required.
const FIELDS: [&str; 13] = [
    "ts", "account", "meter", "category", "item", "quantity", "unit", "value", "delta", "kgce",
    "kgco2e", "factor", "quality",
];
const REQUIRED: usize = 8;

pub fn decode(bytes: &[u8], token_gateway: &GatewayId) -> Result<Batch, DecodeError> {
    match serde_json::from_slice::<Batch>(bytes) {
        Ok(batch) => {
            check_envelope(token_gateway, &batch.gateway, batch.version)?;
            Ok(batch)
        }
        Err(e) => Err(diagnose(bytes, e, token_gateway)),
    }
}

/// The batch with its readings left as JSON values.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[serde(default)]
    version: Option<u16>,
    gateway: GatewayId,
    #[allow(dead_code)] // parsed so that a bad epoch is reported as such
    #[serde(default)]
    epoch: Option<u64>,
    #[allow(dead_code)] // parsed so that a bad seq is reported as such
    seq: u64,
    readings: Vec<Value>,
}

fn diagnose(bytes: &[u8], first: serde_json::Error, token_gateway: &GatewayId) -> DecodeError {
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        return DecodeError::Malformed(format!(
            "batch JSON: {e} (byte offset {})",
            byte_offset(bytes, e.line(), e.column())
        ));
    }
    let envelope = match serde_json::from_slice::<Envelope>(bytes) {
        Ok(env) => env,
        Err(e) => return DecodeError::Malformed(format!("batch JSON: {e}")),
    };
    if let Err(e) = check_envelope(
        token_gateway,
        &envelope.gateway,
        envelope.version.unwrap_or(WIRE_VERSION),
    ) {
        return e;
    }
    for (row, reading) in envelope.readings.into_iter().enumerate() {
        if let Err(e) = check_row(row, reading) {
            return e;
        }
    }
    DecodeError::Malformed(format!("batch JSON: {first}"))
}

fn check_row(row: usize, reading: Value) -> Result<(), DecodeError> {
    let invalid = |field: &str, message: String| DecodeError::Invalid {
        row,
        field: field.to_owned(),
        message,
    };
    let Value::Object(fields) = reading else {
        return Err(invalid("", format!("expected an object, got {reading}")));
    };
    for name in &FIELDS[..REQUIRED] {
        if !fields.contains_key(*name) {
            return Err(invalid(name, "missing".into()));
        }
    }
    for (name, value) in fields {
        let shown = clip(&value.to_string()).into_owned();
        let r = match name.as_str() {
            "ts" => is::<i64>(value),
            "account" => is::<AccountCode>(value),
            "meter" => is::<MeterId>(value),
            "category" => is::<Category>(value),
            "item" => is::<EnergyCode>(value),
            "quantity" => is::<Quantity>(value),
            "unit" => is::<Unit>(value),
            "value" => is::<f64>(value),
            "delta" | "kgce" | "kgco2e" => is::<Option<f64>>(value),
            "factor" => is::<Option<String>>(value),
            "quality" => is::<Quality>(value),
            _ => {
                return Err(invalid(
                    &clip(&name),
                    format!("unknown field; a v1 reading has {}", FIELDS.join(", ")),
                ));
            }
        };
        r.map_err(|e| invalid(&name, format!("{shown}: {e}")))?;
    }
    Ok(())
}

fn is<T: DeserializeOwned>(v: Value) -> Result<(), serde_json::Error> {
    serde_json::from_value::<T>(v).map(drop)
}

/// The byte offset of a (1-based) line and column, for error messages.
fn byte_offset(body: &[u8], line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in body.split(|&b| b == b'\n').enumerate() {
        if i + 1 == line {
            return offset + column.saturating_sub(1);
        }
        offset += l.len() + 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw() -> GatewayId {
        GatewayId::parse("gw-1").unwrap()
    }

    fn row(account: &str) -> String {
        format!(
            r#"{{"ts":1764547200000,"account":"{account}","meter":"m1","category":"01","item":"01000",
               "quantity":"energy_import","unit":"kWh","value":12.5,"delta":0.5}}"#
        )
    }

    fn batch(rows: &[String]) -> String {
        format!(
            r#"{{"gateway":"gw-1","seq":3,"readings":[{}]}}"#,
            rows.join(",")
        )
    }

    #[test]
    fn decodes_a_batch() {
        let b = decode(batch(&[row("110108A001")]).as_bytes(), &gw()).unwrap();
        assert_eq!((b.seq, b.readings.len()), (3, 1));
        // No epoch (today's gateways, third-party clients): decoded as before.
        assert_eq!(b.epoch, None);
        let with = batch(&[row("110108A001")]).replace("\"seq\"", "\"epoch\":42,\"seq\"");
        assert_eq!(decode(with.as_bytes(), &gw()).unwrap().epoch, Some(42));
        let bad = batch(&[]).replace("\"seq\"", "\"epoch\":\"x\",\"seq\"");
        let e = decode(bad.as_bytes(), &gw()).unwrap_err().to_string();
        assert!(e.contains("epoch") || e.contains("invalid type"), "{e}");
    }

    #[test]
    fn a_bad_code_names_its_row_and_field() {
        let mut rows = vec![row("110108A001"); 17];
        rows.push(row("11010A001"));
        let e = decode(batch(&rows).as_bytes(), &gw()).unwrap_err();
        let DecodeError::Invalid { row, ref field, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!((row, field.as_str()), (17, "account"));
        assert!(
            e.to_string()
                .starts_with("readings[17].account: \"11010A001\""),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_missing_and_unknown_fields_name_the_field() {
        let cases = [
            (row("110108A001").replace("12.5", "\"12.5\""), "value"),
            (row("110108A001").replace(r#""meter":"m1","#, ""), "meter"),
            (row("110108A001").replace("\"delta\"", "\"delts\""), "delts"),
            (row("110108A001").replace("\"kWh\"", "\"kWs\""), "unit"),
            ("[1,2]".to_owned(), ""),
        ];
        for (r, field) in cases {
            let e = decode(batch(&[row("110108A001"), r]).as_bytes(), &gw()).unwrap_err();
            match &e {
                DecodeError::Invalid {
                    row: 1, field: f, ..
                } if f == field => {}
                _ => panic!("{field}: {e:?}"),
            }
        }
    }

    #[test]
    fn envelope_problems() {
        let e = decode(b"{\"gateway\":", &gw()).unwrap_err();
        assert!(
            matches!(&e, DecodeError::Malformed(m) if m.contains("byte offset")),
            "{e:?}"
        );
        let other = batch(&[row("11010A001")]).replace("gw-1", "gw-2");
        assert!(matches!(
            decode(other.as_bytes(), &gw()),
            Err(DecodeError::WrongGateway { .. })
        ));
        let v2 = batch(&[]).replace("\"seq\"", "\"version\":2,\"seq\"");
        assert!(matches!(
            decode(v2.as_bytes(), &gw()),
            Err(DecodeError::Batch {
                field: "version",
                ..
            })
        ));
        let extra = batch(&[]).replace("\"seq\"", "\"extra\":1,\"seq\"");
        assert!(matches!(
            decode(extra.as_bytes(), &gw()),
            Err(DecodeError::Malformed(m)) if m.contains("extra")
        ));
    }
}
