//! The read planner: merges a device's registers into the fewest Modbus requests.
//!
//! Registers of one function code are sorted by address and packed greedily into a request
//! while the request stays within the profile's register limit, the hole between two registers
//! is at most `max_gap` (reading a few unused registers is cheaper than another round trip), and
//! the covered range touches no forbidden range (some meters answer an exception for the whole
//! request if one register in it is unmapped).

use crate::profile::{FunctionCode, Profile};

/// Limits a plan is made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Registers (or bits) per request; Modbus allows 125 registers or 2000 bits.
    pub max_registers: u16,
    /// Unused registers a request may read across to join two registers.
    pub max_gap: u16,
}

impl Default for PlanLimits {
    fn default() -> Self {
        Self {
            max_registers: 125,
            max_gap: 16,
        }
    }
}

/// One Modbus read and the profile registers (by index) it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub function: FunctionCode,
    pub start: u16,
    pub count: u16,
    pub registers: Vec<usize>,
}

/// The requests that read every register of a profile once per poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    pub requests: Vec<ReadRequest>,
}

/// Plans the reads for the registers `selected` (indices into `profile.registers`).
pub fn plan_reads(profile: &Profile, selected: &[usize], limits: PlanLimits) -> ReadPlan {
    let max = limits.max_registers.min(profile.max_registers).max(1);
    let forbidden: Vec<(u32, u32)> = profile
        .forbidden
        .iter()
        .map(|[a, b]| (u32::from(*a), u32::from(*b) + 1))
        .collect();
    let touches_forbidden =
        |start: u32, end: u32| forbidden.iter().any(|&(a, b)| start < b && a < end);

    let mut order: Vec<usize> = selected
        .iter()
        .copied()
        .filter(|&i| i < profile.registers.len())
        .collect();
    order.sort_by_key(|&i| {
        let r = &profile.registers[i];
        (r.function, r.address, r.data_type.words())
    });
    order.dedup();

    let mut requests: Vec<ReadRequest> = Vec::new();
    for i in order {
        let r = &profile.registers[i];
        let span = r.span();
        if let Some(cur) = requests.last_mut() {
            let cur_start = u32::from(cur.start);
            let cur_end = cur_start + u32::from(cur.count);
            let new_end = cur_end.max(span.end);
            let gap = span.start.saturating_sub(cur_end);
            if cur.function == r.function
                && gap <= u32::from(limits.max_gap)
                && new_end - cur_start <= u32::from(max)
                && !touches_forbidden(cur_end.min(span.start), new_end)
            {
                cur.count = (new_end - cur_start) as u16;
                cur.registers.push(i);
                continue;
            }
        }
        requests.push(ReadRequest {
            function: r.function,
            start: r.address,
            count: r.data_type.words(),
            registers: vec![i],
        });
    }
    ReadPlan { requests }
}

#[cfg(test)]
mod tests;
