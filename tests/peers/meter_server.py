#!/usr/bin/env python3
"""Simulated meters for jieneng's whole-path tests, served by pymodbus over real Modbus TCP.

Usage: meter_server.py SPEC_JSON

SPEC_JSON is a list of meters: {"name", "profile", "start", "step", "steps", "interval"}.
Each meter gets its own TCP server on 127.0.0.1 with an OS-chosen port. The script prints one
JSON line {"ports": {name: port}} when all listen. A meter holds its starting energy until the
first read of its energy register, then adds `step` kWh every `interval` seconds, `steps`
times, and prints {"done": name, "advanced": steps*step} — so the test knows exactly how much
energy the meter counted while the gateway was watching. Values are dyadic fractions, exact in
float32, so the expected sums are exact.
"""

import asyncio
import json
import struct
import sys

from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.server import ModbusTcpServer

# Register maps of the profiles the test uses (0-based PDU addresses; shared/DOMAIN.md §5).
PROFILES = {
    # Eastron SDM630: input registers, float32 high word first, W and kWh.
    "eastron/sdm630": {"table": "ir", "energy": 0x0048, "power": 0x0034, "power_per_kw": 1000.0},
    # Chint DTSU666: holding registers, float32, power in 0.1 W, energy in kWh.
    "chint/dtsu666": {"table": "hr", "energy": 0x101E, "power": 0x2012, "power_per_kw": 10000.0},
}


def f32_words(value):
    raw = struct.pack(">f", value)
    return [int.from_bytes(raw[0:2], "big"), int.from_bytes(raw[2:4], "big")]


class WatchedBlock(ModbusSequentialDataBlock):
    """A register block that tells when the energy register is first read."""

    def __init__(self, size, energy_addr, first_read):
        # pymodbus 3.9's device context adds 1 to every PDU address before it reaches a block.
        super().__init__(1, [0] * size)
        self.energy_addr = energy_addr + 1
        self.first_read = first_read

    def getValues(self, address, count=1):
        if address <= self.energy_addr < address + count:
            self.first_read.set()
        return super().getValues(address, count)


class Meter:
    def __init__(self, spec):
        self.spec = spec
        self.map = PROFILES[spec["profile"]]
        self.energy = float(spec["start"])
        self.first_read = asyncio.Event()
        size = max(self.map["energy"], self.map["power"]) + 64
        self.block = WatchedBlock(size, self.map["energy"], self.first_read)
        empty = ModbusSequentialDataBlock(1, [0] * 8)
        tables = {"ir": empty, "hr": empty, "di": empty, "co": empty}
        tables[self.map["table"]] = self.block
        self.context = ModbusServerContext(slaves=ModbusSlaveContext(**tables), single=True)
        self.write(power_kw=0.0)

    def write(self, power_kw):
        self.block.setValues(self.map["energy"] + 1, f32_words(self.energy))
        self.block.setValues(self.map["power"] + 1, f32_words(power_kw * self.map["power_per_kw"]))

    async def advance(self):
        await self.first_read.wait()
        step, interval = float(self.spec["step"]), float(self.spec["interval"])
        for _ in range(int(self.spec["steps"])):
            await asyncio.sleep(interval)
            self.energy += step
            self.write(power_kw=step * 3600.0 / interval)
        print(json.dumps({"done": self.spec["name"], "advanced": step * int(self.spec["steps"])}), flush=True)


async def main():
    specs = json.loads(sys.argv[1])
    meters, ports = [], {}
    for spec in specs:
        meter = Meter(spec)
        server = ModbusTcpServer(meter.context, address=("127.0.0.1", 0))
        await server.serve_forever(background=True)
        ports[spec["name"]] = server.transport.sockets[0].getsockname()[1]
        meters.append((meter, server))
    print(json.dumps({"ports": ports}), flush=True)
    await asyncio.gather(*(m.advance() for m, _ in meters))
    # Keep serving the final values until the test stops us.
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
