#!/usr/bin/env python3
"""Meters on a simulated RS-485 line for jieneng's RTU tests: a pymodbus RTU server on a
pseudo-terminal, relayed to a second pseudo-terminal whose path the gateway opens — what
`socat pty pty` would do, without needing socat.

Usage: serial_meter.py SPEC_JSON   with SPEC_JSON {"units": [3, 4], "baud": 19200}

The meters are fault_meter.py's SDM630s (energy 100·u kWh, +0.125 per read; power 1000 W).
Prints {"port": "/dev/pts/N"} when the line is up, then serves until killed.
"""

import asyncio
import json
import os
import sys
import tty

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fault_meter import Converter, Unit  # noqa: E402
from pymodbus.datastore import ModbusServerContext  # noqa: E402
from pymodbus.server import ModbusSerialServer  # noqa: E402


def relay(loop, src, dst):
    """Copies whatever arrives on master `src` to master `dst`."""

    def move():
        try:
            data = os.read(src, 4096)
        except OSError:
            return
        if data:
            os.write(dst, data)

    loop.add_reader(src, move)


async def main():
    spec = json.loads(sys.argv[1])
    baud = int(spec.get("baud", 19200))
    meter_master, meter_slave = os.openpty()
    line_master, line_slave = os.openpty()
    # Raw lines: no echo, no newline translation, every byte as it is. No parity: Linux
    # pseudo-terminals refuse PARENB through the termios call pyserial makes (EINVAL).
    for fd in (meter_slave, line_slave):
        tty.setraw(fd)
    meter_path = os.ttyname(meter_slave)
    line_path = os.ttyname(line_slave)

    loop = asyncio.get_running_loop()
    relay(loop, meter_master, line_master)
    relay(loop, line_master, meter_master)

    converter = Converter({})
    units = {u: Unit(converter, u) for u in spec["units"]}
    context = ModbusServerContext(slaves=units, single=False)
    server = ModbusSerialServer(
        context, port=meter_path, baudrate=baud, bytesize=8, parity="N", stopbits=1
    )
    converter.server = server
    await server.serve_forever(background=True)
    # The slave ends stay open here too, so neither master sees a hang-up while a side reopens.
    print(json.dumps({"port": line_path}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
