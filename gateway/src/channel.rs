//! What a reading is stored under: the meter id of its channel (a phase of a meter, a
//! channel of a firmware device) and the key of its counter in the spool state. The config
//! makes them once per device; the normalizer stamps them on readings.

use device_profiles::Phase;
use reading_model::{AccountCode, MeterId, Quantity, Reading};

/// The meter id a register's readings are stored under: per-phase channels get a suffix so
/// (account, meter, quantity, ts) stays unique.
pub fn channel_meter(meter: &MeterId, phase: Phase) -> MeterId {
    let suffix = match phase {
        Phase::Total => return meter.clone(),
        Phase::L1 => "L1",
        Phase::L2 => "L2",
        Phase::L3 => "L3",
        Phase::N => "N",
    };
    MeterId::parse(&format!("{meter}:{suffix}")).unwrap_or_else(|_| meter.clone())
}

/// The key of a reading's counter in the spool state: `account/meter/quantity`.
pub fn counter_key(r: &Reading) -> String {
    counter_key_of(&r.account, &r.meter, r.quantity)
}

pub fn counter_key_of(account: &AccountCode, meter: &MeterId, quantity: Quantity) -> String {
    let mut key = String::new();
    push_counter_key(&mut key, account, meter, quantity);
    key
}

/// Appends `account/meter/quantity` to `key`, without the formatting machinery: the
/// normalizer builds one per cumulative reading it spools.
pub(crate) fn push_counter_key(
    key: &mut String,
    account: &AccountCode,
    meter: &MeterId,
    quantity: Quantity,
) {
    let name = quantity.name();
    key.reserve(account.as_str().len() + meter.as_str().len() + name.len() + 2);
    key.push_str(account.as_str());
    key.push('/');
    key.push_str(meter.as_str());
    key.push('/');
    key.push_str(name);
}

/// The meter id a firmware channel's readings are stored under: the device's channel `"0"` is
/// the meter itself, others get a suffix (`plug:1`, `pro3em:em-0-a`), as phases do.
pub fn firmware_channel_meter(meter: &MeterId, channel: &str) -> MeterId {
    if channel == "0" {
        return meter.clone();
    }
    let suffix: String = channel
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    MeterId::parse(&format!("{meter}:{suffix}")).unwrap_or_else(|_| meter.clone())
}
