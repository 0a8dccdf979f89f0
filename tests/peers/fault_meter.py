#!/usr/bin/env python3
"""A Modbus TCP converter with faults on command, for jieneng's Modbus fault tests (pymodbus).

Usage: fault_meter.py SPEC_JSON

SPEC_JSON: {"units": [1, 2], "exceptions": [[unit, start, count], ...],
            "late": {"unit": seconds, ...}, "dead": [unit, ...], "zero_once": {"unit": n}}
One TCP server on 127.0.0.1 (OS-chosen port) with an Eastron SDM630 register map (input
registers, float32 high word first) behind each unit id, as behind an RS-485 converter.
Energy of unit u starts at 100·u kWh and grows by 0.125 kWh at every read of its energy
register (exact in float32, so sums are exact); power is 1000 W. A read overlapping an
`exceptions` range (0-based PDU addresses) answers IllegalDataAddress. A `late` unit answers
each request that many seconds after it came, under the request's own transaction id, while
the other units are served meanwhile; a `dead` unit never answers (a meter that is off or
unplugged behind a converter that forwards the request and stays quiet). A `zero_once` unit
answers its n-th read of the energy register (1-based) with 0.0 kWh, as a meter rebooting or a
bad read does, while its true energy goes on counting.

Prints {"port": p} when listening. Then reads commands, one JSON line each, on stdin:
  {"cmd": "silent"}  stop answering (requests hang, connections stay open); prints {"silent": true}
  {"cmd": "answer"}  answer again (requests that hung are answered late); prints {"silent": false}
  {"cmd": "drop"}    close every open connection; prints {"dropped": n}
  {"cmd": "stats"}   prints {"open": n, "connects": connections seen, "max_open": most open
                     while a request was served, "reads": {unit: energy reads}}
"""

import asyncio
import json
import struct
import sys

from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.exceptions import NoSuchSlaveException
from pymodbus.pdu.pdu import ExceptionResponse
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler


async def handle_request(self):
    """pymodbus 3.9.2's handler reads `self.last_pdu` again after awaiting the datastore, so an
    answer that took a while went out under the transaction id of whatever request had come in
    meanwhile (or not at all). A converter answers each request under its own id: take the
    request once, up front."""
    pdu, addr = self.last_pdu, self.last_addr
    if not pdu:
        return
    try:
        response = await pdu.update_datastore(self.server.context[pdu.dev_id])
    except NoSuchSlaveException:
        response = ExceptionResponse(0x00, ExceptionResponse.GATEWAY_NO_RESPONSE)
    except Exception:  # pylint: disable=broad-except
        response = ExceptionResponse(0x00, ExceptionResponse.SLAVE_FAILURE)
    response.transaction_id = pdu.transaction_id
    response.dev_id = pdu.dev_id
    self.server_send(response, addr)


ServerRequestHandler.handle_request = handle_request

ENERGY = 0x0048
POWER = 0x0034
ILLEGAL_DATA_ADDRESS = 2


def f32_words(value):
    raw = struct.pack(">f", value)
    return [int.from_bytes(raw[0:2], "big"), int.from_bytes(raw[2:4], "big")]


def say(obj):
    print(json.dumps(obj), flush=True)


class Converter:
    def __init__(self, spec):
        self.answering = asyncio.Event()
        self.answering.set()
        self.exceptions = [tuple(e) for e in spec.get("exceptions", [])]
        self.late = {int(u): float(d) for u, d in spec.get("late", {}).items()}
        self.dead = set(spec.get("dead", []))
        self.zero_once = {int(u): int(n) for u, n in spec.get("zero_once", {}).items()}
        self.never = asyncio.Event()
        self.reads = {}
        self.server = None
        # Connection ids ever seen, and the most open at once when a request was served.
        self.seen = set()
        self.max_open = 0

    def look(self):
        conns = self.server.active_connections
        self.seen |= set(conns.keys())
        self.max_open = max(self.max_open, len(conns))
        return len(conns)


class Unit(ModbusSlaveContext):
    """One meter behind the converter."""

    def __init__(self, converter, unit):
        # pymodbus 3.9's device context adds 1 to every PDU address before it reaches a block.
        self.block = ModbusSequentialDataBlock(1, [0] * 256)
        empty = ModbusSequentialDataBlock(1, [0] * 8)
        super().__init__(ir=self.block, hr=empty, di=empty, co=empty)
        self.converter = converter
        self.unit = unit
        self.energy = 100.0 * unit
        self.block.setValues(ENERGY + 1, f32_words(self.energy))
        self.block.setValues(POWER + 1, f32_words(1000.0))

    async def async_getValues(self, fc_as_hex, address, count=1):
        self.converter.look()
        await self.converter.answering.wait()
        if self.unit in self.converter.dead:
            await self.converter.never.wait()
        if self.unit in self.converter.late:
            await asyncio.sleep(self.converter.late[self.unit])
        for unit, start, n in self.converter.exceptions:
            if unit == self.unit and address < start + n and start < address + count:
                return ILLEGAL_DATA_ADDRESS
        if address <= ENERGY < address + count:
            reads = self.converter.reads.get(self.unit, 0) + 1
            self.converter.reads[self.unit] = reads
            values = self.getValues(fc_as_hex, address, count)
            if self.converter.zero_once.get(self.unit) == reads:
                at = ENERGY - address
                values = values[:at] + f32_words(0.0) + values[at + 2 :]
            self.energy += 0.125
            self.block.setValues(ENERGY + 1, f32_words(self.energy))
            return values
        return self.getValues(fc_as_hex, address, count)


async def commands(converter, server):
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        cmd = json.loads(line)["cmd"]
        if cmd == "silent":
            converter.answering.clear()
            say({"silent": True})
        elif cmd == "answer":
            converter.answering.set()
            say({"silent": False})
        elif cmd == "drop":
            conns = list(server.active_connections.values())
            for c in conns:
                c.close()
            say({"dropped": len(conns)})
        elif cmd == "stats":
            say(
                {
                    "open": converter.look(),
                    "connects": len(converter.seen),
                    "max_open": converter.max_open,
                    "reads": converter.reads,
                }
            )


async def main():
    spec = json.loads(sys.argv[1])
    converter = Converter(spec)
    units = {u: Unit(converter, u) for u in spec["units"]}
    context = ModbusServerContext(slaves=units, single=False)
    server = ModbusTcpServer(context, address=("127.0.0.1", 0))
    converter.server = server
    await server.serve_forever(background=True)
    say({"port": server.transport.sockets[0].getsockname()[1]})
    await commands(converter, server)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
