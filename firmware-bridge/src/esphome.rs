//! ESPHome's MQTT component: one topic per sensor, `<prefix>/sensor/<object_id>/state`, whose
//! payload is a bare number such as `1234.56`. The unit is not in the payload; it comes from the
//! Home Assistant discovery config ESPHome publishes on
//! `homeassistant/sensor/<node>/<object_id>/config`, or from the site's config.
//!
//! [`EsphomeRegistry`] holds what is known per state topic. Configured sensors win over
//! discovery, so a site can correct a sensor whose discovery is wrong — an energy sensor that
//! resets daily (`total_daily_energy`) or counts exported energy looks like any other
//! `device_class: energy`, `state_class: total_increasing` sensor. Discovered sensors that are
//! not energy-related (Wi-Fi signal, uptime) are remembered as ignored, so their states are
//! skipped rather than reported as unknown.
//!
//! ESPHome abbreviates discovery keys by default (`unit_of_meas`, `dev_cla`, `stat_cla`,
//! `stat_t`) [V: ESPHome `mqtt_const.h`]; both spellings are read, and the `~` base-topic
//! shorthand of Home Assistant discovery is expanded.

use std::collections::HashMap;

use reading_model::{Quantity, Unit};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::DecodeError;
use crate::value::{Basis, FirmwareValue};

/// State topics a registry tracks unless set otherwise.
pub const DEFAULT_MAX_SENSORS: usize = 100_000;

/// How one sensor's state becomes a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorSpec {
    pub channel: String,
    pub quantity: Quantity,
    /// The unit of the state payload after `scale`.
    pub unit: Unit,
    /// Multiplies the payload before the unit conversion (0.01 for a power factor in %).
    pub scale: f64,
    pub basis: Basis,
}

/// A sensor declared in the site's config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawSensorConfig")]
pub struct SensorConfig {
    state_topic: String,
    spec: SensorSpec,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSensorConfig {
    state_topic: String,
    /// Defaults to the object id in the state topic.
    #[serde(default)]
    channel: Option<String>,
    quantity: Quantity,
    unit: Unit,
    #[serde(default)]
    scale: Option<f64>,
    #[serde(default)]
    basis: Option<Basis>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SensorConfigError {
    #[error("sensor {state_topic}: unit {unit} does not measure {quantity}")]
    Unit {
        state_topic: String,
        unit: Unit,
        quantity: Quantity,
    },
    #[error("sensor {state_topic}: scale {scale} must be a finite number other than 0")]
    Scale { state_topic: String, scale: f64 },
    #[error("sensor with an empty state topic")]
    Topic,
}

impl TryFrom<RawSensorConfig> for SensorConfig {
    type Error = SensorConfigError;
    fn try_from(raw: RawSensorConfig) -> Result<Self, SensorConfigError> {
        let channel = raw
            .channel
            .unwrap_or_else(|| default_channel(&raw.state_topic).to_owned());
        let spec = SensorSpec {
            channel,
            quantity: raw.quantity,
            unit: raw.unit,
            scale: raw.scale.unwrap_or(1.0),
            basis: raw
                .basis
                .unwrap_or_else(|| Basis::default_for(raw.quantity)),
        };
        Self::new(raw.state_topic, spec)
    }
}

impl SensorConfig {
    pub fn new(state_topic: String, spec: SensorSpec) -> Result<Self, SensorConfigError> {
        if state_topic.is_empty() {
            return Err(SensorConfigError::Topic);
        }
        if spec
            .unit
            .convert(1.0, spec.quantity.canonical_unit())
            .is_err()
        {
            return Err(SensorConfigError::Unit {
                state_topic,
                unit: spec.unit,
                quantity: spec.quantity,
            });
        }
        if !spec.scale.is_finite() || spec.scale == 0.0 {
            return Err(SensorConfigError::Scale {
                state_topic,
                scale: spec.scale,
            });
        }
        Ok(Self { state_topic, spec })
    }

    pub fn state_topic(&self) -> &str {
        &self.state_topic
    }

    pub fn spec(&self) -> &SensorSpec {
        &self.spec
    }
}

/// ESPHome's default state topic of a sensor.
pub fn state_topic(prefix: &str, object_id: &str) -> String {
    format!("{prefix}/sensor/{object_id}/state")
}

/// `(prefix, object_id)` of a default-layout state topic `<prefix>/sensor/<object_id>/state`.
pub fn parse_state_topic(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_suffix("/state")?;
    let (head, object_id) = rest.rsplit_once('/')?;
    let prefix = head.strip_suffix("/sensor")?;
    (!prefix.is_empty() && !object_id.is_empty()).then_some((prefix, object_id))
}

fn default_channel(state_topic: &str) -> &str {
    parse_state_topic(state_topic).map_or(state_topic, |(_, id)| id)
}

/// `(component, object_id)` of a discovery topic
/// `<discovery_prefix>/<component>/[<node_id>/]<object_id>/config`.
pub fn parse_discovery_topic(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_suffix("/config")?;
    let mut levels = rest.rsplit('/');
    let object_id = levels.next()?;
    // Components are lower-case words; with a node id the component is one level further up.
    let a = levels.next()?;
    let b = levels.next();
    let component = match b {
        Some(b) if is_component(b) => b,
        _ if is_component(a) => a,
        _ => return None,
    };
    (!object_id.is_empty()).then_some((component, object_id))
}

fn is_component(s: &str) -> bool {
    matches!(
        s,
        "sensor"
            | "binary_sensor"
            | "switch"
            | "light"
            | "fan"
            | "cover"
            | "climate"
            | "number"
            | "select"
            | "button"
            | "text"
            | "text_sensor"
            | "lock"
            | "valve"
            | "event"
    )
}

/// What a discovery message taught the registry.
#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    Sensor {
        state_topic: String,
        spec: SensorSpec,
    },
    /// A sensor whose states are skipped (not energy-related, or not decodable as a bare number).
    Ignored { state_topic: String, reason: String },
    /// An empty config payload: Home Assistant's way of removing an entity.
    Removed { state_topic: Option<String> },
    /// A configured sensor keeps its config; discovery does not override it.
    Configured { state_topic: String },
    /// Not a sensor (a switch, a button …).
    NotASensor,
}

#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Configured(SensorSpec),
    Discovered(SensorSpec),
    Ignored(String),
}

/// What is known about each ESPHome sensor, keyed by state topic. Pure and in memory.
#[derive(Debug)]
pub struct EsphomeRegistry {
    sensors: HashMap<String, Entry>,
    /// Discovery topic → state topic, so that a removal can find its sensor.
    discovered: HashMap<String, String>,
    max_sensors: usize,
}

impl Default for EsphomeRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl EsphomeRegistry {
    pub fn new() -> Self {
        Self::with_max_sensors(DEFAULT_MAX_SENSORS)
    }

    pub fn with_max_sensors(max_sensors: usize) -> Self {
        Self {
            sensors: HashMap::new(),
            discovered: HashMap::new(),
            max_sensors,
        }
    }

    /// Sensors known, configured, discovered or ignored.
    pub fn len(&self) -> usize {
        self.sensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sensors.is_empty()
    }

    /// Declares a sensor from config; it takes precedence over anything discovered.
    pub fn configure(&mut self, sensor: SensorConfig) {
        self.sensors
            .insert(sensor.state_topic, Entry::Configured(sensor.spec));
    }

    /// The spec a state topic is decoded with, if it is decoded at all.
    pub fn spec(&self, state_topic: &str) -> Option<&SensorSpec> {
        match self.sensors.get(state_topic)? {
            Entry::Configured(s) | Entry::Discovered(s) => Some(s),
            Entry::Ignored(_) => None,
        }
    }

    /// Learns from a Home Assistant discovery config message.
    pub fn learn(&mut self, topic: &str, payload: &[u8]) -> Result<Discovery, DecodeError> {
        let Some((component, object_id)) = parse_discovery_topic(topic) else {
            return Err(DecodeError::topic(
                topic,
                "a discovery topic <prefix>/<component>/[<node>/]<object_id>/config",
            ));
        };
        if payload.trim_ascii().is_empty() {
            let state_topic = self.discovered.remove(topic);
            if let Some(st) = &state_topic
                && !matches!(self.sensors.get(st), Some(Entry::Configured(_)))
            {
                self.sensors.remove(st);
            }
            return Ok(Discovery::Removed { state_topic });
        }
        if component != "sensor" {
            return Ok(Discovery::NotASensor);
        }
        let cfg: Map<String, Value> = match serde_json::from_slice(payload) {
            Ok(Value::Object(o)) => o,
            Ok(_) => return Err(DecodeError::field(topic, "", "expected a JSON object")),
            Err(e) => return Err(DecodeError::json(topic, payload, &e)),
        };
        let text = |full: &'static str, abbr: &'static str| -> Result<Option<&str>, DecodeError> {
            let (key, v) = match (cfg.get(full), cfg.get(abbr)) {
                (Some(v), _) => (full, v),
                (None, Some(v)) => (abbr, v),
                (None, None) => return Ok(None),
            };
            match v {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s.as_str())),
                _ => Err(DecodeError::field(
                    topic,
                    format!("/{key}"),
                    "expected a string",
                )),
            }
        };
        let base = text("~", "~")?;
        let Some(state_topic) = text("state_topic", "stat_t")? else {
            return Err(DecodeError::field(
                topic,
                "/state_topic",
                "a sensor needs a state topic",
            ));
        };
        let state_topic = expand_base(state_topic, base);
        let unit = text("unit_of_measurement", "unit_of_meas")?;
        let device_class = text("device_class", "dev_cla")?;
        let template = text("value_template", "val_tpl")?;

        if matches!(self.sensors.get(&state_topic), Some(Entry::Configured(_))) {
            self.discovered
                .insert(topic.to_owned(), state_topic.clone());
            return Ok(Discovery::Configured { state_topic });
        }
        let channel = parse_state_topic(&state_topic).map_or(object_id, |(_, id)| id);
        let verdict = match template {
            // A template means the state is not a bare number; a JSON mapping can read it.
            Some(_) => Err("has a value_template; decode its state with a JSON mapping".to_owned()),
            None => spec_for(channel, device_class, unit),
        };
        let entry = match &verdict {
            Ok(spec) => Entry::Discovered(spec.clone()),
            Err(reason) => Entry::Ignored(reason.clone()),
        };
        if !self.sensors.contains_key(&state_topic) && self.sensors.len() >= self.max_sensors {
            return Err(DecodeError::Capacity {
                topic: topic.to_owned(),
                what: "ESPHome sensors",
                limit: self.max_sensors,
            });
        }
        self.sensors.insert(state_topic.clone(), entry);
        self.discovered
            .insert(topic.to_owned(), state_topic.clone());
        Ok(match verdict {
            Ok(spec) => Discovery::Sensor { state_topic, spec },
            Err(reason) => Discovery::Ignored {
                state_topic,
                reason,
            },
        })
    }

    /// Decodes a state message. `Ok(None)` for sensors known to be ignored, and for states that
    /// carry no reading: `nan` (ESPHome's "no value yet") and an empty payload (a retained
    /// message being cleared). A topic nothing is known about is an error, so that a missing
    /// discovery or config shows up instead of its data silently vanishing.
    pub fn decode(
        &self,
        topic: &str,
        payload: &[u8],
    ) -> Result<Option<FirmwareValue>, DecodeError> {
        let spec = match self.sensors.get(topic) {
            None => {
                return Err(DecodeError::Unmapped {
                    topic: topic.to_owned(),
                });
            }
            Some(Entry::Ignored(_)) => return Ok(None),
            Some(Entry::Configured(s) | Entry::Discovered(s)) => s,
        };
        let text = std::str::from_utf8(payload).map_err(|e| DecodeError::Bytes {
            topic: topic.to_owned(),
            offset: e.valid_up_to(),
            reason: "not UTF-8",
        })?;
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("nan") {
            return Ok(None);
        }
        let x = text
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| DecodeError::Bytes {
                topic: topic.to_owned(),
                offset: 0,
                reason: "expected a decimal number",
            })?;
        FirmwareValue::convert(
            spec.channel.clone(),
            spec.quantity,
            spec.basis,
            x * spec.scale,
            spec.unit,
            None,
        )
        .map(Some)
        .map_err(|e| DecodeError::value(topic, "", e))
    }
}

/// Home Assistant discovery: a topic starting (or ending) with `~` has the `~` value there.
fn expand_base(topic: &str, base: Option<&str>) -> String {
    match base {
        Some(b) => {
            if let Some(rest) = topic.strip_prefix('~') {
                format!("{b}{rest}")
            } else if let Some(rest) = topic.strip_suffix('~') {
                format!("{rest}{b}")
            } else {
                topic.to_owned()
            }
        }
        None => topic.to_owned(),
    }
}

/// What a discovered sensor measures, from its device class, else from its unit.
fn spec_for(
    channel: &str,
    device_class: Option<&str>,
    unit: Option<&str>,
) -> Result<SensorSpec, String> {
    let by_class = match device_class {
        Some("energy") => Some(Quantity::EnergyImport),
        Some("power") => Some(Quantity::PowerActive),
        Some("apparent_power") => Some(Quantity::PowerApparent),
        Some("reactive_power") => Some(Quantity::PowerReactive),
        Some("power_factor") => Some(Quantity::PowerFactor),
        Some("voltage") => Some(Quantity::Voltage),
        Some("current") => Some(Quantity::Current),
        Some("frequency") => Some(Quantity::Frequency),
        Some("temperature") => Some(Quantity::Temperature),
        Some("water" | "gas") => Some(Quantity::Volume),
        Some("volume_flow_rate") => Some(Quantity::Flow),
        _ => None,
    };
    // Home Assistant allows a power factor in %; the model stores a ratio.
    let (unit, scale) = match (by_class, unit.map(str::trim)) {
        (Some(Quantity::PowerFactor), Some("%")) => (Unit::One, 0.01),
        (_, Some(u)) => match Unit::parse(u) {
            Ok(unit) => (unit, 1.0),
            Err(_) => return Err(format!("unit {u:?} is not one jieneng stores")),
        },
        (Some(Quantity::PowerFactor), None) => (Unit::One, 1.0),
        (_, None) => return Err("no unit_of_measurement".to_owned()),
    };
    // Without a device class, the unit's dimension decides — except for dimensionless
    // sensors, which could be anything.
    let quantity = match by_class {
        Some(q) => q,
        None if unit == Unit::One => {
            return Err("dimensionless sensor without a device class".to_owned());
        }
        None => Quantity::all()
            .find(|q| q.canonical_unit() == unit.canonical().0)
            .ok_or_else(|| format!("no quantity is measured in {unit}"))?,
    };
    if unit.convert(1.0, quantity.canonical_unit()).is_err() {
        return Err(format!("unit {unit} does not measure {quantity}"));
    }
    Ok(SensorSpec {
        channel: channel.to_owned(),
        quantity,
        unit,
        scale,
        basis: Basis::default_for(quantity),
    })
}

#[cfg(test)]
mod tests;
