//! Sparkplug B (Eclipse Sparkplug 3.0): topics `spBv1.0/<group>/<type>/<edge>[/<device>]`
//! carrying protobuf payloads, decoded here by a small wire-format reader ([`proto`]).
//!
//! The schema, with field numbers checked against Eclipse Tahu's `sparkplug_b/sparkplug_b.proto`:
//!
//! ```text
//! Payload { uint64 timestamp = 1; repeated Metric metrics = 2; uint64 seq = 3;
//!           string uuid = 4; bytes body = 5; }
//! Metric  { string name = 1; uint64 alias = 2; uint64 timestamp = 3; uint32 datatype = 4;
//!           bool is_historical = 5; bool is_transient = 6; bool is_null = 7;
//!           MetaData metadata = 8; PropertySet properties = 9;
//!           oneof value { uint32 int_value = 10; uint64 long_value = 11; float float_value = 12;
//!                         double double_value = 13; bool boolean_value = 14;
//!                         string string_value = 15; bytes bytes_value = 16;
//!                         DataSet dataset_value = 17; Template template_value = 18; … = 19 } }
//! ```
//!
//! Signed integers travel as two's complement in the unsigned `int_value` / `long_value`
//! [M: Sparkplug 3.0 text not checked]; truncating to the declared width reads both a
//! sign-extended and a width-sized encoding correctly.
//!
//! Sparkplug is stateful, and [`SparkplugHost`] keeps that state per edge node: a BIRTH declares
//! every metric with its name, datatype and alias; later DATA may carry only the alias. Every
//! message of a node after NBIRTH carries `seq`, counting 0–255 and wrapping. A gap in `seq`, a
//! DATA before any BIRTH, or an alias never declared means the host's picture of the node is
//! incomplete; the outcome then carries a [`Rebirth`] request — NCMD `Node Control/Rebirth` —
//! for the caller to publish. Which metrics are energy readings, and in what unit, is config
//! ([`SparkplugConfig`]); other metrics are counted, not decoded.

pub mod proto;

use std::collections::HashMap;

use reading_model::{Quantity, Unit};
use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::value::{Basis, FirmwareValue};
use proto::{Field, ProtoError, Reader, Wire, Writer};

/// Sparkplug datatype ids, from the comment in Tahu's `sparkplug_b.proto`.
pub mod datatype {
    pub const INT8: u32 = 1;
    pub const INT16: u32 = 2;
    pub const INT32: u32 = 3;
    pub const INT64: u32 = 4;
    pub const UINT8: u32 = 5;
    pub const UINT16: u32 = 6;
    pub const UINT32: u32 = 7;
    pub const UINT64: u32 = 8;
    pub const FLOAT: u32 = 9;
    pub const DOUBLE: u32 = 10;
    pub const BOOLEAN: u32 = 11;
    pub const STRING: u32 = 12;
    pub const DATETIME: u32 = 13;
    pub const TEXT: u32 = 14;
}

/// The topic namespace of Sparkplug B.
pub const NAMESPACE: &str = "spBv1.0";

/// The metric an edge node answers with a fresh NBIRTH (and all its DBIRTHs).
pub const REBIRTH_METRIC: &str = "Node Control/Rebirth";

/// Edge nodes tracked by a [`SparkplugHost`] unless set otherwise.
pub const DEFAULT_MAX_NODES: usize = 10_000;

/// Devices tracked per edge node.
pub const MAX_DEVICES_PER_NODE: usize = 10_000;

// ---------------------------------------------------------------------------------------------
// Payload

/// A decoded Sparkplug B payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Payload {
    /// Milliseconds since the Unix epoch, UTC.
    pub timestamp: Option<u64>,
    pub metrics: Vec<Metric>,
    pub seq: Option<u64>,
    pub uuid: Option<String>,
    pub body: Option<Vec<u8>>,
}

/// One metric of a payload. `metadata` and `properties` are skipped when decoding.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metric {
    pub name: Option<String>,
    pub alias: Option<u64>,
    pub timestamp: Option<u64>,
    pub datatype: Option<u32>,
    pub is_historical: bool,
    pub is_transient: bool,
    pub is_null: bool,
    pub value: MetricValue,
}

/// The `value` oneof of a metric.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum MetricValue {
    #[default]
    None,
    Int(u32),
    Long(u64),
    Float(f32),
    Double(f64),
    Boolean(bool),
    String(String),
    Bytes(Vec<u8>),
    /// A DataSet, Template or extension value: not a reading, not decoded.
    Other,
}

fn utf8(b: &[u8], at: usize) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|e| ProtoError {
        offset: at.saturating_add(e.utf8_error().valid_up_to()),
        reason: "string is not UTF-8",
    })
}

fn wrong_wire(f: &Field<'_>) -> ProtoError {
    ProtoError {
        offset: f.at,
        reason: "unexpected wire type for this field",
    }
}

impl Payload {
    /// Decodes the protobuf bytes of a Sparkplug B payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(bytes, 0);
        let mut p = Payload::default();
        while let Some(f) = r.field()? {
            match (f.number, f.wire) {
                (1, Wire::Varint(v)) => p.timestamp = Some(v),
                (2, Wire::Len(b)) => p.metrics.push(Metric::decode(b, f.data_at)?),
                (3, Wire::Varint(v)) => p.seq = Some(v),
                (4, Wire::Len(b)) => p.uuid = Some(utf8(b, f.data_at)?),
                (5, Wire::Len(b)) => p.body = Some(b.to_vec()),
                (1..=5, _) => return Err(wrong_wire(&f)),
                _ => {}
            }
        }
        Ok(p)
    }

    /// Encodes the payload in field-number order; `MetricValue::Other` is left out.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        if let Some(t) = self.timestamp {
            w.uint(1, t);
        }
        for m in &self.metrics {
            w.bytes(2, &m.encode());
        }
        if let Some(s) = self.seq {
            w.uint(3, s);
        }
        if let Some(u) = &self.uuid {
            w.bytes(4, u.as_bytes());
        }
        if let Some(b) = &self.body {
            w.bytes(5, b);
        }
        w.buf
    }
}

impl Metric {
    fn decode(bytes: &[u8], base: usize) -> Result<Self, ProtoError> {
        let mut r = Reader::new(bytes, base);
        let mut m = Metric::default();
        while let Some(f) = r.field()? {
            match (f.number, f.wire) {
                (1, Wire::Len(b)) => m.name = Some(utf8(b, f.data_at)?),
                (2, Wire::Varint(v)) => m.alias = Some(v),
                (3, Wire::Varint(v)) => m.timestamp = Some(v),
                // uint32 on the wire as a varint; protobuf truncates to 32 bits.
                (4, Wire::Varint(v)) => m.datatype = Some(v as u32),
                (5, Wire::Varint(v)) => m.is_historical = v != 0,
                (6, Wire::Varint(v)) => m.is_transient = v != 0,
                (7, Wire::Varint(v)) => m.is_null = v != 0,
                (8 | 9, Wire::Len(_)) => {}
                (10, Wire::Varint(v)) => m.value = MetricValue::Int(v as u32),
                (11, Wire::Varint(v)) => m.value = MetricValue::Long(v),
                (12, Wire::Fixed32(v)) => m.value = MetricValue::Float(f32::from_bits(v)),
                (13, Wire::Fixed64(v)) => m.value = MetricValue::Double(f64::from_bits(v)),
                (14, Wire::Varint(v)) => m.value = MetricValue::Boolean(v != 0),
                (15, Wire::Len(b)) => m.value = MetricValue::String(utf8(b, f.data_at)?),
                (16, Wire::Len(b)) => m.value = MetricValue::Bytes(b.to_vec()),
                (17..=19, Wire::Len(_)) => m.value = MetricValue::Other,
                (1..=19, _) => return Err(wrong_wire(&f)),
                _ => {}
            }
        }
        Ok(m)
    }

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        if let Some(n) = &self.name {
            w.bytes(1, n.as_bytes());
        }
        if let Some(a) = self.alias {
            w.uint(2, a);
        }
        if let Some(t) = self.timestamp {
            w.uint(3, t);
        }
        if let Some(d) = self.datatype {
            w.uint(4, u64::from(d));
        }
        if self.is_historical {
            w.bool(5, true);
        }
        if self.is_transient {
            w.bool(6, true);
        }
        if self.is_null {
            w.bool(7, true);
        }
        match &self.value {
            MetricValue::None | MetricValue::Other => {}
            MetricValue::Int(v) => w.uint(10, u64::from(*v)),
            MetricValue::Long(v) => w.uint(11, *v),
            MetricValue::Float(v) => w.fixed32(12, v.to_bits()),
            MetricValue::Double(v) => w.fixed64(13, v.to_bits()),
            MetricValue::Boolean(v) => w.bool(14, *v),
            MetricValue::String(s) => w.bytes(15, s.as_bytes()),
            MetricValue::Bytes(b) => w.bytes(16, b),
        }
        w.buf
    }

    /// The metric as a number, reading signed integer types as two's complement of their width.
    pub fn number(&self, datatype: Option<u32>) -> Result<f64, &'static str> {
        use datatype::*;
        match self.value {
            MetricValue::Int(v) => Ok(match datatype {
                Some(INT8) => f64::from(v as u8 as i8),
                Some(INT16) => f64::from(v as u16 as i16),
                Some(INT32) => f64::from(v as i32),
                _ => f64::from(v),
            }),
            MetricValue::Long(v) => Ok(match datatype {
                Some(INT8) => f64::from(v as u8 as i8),
                Some(INT16) => f64::from(v as u16 as i16),
                Some(INT32) => f64::from(v as u32 as i32),
                Some(INT64) => v as i64 as f64,
                _ => v as f64,
            }),
            MetricValue::Float(v) if v.is_finite() => Ok(f64::from(v)),
            MetricValue::Double(v) if v.is_finite() => Ok(v),
            MetricValue::Float(_) | MetricValue::Double(_) => Err("value is not finite"),
            MetricValue::Boolean(_) => Err("a boolean is not a measurement"),
            MetricValue::String(_) => Err("a string is not a measurement"),
            MetricValue::Bytes(_) | MetricValue::Other => Err("not a numeric value"),
            MetricValue::None => Err("metric has no value"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Topics

/// The message types of Sparkplug B.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    NBirth,
    NDeath,
    DBirth,
    DDeath,
    NData,
    DData,
    NCmd,
    DCmd,
    /// A primary host application's state, `spBv1.0/STATE/<host_id>` (3.0).
    State,
}

impl MessageType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "NBIRTH" => Self::NBirth,
            "NDEATH" => Self::NDeath,
            "DBIRTH" => Self::DBirth,
            "DDEATH" => Self::DDeath,
            "NDATA" => Self::NData,
            "DDATA" => Self::DData,
            "NCMD" => Self::NCmd,
            "DCMD" => Self::DCmd,
            _ => return None,
        })
    }

    fn is_device(self) -> bool {
        matches!(self, Self::DBirth | Self::DDeath | Self::DData | Self::DCmd)
    }
}

/// A parsed Sparkplug topic. For `State`, `edge` is the host id and `group` is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparkplugTopic<'a> {
    pub group: &'a str,
    pub kind: MessageType,
    pub edge: &'a str,
    pub device: Option<&'a str>,
}

const TOPIC_SHAPE: &str = "a Sparkplug topic spBv1.0/<group>/<type>/<edge>[/<device>]";

pub fn parse_topic(topic: &str) -> Result<SparkplugTopic<'_>, DecodeError> {
    let bad = || DecodeError::topic(topic, TOPIC_SHAPE);
    let mut levels = topic.split('/');
    if levels.next() != Some(NAMESPACE) {
        return Err(bad());
    }
    let group = levels.next().ok_or_else(bad)?;
    let second = levels.next().ok_or_else(bad)?;
    if group == "STATE" && levels.clone().next().is_none() && !second.is_empty() {
        return Ok(SparkplugTopic {
            group: "",
            kind: MessageType::State,
            edge: second,
            device: None,
        });
    }
    let kind = MessageType::parse(second).ok_or_else(bad)?;
    let edge = levels.next().ok_or_else(bad)?;
    let device = levels.next();
    if levels.next().is_some()
        || group.is_empty()
        || edge.is_empty()
        || device.is_some_and(str::is_empty)
        || kind.is_device() != device.is_some()
    {
        return Err(bad());
    }
    Ok(SparkplugTopic {
        group,
        kind,
        edge,
        device,
    })
}

/// The topic to send node commands (such as a rebirth request) to.
pub fn ncmd_topic(group: &str, edge: &str) -> String {
    format!("{NAMESPACE}/{group}/NCMD/{edge}")
}

/// An NCMD payload asking an edge node to rebirth: metric `Node Control/Rebirth` = true.
/// `timestamp_ms` is the caller's clock; this crate has none.
pub fn rebirth_payload(timestamp_ms: u64) -> Vec<u8> {
    Payload {
        timestamp: Some(timestamp_ms),
        metrics: vec![Metric {
            name: Some(REBIRTH_METRIC.to_owned()),
            timestamp: Some(timestamp_ms),
            datatype: Some(datatype::BOOLEAN),
            value: MetricValue::Boolean(true),
            ..Metric::default()
        }],
        ..Payload::default()
    }
    .encode()
}

// ---------------------------------------------------------------------------------------------
// Config

/// Which metric is which reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricMapping {
    /// The metric name as declared in BIRTH, e.g. `Meter/Energy Import`.
    pub name: String,
    pub quantity: Quantity,
    /// The unit of the metric's value after `scale`.
    pub unit: Unit,
    #[serde(default = "one")]
    pub scale: f64,
    /// Defaults to the metric name.
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub basis: Option<Basis>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SparkplugConfigError {
    #[error("metric {name:?}: unit {unit} does not measure {quantity}")]
    Unit {
        name: String,
        unit: Unit,
        quantity: Quantity,
    },
    #[error("metric {name:?}: scale {scale} must be a finite number other than 0")]
    Scale { name: String, scale: f64 },
    #[error("metric {0:?} is mapped twice")]
    Duplicate(String),
}

/// Metric name → reading, validated.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(try_from = "RawSparkplugConfig")]
pub struct SparkplugConfig {
    metrics: HashMap<String, MetricMapping>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSparkplugConfig {
    metrics: Vec<MetricMapping>,
}

impl TryFrom<RawSparkplugConfig> for SparkplugConfig {
    type Error = SparkplugConfigError;
    fn try_from(raw: RawSparkplugConfig) -> Result<Self, SparkplugConfigError> {
        Self::new(raw.metrics)
    }
}

impl SparkplugConfig {
    pub fn new(metrics: Vec<MetricMapping>) -> Result<Self, SparkplugConfigError> {
        let mut map = HashMap::with_capacity(metrics.len());
        for m in metrics {
            if m.unit.convert(1.0, m.quantity.canonical_unit()).is_err() {
                return Err(SparkplugConfigError::Unit {
                    name: m.name,
                    unit: m.unit,
                    quantity: m.quantity,
                });
            }
            if !m.scale.is_finite() || m.scale == 0.0 {
                return Err(SparkplugConfigError::Scale {
                    name: m.name,
                    scale: m.scale,
                });
            }
            if map.contains_key(&m.name) {
                return Err(SparkplugConfigError::Duplicate(m.name));
            }
            map.insert(m.name.clone(), m);
        }
        Ok(Self { metrics: map })
    }

    pub fn get(&self, name: &str) -> Option<&MetricMapping> {
        self.metrics.get(name)
    }
}

// ---------------------------------------------------------------------------------------------
// Host state

/// Why the node should be asked to rebirth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebirthReason {
    /// DATA, a DBIRTH or a DDEATH from a node whose NBIRTH was never seen.
    UnknownNode,
    /// DDATA from a device whose DBIRTH was never seen.
    UnknownDevice(String),
    /// `seq` skipped: messages were lost, possibly a BIRTH among them.
    SeqGap { expected: u8, got: u64 },
    /// A message after NBIRTH without `seq`.
    MissingSeq,
    /// A metric referred to by an alias no BIRTH declared.
    UnknownAlias(u64),
}

/// A request to publish [`rebirth_payload`] on `topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebirth {
    pub reason: RebirthReason,
    /// `spBv1.0/<group>/NCMD/<edge>`.
    pub topic: String,
}

/// A metric of the message that could not become a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricProblem {
    /// The metric's name, or `alias <n>` when it has none.
    pub metric: String,
    pub reason: String,
}

/// What one message meant.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub kind: MessageType,
    pub group: String,
    pub edge: String,
    pub device: Option<String>,
    /// Readings of the mapped metrics.
    pub values: Vec<FirmwareValue>,
    /// Set when the host's view of the node is incomplete; the caller should publish the NCMD.
    pub rebirth: Option<Rebirth>,
    pub problems: Vec<MetricProblem>,
    /// Metrics with no mapping in the config: not readings, counted for diagnostics.
    pub unmapped: usize,
}

impl Outcome {
    fn new(t: &SparkplugTopic<'_>) -> Self {
        Self {
            kind: t.kind,
            group: t.group.to_owned(),
            edge: t.edge.to_owned(),
            device: t.device.map(str::to_owned),
            values: Vec::new(),
            rebirth: None,
            problems: Vec::new(),
            unmapped: 0,
        }
    }

    fn rebirth(&mut self, reason: RebirthReason) {
        // The first reason is kept; one request covers them all.
        if self.rebirth.is_none() {
            self.rebirth = Some(Rebirth {
                reason,
                topic: ncmd_topic(&self.group, &self.edge),
            });
        }
    }

    fn problem(&mut self, metric: String, reason: impl Into<String>) {
        self.problems.push(MetricProblem {
            metric,
            reason: reason.into(),
        });
    }
}

#[derive(Debug, Clone)]
struct MetricDef {
    name: String,
    datatype: Option<u32>,
}

/// The metrics a BIRTH declared: by name, and by alias for DATA that carries only aliases.
#[derive(Debug, Default)]
struct MetricTable {
    defs: Vec<MetricDef>,
    by_name: HashMap<String, usize>,
    by_alias: HashMap<u64, usize>,
}

impl MetricTable {
    fn learn(metrics: &[Metric]) -> Self {
        let mut t = Self::default();
        for m in metrics {
            let Some(name) = &m.name else { continue };
            let i = t.defs.len();
            t.defs.push(MetricDef {
                name: name.clone(),
                datatype: m.datatype,
            });
            t.by_name.insert(name.clone(), i);
            if let Some(a) = m.alias {
                t.by_alias.insert(a, i);
            }
        }
        t
    }

    fn by_name(&self, name: &str) -> Option<&MetricDef> {
        self.defs.get(*self.by_name.get(name)?)
    }

    fn by_alias(&self, alias: u64) -> Option<&MetricDef> {
        self.defs.get(*self.by_alias.get(&alias)?)
    }
}

#[derive(Debug)]
struct Node {
    bd_seq: Option<u64>,
    /// The `seq` of the last message from this node.
    seq: u8,
    metrics: MetricTable,
    devices: HashMap<String, MetricTable>,
}

/// A Sparkplug host application's view of the edge nodes it hears from: their metric tables,
/// `seq` and `bdSeq`. Pure and in memory; the caller owns it and publishes what it asks for.
#[derive(Debug)]
pub struct SparkplugHost {
    config: SparkplugConfig,
    nodes: HashMap<(String, String), Node>,
    max_nodes: usize,
}

impl SparkplugHost {
    pub fn new(config: SparkplugConfig) -> Self {
        Self::with_max_nodes(config, DEFAULT_MAX_NODES)
    }

    pub fn with_max_nodes(config: SparkplugConfig, max_nodes: usize) -> Self {
        Self {
            config,
            nodes: HashMap::new(),
            max_nodes,
        }
    }

    /// Edge nodes currently known to be born.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Forgets a node, e.g. when the MQTT session to the broker was lost and messages may have
    /// been missed; its next DATA asks for a rebirth.
    pub fn forget_node(&mut self, group: &str, edge: &str) {
        self.nodes.remove(&(group.to_owned(), edge.to_owned()));
    }

    /// Feeds one message. Commands and host STATE messages yield an empty outcome.
    pub fn handle(&mut self, topic: &str, payload: &[u8]) -> Result<Outcome, DecodeError> {
        let t = parse_topic(topic)?;
        let mut out = Outcome::new(&t);
        if matches!(
            t.kind,
            MessageType::NCmd | MessageType::DCmd | MessageType::State
        ) {
            return Ok(out);
        }
        let p = Payload::decode(payload).map_err(|e| DecodeError::Bytes {
            topic: topic.to_owned(),
            offset: e.offset,
            reason: e.reason,
        })?;
        let key = (t.group.to_owned(), t.edge.to_owned());

        match t.kind {
            MessageType::NBirth => {
                if !self.nodes.contains_key(&key) && self.nodes.len() >= self.max_nodes {
                    return Err(DecodeError::Capacity {
                        topic: topic.to_owned(),
                        what: "Sparkplug edge nodes",
                        limit: self.max_nodes,
                    });
                }
                // NBIRTH starts the count at 0 (a missing seq is read as 0); it must fit a byte.
                let seq = match u8::try_from(p.seq.unwrap_or(0)) {
                    Ok(s) => s,
                    Err(_) => {
                        out.rebirth(RebirthReason::SeqGap {
                            expected: 0,
                            got: p.seq.unwrap_or(0),
                        });
                        0
                    }
                };
                let node = Node {
                    bd_seq: bd_seq(&p),
                    seq,
                    metrics: MetricTable::learn(&p.metrics),
                    devices: HashMap::new(),
                };
                emit(&self.config, &node.metrics, &p, &mut out);
                self.nodes.insert(key, node);
            }
            MessageType::NDeath => {
                // NDEATH is the MQTT will registered with the birth's bdSeq; a will from an
                // older session (different bdSeq) must not kill the current one.
                let current = self.nodes.get(&key).map(|n| n.bd_seq);
                if let Some(current) = current {
                    let stale = matches!((current, bd_seq(&p)), (Some(a), Some(b)) if a != b);
                    if !stale {
                        self.nodes.remove(&key);
                    }
                }
            }
            MessageType::NData | MessageType::DBirth | MessageType::DData | MessageType::DDeath => {
                let Some(node) = self.nodes.get_mut(&key) else {
                    out.rebirth(RebirthReason::UnknownNode);
                    return Ok(out);
                };
                check_seq(node, p.seq, &mut out);
                let device = t.device.unwrap_or_default();
                match t.kind {
                    MessageType::NData => emit(&self.config, &node.metrics, &p, &mut out),
                    MessageType::DBirth => {
                        if !node.devices.contains_key(device)
                            && node.devices.len() >= MAX_DEVICES_PER_NODE
                        {
                            return Err(DecodeError::Capacity {
                                topic: topic.to_owned(),
                                what: "Sparkplug devices of one edge node",
                                limit: MAX_DEVICES_PER_NODE,
                            });
                        }
                        let table = MetricTable::learn(&p.metrics);
                        emit(&self.config, &table, &p, &mut out);
                        node.devices.insert(device.to_owned(), table);
                    }
                    MessageType::DData => match node.devices.get(device) {
                        Some(table) => emit(&self.config, table, &p, &mut out),
                        None => out.rebirth(RebirthReason::UnknownDevice(device.to_owned())),
                    },
                    _ => {
                        node.devices.remove(device);
                    }
                }
            }
            MessageType::NCmd | MessageType::DCmd | MessageType::State => {}
        }
        Ok(out)
    }
}

/// The `bdSeq` metric of an NBIRTH or NDEATH.
fn bd_seq(p: &Payload) -> Option<u64> {
    p.metrics
        .iter()
        .find(|m| m.name.as_deref() == Some("bdSeq"))
        .and_then(|m| match m.value {
            MetricValue::Long(v) => Some(v),
            MetricValue::Int(v) => Some(u64::from(v)),
            _ => None,
        })
}

fn check_seq(node: &mut Node, seq: Option<u64>, out: &mut Outcome) {
    let expected = node.seq.wrapping_add(1);
    match seq {
        None => out.rebirth(RebirthReason::MissingSeq),
        Some(got) => {
            if got != u64::from(expected) {
                out.rebirth(RebirthReason::SeqGap { expected, got });
            }
            // Follow the node's count from here, so one lost message asks once, not forever.
            if let Ok(s) = u8::try_from(got) {
                node.seq = s;
            }
        }
    }
}

/// Turns the mapped metrics of a payload into values, resolving aliases through `table`.
fn emit(config: &SparkplugConfig, table: &MetricTable, p: &Payload, out: &mut Outcome) {
    for m in &p.metrics {
        let (name, declared) = match (&m.name, m.alias) {
            (Some(n), _) => (n.as_str(), table.by_name(n).and_then(|d| d.datatype)),
            (None, Some(a)) => match table.by_alias(a) {
                Some(d) => (d.name.as_str(), d.datatype),
                None => {
                    out.problem(format!("alias {a}"), "alias not declared in any BIRTH");
                    out.rebirth(RebirthReason::UnknownAlias(a));
                    continue;
                }
            },
            (None, None) => {
                out.problem(String::new(), "metric has neither name nor alias");
                continue;
            }
        };
        let Some(map) = config.get(name) else {
            out.unmapped += 1;
            continue;
        };
        if m.is_null {
            out.problem(name.to_owned(), "metric is null");
            continue;
        }
        let raw = match m.number(m.datatype.or(declared)) {
            Ok(x) => x,
            Err(reason) => {
                out.problem(name.to_owned(), reason);
                continue;
            }
        };
        let ts_ms = m
            .timestamp
            .or(p.timestamp)
            .and_then(|t| i64::try_from(t).ok());
        let channel = map.channel.clone().unwrap_or_else(|| name.to_owned());
        let basis = map
            .basis
            .unwrap_or_else(|| Basis::default_for(map.quantity));
        match FirmwareValue::convert(
            channel,
            map.quantity,
            basis,
            raw * map.scale,
            map.unit,
            ts_ms,
        ) {
            Ok(v) => out.values.push(v),
            Err(e) => out.problem(name.to_owned(), e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
