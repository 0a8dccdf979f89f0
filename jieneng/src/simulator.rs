//! Simulated meters for the demo: real Modbus TCP servers on loopback whose registers advance
//! like a public building's — office hours, nights, weekends, heating and cooling that follow
//! an outdoor temperature that itself swings through the day.

use std::collections::HashMap;
use std::future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{Datelike, Timelike, Utc, Weekday};
use device_profiles::decode::Ratios;
use device_profiles::{FunctionCode, Profile, encode_register};
use reading_model::Quantity;
use tokio::net::TcpListener;
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response};

/// A meter's registers by (function code, address).
type RegisterImage = HashMap<(FunctionCode, u16), u16>;

/// How a simulated meter draws power.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// Office-hours load: `base` kW always, up to `peak` kW more when the building is occupied.
    Occupancy { base: f64, peak: f64 },
    /// Heating/cooling plant: kW per degree away from 18 °C while occupied, plus `base`.
    Hvac { base: f64, per_degree: f64 },
    /// Water: m³/h while occupied.
    Water { base: f64, peak: f64 },
    /// The outdoor temperature sensor.
    Weather,
}

#[derive(Debug)]
pub struct SimMeter {
    pub name: String,
    pub profile: Profile,
    pub load: Load,
    /// Cumulative counter in the canonical unit (kWh or m³).
    pub total: f64,
    /// The last instantaneous value (kW, m³/h or °C).
    pub level: f64,
}

/// Beijing wall-clock time (UTC+8, no DST): occupancy follows local office hours.
fn local(ts_ms: i64) -> chrono::NaiveDateTime {
    reading_model::time::local_datetime(ts_ms).unwrap_or_else(|| Utc::now().naive_utc())
}

/// 0..1: how occupied an office is at a local time (08:30–17:30 weekdays, ramps, lunch dip).
pub fn occupancy(ts_ms: i64) -> f64 {
    let t = local(ts_ms);
    if matches!(t.weekday(), Weekday::Sat | Weekday::Sun) {
        return 0.05;
    }
    let h = f64::from(t.hour()) + f64::from(t.minute()) / 60.0;
    match h {
        h if h < 7.5 => 0.02,
        h if h < 8.5 => h - 7.5,
        h if h < 12.0 => 1.0,
        h if h < 13.5 => 0.7,
        h if h < 17.5 => 1.0,
        h if h < 19.0 => 1.0 - (h - 17.5) / 1.5 * 0.85,
        h if h < 22.0 => 0.15,
        _ => 0.02,
    }
}

/// Outdoor °C: a late-autumn Beijing day, coldest at 05:00, warmest at 14:00.
pub fn outdoor_temperature(ts_ms: i64) -> f64 {
    let t = local(ts_ms);
    let h = f64::from(t.hour()) + f64::from(t.minute()) / 60.0;
    let mean =
        4.0 + 10.0 * ((f64::from(t.ordinal()) - 200.0) / 365.0 * std::f64::consts::TAU).cos();
    mean + 5.0 * ((h - 14.0) / 24.0 * std::f64::consts::TAU).cos()
}

impl Load {
    /// kW (or m³/h, or °C for the weather sensor) at a time.
    pub fn rate(self, ts_ms: i64) -> f64 {
        let occ = occupancy(ts_ms);
        match self {
            Load::Occupancy { base, peak } | Load::Water { base, peak } => base + peak * occ,
            Load::Hvac { base, per_degree } => {
                base + per_degree * (18.0 - outdoor_temperature(ts_ms)).abs() * occ
            }
            Load::Weather => outdoor_temperature(ts_ms),
        }
    }
}

impl SimMeter {
    fn rate(&self, ts_ms: i64) -> f64 {
        self.load.rate(ts_ms)
    }

    /// Advances the meter to `ts_ms` by `dt_s` seconds of its current rate.
    pub fn advance(&mut self, ts_ms: i64, dt_s: f64) {
        self.level = self.rate(ts_ms);
        if !matches!(self.load, Load::Weather) {
            self.total += self.level * dt_s / 3600.0;
        }
    }

    /// The register image the meter presents now.
    pub fn registers(&self) -> RegisterImage {
        let mut out = HashMap::new();
        for r in &self.profile.registers {
            let v = match r.quantity {
                Quantity::EnergyImport | Quantity::Volume => self.total,
                Quantity::PowerActive if r.phase == device_profiles::Phase::Total => self.level,
                Quantity::PowerActive => self.level / 3.0,
                Quantity::Temperature | Quantity::OutdoorTemperature => self.level,
                Quantity::Flow => self.level,
                Quantity::Voltage => 230.0,
                Quantity::Current => self.level * 1000.0 / 230.0 / 3.0,
                Quantity::Frequency => 50.0,
                Quantity::PowerFactor => 0.95,
                _ => 0.0,
            };
            if let Ok(words) =
                encode_register(r, self.profile.word_order_of(r), v, Ratios::default())
            {
                for (i, w) in words.into_iter().enumerate() {
                    out.insert((r.function, r.address + i as u16), w);
                }
            }
        }
        out
    }
}

/// One meter's Modbus service: reads inside the profile's address range answer (0 where
/// nothing is mapped, as real meters do); reads outside it get `IllegalDataAddress`.
#[derive(Debug, Clone)]
struct MeterService {
    image: Arc<Mutex<RegisterImage>>,
    ranges: Arc<HashMap<FunctionCode, (u16, u16)>>,
}

impl MeterService {
    fn read(&self, f: FunctionCode, addr: u16, n: u16) -> Result<Vec<u16>, ExceptionCode> {
        let (lo, hi) = self
            .ranges
            .get(&f)
            .copied()
            .ok_or(ExceptionCode::IllegalFunction)?;
        let end = u32::from(addr) + u32::from(n);
        if n == 0 || n > 125 || addr < lo || end > u32::from(hi) + 1 {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let image = self
            .image
            .lock()
            .map_err(|_| ExceptionCode::ServerDeviceFailure)?;
        Ok((0..n)
            .map(|i| image.get(&(f, addr + i)).copied().unwrap_or(0))
            .collect())
    }
}

impl Service for MeterService {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Request<'static>) -> Self::Future {
        future::ready(match req {
            Request::ReadHoldingRegisters(a, n) => self
                .read(FunctionCode::Holding, a, n)
                .map(Response::ReadHoldingRegisters),
            Request::ReadInputRegisters(a, n) => self
                .read(FunctionCode::Input, a, n)
                .map(Response::ReadInputRegisters),
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// The running simulation: meters, their servers, and where their counters are kept between runs.
#[derive(Debug)]
pub struct Simulation {
    pub meters: Vec<Arc<Mutex<SimMeter>>>,
    pub addrs: Vec<SocketAddr>,
    images: Vec<Arc<Mutex<RegisterImage>>>,
    state_file: PathBuf,
}

impl Simulation {
    /// Starts one Modbus TCP server per meter on 127.0.0.1 with an OS-chosen port. Counters resume
    /// from `state_file` so the gateway sees meters that paused, not meters that were reset.
    pub async fn start(mut meters: Vec<SimMeter>, state_file: &Path) -> anyhow::Result<Self> {
        if let Ok(text) = std::fs::read_to_string(state_file) {
            let saved: HashMap<String, f64> = serde_json::from_str(&text).unwrap_or_default();
            for m in &mut meters {
                if let Some(t) = saved.get(&m.name) {
                    m.total = *t;
                }
            }
        }
        let now = Utc::now().timestamp_millis();
        let mut sim = Self {
            meters: vec![],
            addrs: vec![],
            images: vec![],
            state_file: state_file.to_path_buf(),
        };
        for mut m in meters {
            m.advance(now, 0.0);
            let mut ranges: HashMap<FunctionCode, (u16, u16)> = HashMap::new();
            for r in &m.profile.registers {
                let last = r.address + r.data_type.words() - 1;
                let e = ranges.entry(r.function).or_insert((r.address, last));
                e.0 = e.0.min(r.address);
                e.1 = e.1.max(last);
            }
            let image = Arc::new(Mutex::new(m.registers()));
            let service = MeterService {
                image: image.clone(),
                ranges: Arc::new(ranges),
            };
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            sim.addrs.push(listener.local_addr()?);
            let server = Server::new(listener);
            tokio::spawn(async move {
                let on_connected = |stream, socket_addr| {
                    let service = service.clone();
                    async move {
                        accept_tcp_connection(stream, socket_addr, move |_| {
                            Ok(Some(service.clone()))
                        })
                    }
                };
                let _ = server
                    .serve(
                        &on_connected,
                        |e| tracing::debug!(error = %e, "simulated meter connection"),
                    )
                    .await;
            });
            sim.images.push(image);
            sim.meters.push(Arc::new(Mutex::new(m)));
        }
        Ok(sim)
    }

    /// Advances every meter by `dt_s` and refreshes its registers.
    pub fn tick(&self, dt_s: f64) {
        let now = Utc::now().timestamp_millis();
        for (m, image) in self.meters.iter().zip(&self.images) {
            if let (Ok(mut m), Ok(mut img)) = (m.lock(), image.lock()) {
                m.advance(now, dt_s);
                *img = m.registers();
            }
        }
    }

    pub fn save(&self) -> std::io::Result<()> {
        let totals: HashMap<String, f64> = self
            .meters
            .iter()
            .filter_map(|m| m.lock().ok().map(|m| (m.name.clone(), m.total)))
            .collect();
        std::fs::write(
            &self.state_file,
            serde_json::to_vec_pretty(&totals).unwrap_or_default(),
        )
    }
}
